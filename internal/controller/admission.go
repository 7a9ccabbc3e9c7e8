package controller

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Admission, the data plane: which ready instance serves a request, the
// queue of requests waiting for a slot, and the lease that gives it back.

// pick returns the ready instance of the serving version with the fewest
// requests in flight and a free concurrency slot, or nil.
func (f *fn) pick() *instance {
	if f.spec == nil {
		return nil
	}
	var best *instance
	for _, in := range f.instances {
		if in.state != instReady || in.version != f.spec.Digest || in.inflight >= f.spec.Scale.Concurrency {
			continue
		}
		if best == nil || in.inflight < best.inflight {
			best = in
		}
	}
	return best
}

// Acquire waits, bounded by ctx, for a ready instance of name with a free
// concurrency slot, and reserves the slot. A request that has to wait
// counts against the queue bound and makes the autoscaler look at the
// function at once; a function at zero replicas boots one for it (the
// activator). Errors wrap ErrNotFound, ErrNotReady, ErrUnavailable or
// ErrOverloaded.
func (c *Controller) Acquire(ctx context.Context, name string) (Instance, error) {
	arrived := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	var queuedOn *fn // the fn whose queue this request waits in
	defer func() {
		if queuedOn != nil {
			queuedOn.waiters--
			c.publish(queuedOn)
		}
	}()
	for first := true; ; first = false {
		f := c.fns[name]
		if f == nil || f.removed {
			return Instance{}, fmt.Errorf("%w: %s", ErrNotFound, name)
		}
		if first {
			f.lastRequest = arrived
		}
		if in := f.pick(); in != nil {
			in.inflight++
			if queuedOn != nil && in.started.After(arrived) {
				f.counts.ColdStarts++
				c.rec.ColdStart(name)
			}
			return c.lease(f, in, arrived), nil
		}
		if err := c.unavailable(f); err != nil {
			return Instance{}, err
		}
		if queuedOn != f {
			if queuedOn != nil { // the function was removed and is back
				queuedOn.waiters--
				c.publish(queuedOn)
				queuedOn = nil
			}
			if f.waiters >= c.opts.QueueSize {
				f.counts.Rejected++
				return Instance{}, fmt.Errorf("%w: %s: %d requests already waiting", ErrOverloaded, name, f.waiters)
			}
			f.waiters++
			queuedOn = f
			c.publish(f)
		}
		// Each time it has to wait (another request may have taken the
		// slot it was woken for), the request asks for more instances.
		c.autoscale(f, time.Now(), false, "request waiting")
		ch := f.changed
		c.mu.Unlock()
		select {
		case <-ch:
			c.mu.Lock()
		case <-ctx.Done():
			c.mu.Lock()
			return Instance{}, fmt.Errorf("%w: %s: no instance ready in time (%v)", ErrNotReady, name, context.Cause(ctx))
		}
	}
}

// unavailable says why f cannot serve a request now, or nil when it can
// (perhaps after a boot); c.mu is held.
func (c *Controller) unavailable(f *fn) error {
	if c.closed {
		return fmt.Errorf("%w: %s: the appliance is shutting down", ErrUnavailable, f.name)
	}
	if f.count(instBooting, "") > 0 {
		return nil
	}
	switch {
	case f.state == StateInvalid:
	case f.state == StateFailed && (f.spec == nil || time.Now().Before(f.restartAt)):
		// Nothing ever served, or a crash's backoff runs: after it, a
		// request boots the version again.
	default:
		return nil
	}
	return fmt.Errorf("%w: %s: %s", ErrUnavailable, f.name, f.lastErr)
}

// lease hands out a reserved slot; c.mu is held.
func (c *Controller) lease(f *fn, in *instance, arrived time.Time) Instance {
	var once sync.Once
	return Instance{
		Function: f.name,
		VMID:     in.id,
		Endpoint: in.m.Endpoint(),
		Secret:   in.secret,
		Timeout:  in.spec.Timeout,
		Release: func(status int) {
			once.Do(func() {
				took := time.Since(arrived)
				c.mu.Lock()
				defer c.mu.Unlock()
				in.inflight--
				f.counts.Total++
				if status == 0 || status >= 500 {
					f.counts.Errors++
				}
				f.latency.add(took)
				if in.state == instDraining && in.inflight == 0 {
					close(in.drained)
				}
				c.notify(f)
			})
		},
	}
}
