package controller

import (
	"container/list"
	"context"
	"sync"
	"time"
)

// The concurrent boot limit: at most Options.MaxConcurrentBoots VMs boot at
// once; the others wait in line, first come first served. Under TCG every
// boot is CPU-bound emulation, so booting everything side by side makes the
// first function answer only when all of them do (and the slowest miss
// their boot timeout). A restore from a snapshot (tens of milliseconds)
// does not take a slot: only the boot path waits.

// bootLimiter is a FIFO counting semaphore; nil: no limit.
type bootLimiter struct {
	mu     sync.Mutex
	limit  int
	active int
	queue  list.List // of *bootTicket, oldest first
}

// bootTicket is one boot waiting for a slot.
type bootTicket struct {
	ready   chan struct{} // closed when the slot is granted
	granted bool          // guarded by bootLimiter.mu
}

func newBootLimiter(limit int) *bootLimiter {
	if limit <= 0 {
		return nil
	}
	return &bootLimiter{limit: limit}
}

// acquire takes a boot slot, waiting in line until one is free or ctx
// ends (then the boot leaves the line and gets ctx's error). queued is
// called, before acquire blocks, with how many boots were ahead. The
// returned release gives the slot back; call it once.
func (l *bootLimiter) acquire(ctx context.Context, queued func(ahead int)) (release func(), err error) {
	if l == nil {
		return func() {}, nil
	}
	l.mu.Lock()
	if l.active < l.limit && l.queue.Len() == 0 {
		l.active++
		l.mu.Unlock()
		return l.releaser(), nil
	}
	t := &bootTicket{ready: make(chan struct{})}
	e := l.queue.PushBack(t)
	ahead := l.queue.Len() - 1
	l.mu.Unlock()
	if queued != nil {
		queued(ahead)
	}
	select {
	case <-t.ready:
		return l.releaser(), nil
	case <-ctx.Done():
	}
	l.mu.Lock()
	if t.granted { // granted as ctx ended: pass the slot on
		l.mu.Unlock()
		l.releaser()()
		return nil, context.Cause(ctx)
	}
	l.queue.Remove(e)
	l.mu.Unlock()
	return nil, context.Cause(ctx)
}

// releaser returns the function that gives one slot back: to the oldest
// waiting boot, or to the pool.
func (l *bootLimiter) releaser() func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if e := l.queue.Front(); e != nil {
				t := l.queue.Remove(e).(*bootTicket)
				t.granted = true
				close(t.ready) // the slot moves to t: active unchanged
				return
			}
			l.active--
		})
	}
}

// BootQueue is the boot limit's state.
type BootQueue struct {
	Limit   int `json:"limit"`   // 0: no limit
	Booting int `json:"booting"` // boots holding a slot
	Queued  int `json:"queued"`  // boots waiting for one
}

func (l *bootLimiter) state() BootQueue {
	if l == nil {
		return BootQueue{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return BootQueue{Limit: l.limit, Booting: l.active, Queued: l.queue.Len()}
}

// BootQueue says how many boots hold a slot and how many wait for one.
func (c *Controller) BootQueue() BootQueue { return c.boots.state() }

// waitBootSlot waits, in line, for a slot to boot in's VM in, marking the
// instance as queued meanwhile (replicas.queuedBoots in its status). ctx
// ends the wait: the instance stopped (its function removed) or the
// controller closing.
func (c *Controller) waitBootSlot(ctx context.Context, f *fn, in *instance) (release func(), err error) {
	begin := time.Now()
	waited := false
	release, err = c.boots.acquire(ctx, func(ahead int) {
		waited = true
		c.mu.Lock()
		in.queuedBoot = true
		c.notify(f)
		c.mu.Unlock()
		c.log.Info("waiting to boot: concurrent boot limit reached", "function", f.name, "vm_id", in.id,
			"ahead", ahead, "max_concurrent_boots", c.opts.MaxConcurrentBoots)
	})
	if waited {
		c.mu.Lock()
		in.queuedBoot = false
		c.notify(f)
		c.mu.Unlock()
		if err == nil {
			c.log.Info("boot slot granted", "function", f.name, "vm_id", in.id, "waited", time.Since(begin).Round(time.Millisecond))
		}
	}
	return release, err
}
