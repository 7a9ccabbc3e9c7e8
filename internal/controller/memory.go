package controller

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/faasvm/appliance/internal/function"
)

// The host memory budget (Options.MemoryBudget): the guests' committed
// memory never passes it. Every VM that exists or is starting — serving,
// booting or waiting for a boot slot, restoring, draining, a snapshot
// builder — holds a reservation of its guest RAM plus VMOverhead from
// before the engine starts it until it is stopped. Committed memory is the
// worst case: a clone of a snapshot shares the snapshot's clean pages with
// its siblings (its PSS is a fraction of its RAM) but may dirty all of
// them, and the budget is there so that the kernel's OOM killer never has
// to choose.
//
// A start that does not fit first scales idle functions to zero, least
// recently used first (idle: nothing in flight or waiting; a function
// keeps its minReplicas; never the function asking), and waits for their
// VMs to stop. If there is still no room the start is refused: its
// function's status says "waiting for memory", requests that find no
// instance get 503 with Retry-After, and the start is tried again once a
// VM's memory is released (or the next request after the retry delay).

// VMOverhead is what one VM costs the host besides its guest RAM: QEMU's
// own heap and, under TCG, its translation cache. Measured here (QEMU 7.2,
// TCG, 256 MiB guests): shrinking the translation cache from the default to
// 32 MiB took a booted VM's PSS from 256 to 185 MiB, so TCG's share is
// ~70 MiB for a booted guest; QEMU's heap and device state add a few MiB.
// Under KVM the overhead is well below this.
const VMOverhead = 64 << 20

// ErrNoMemory: a VM would take the guests' committed memory past the
// budget (503 with Retry-After).
var ErrNoMemory = errors.New("not enough memory")

// errMemoryTooBig: one VM of the function needs more than the whole budget;
// no eviction or wait helps.
var errMemoryTooBig = errors.New("larger than the whole memory budget")

// MemoryState is the budget as the API shows it.
type MemoryState struct {
	// BudgetBytes is the budget (0: none, nothing is refused).
	BudgetBytes int64 `json:"budgetBytes"`
	// CommittedBytes is what the VMs that exist or are starting hold.
	CommittedBytes int64 `json:"committedBytes"`
	// FreeBytes is BudgetBytes minus CommittedBytes (0 without a budget).
	FreeBytes int64 `json:"freeBytes"`
	// VMs is how many VMs hold a reservation.
	VMs int `json:"vms"`
	// PerVMOverheadBytes is what each VM is counted for besides its RAM.
	PerVMOverheadBytes int64 `json:"perVmOverheadBytes"`
	// Evictions counts functions scaled to zero to make room; Refusals
	// starts refused for want of memory.
	Evictions uint64 `json:"evictions"`
	Refusals  uint64 `json:"refusals"`
	// Waiting names the functions whose last start was refused and not
	// yet retried.
	Waiting []string `json:"waiting"`
}

// memoryRecorder is the optional part of Recorder for the budget.
type memoryRecorder interface {
	// MemoryEvicted counts a function scaled to zero to make room.
	MemoryEvicted(function string)
	// MemoryRefused counts a VM start refused for want of memory.
	MemoryRefused(function string)
}

// memoryBudget is the reservation ledger; its own lock (never held while
// taking c.mu).
type memoryBudget struct {
	mu        sync.Mutex
	limit     int64
	committed int64
	vms       int
	evictions uint64
	refusals  uint64
	// freed is closed (and replaced) whenever a reservation is released.
	freed chan struct{}
}

func newMemoryBudget(limit int64) *memoryBudget {
	if limit <= 0 {
		return nil
	}
	return &memoryBudget{limit: limit, freed: make(chan struct{})}
}

// take reserves need bytes when they fit; else it returns the channel that
// closes at the next release and how many bytes are missing.
func (b *memoryBudget) take(need int64) (ok bool, freed <-chan struct{}, short int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.committed+need <= b.limit {
		b.committed += need
		b.vms++
		return true, nil, 0
	}
	return false, b.freed, b.committed + need - b.limit
}

// give releases need bytes and wakes whoever waits for memory.
func (b *memoryBudget) give(need int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.committed -= need
	b.vms--
	close(b.freed)
	b.freed = make(chan struct{})
}

// released returns the channel that closes at the next release.
func (b *memoryBudget) released() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.freed
}

func (b *memoryBudget) count(evicted, refused bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if evicted {
		b.evictions++
	}
	if refused {
		b.refusals++
	}
}

// vmBytes is what one VM of spec is counted for.
func vmBytes(spec *function.Spec) int64 {
	return int64(spec.VM.Spec.Memory.Bytes()) + VMOverhead
}

// releaseMemory gives back in's reservation (if any; once).
func (c *Controller) releaseMemory(in *instance) {
	c.mu.Lock()
	release := in.memRelease
	in.memRelease = nil
	c.mu.Unlock()
	if release != nil {
		release()
	}
}

// MemoryState reports the budget's state.
func (c *Controller) MemoryState() MemoryState {
	s := MemoryState{PerVMOverheadBytes: VMOverhead, Waiting: []string{}}
	if b := c.mem; b != nil {
		b.mu.Lock()
		s.BudgetBytes, s.CommittedBytes, s.VMs = b.limit, b.committed, b.vms
		s.FreeBytes = max(b.limit-b.committed, 0)
		s.Evictions, s.Refusals = b.evictions, b.refusals
		b.mu.Unlock()
	}
	c.mu.Lock()
	now := time.Now()
	for _, f := range c.fns {
		if f.memDeploy || now.Before(f.memWaitUntil) {
			s.Waiting = append(s.Waiting, f.name)
		}
	}
	c.mu.Unlock()
	slices.Sort(s.Waiting)
	return s
}

// reserveMemory reserves the memory of in's VM until the returned release
// is called (once; later calls do nothing). When it does not fit and evict
// is set, idle functions are scaled to zero first and their VMs waited for
// (bounded by ctx and StopTimeout); the error wraps ErrNoMemory.
func (c *Controller) reserveMemory(ctx context.Context, f *fn, need int64, evict bool) (release func(), err error) {
	b := c.mem
	if b == nil {
		return func() {}, nil
	}
	if need > b.limit {
		b.count(false, true)
		c.memoryRefused(f)
		return nil, fmt.Errorf("%w: one VM of %s needs %d MiB (%d MiB memory + %d MiB overhead), %w of %d MiB (FAAS_MEMORY_BUDGET): lower its memory or raise the budget",
			ErrNoMemory, f.name, need>>20, (need-VMOverhead)>>20, VMOverhead>>20, errMemoryTooBig, b.limit>>20)
	}
	var deadline <-chan time.Time
	evicted := false
	for {
		ok, freed, short := b.take(need)
		if ok {
			var once sync.Once
			return func() { once.Do(func() { b.give(need) }) }, nil
		}
		if evict && !evicted {
			evicted = true
			if n := c.evictFor(f, short); n > 0 {
				t := time.NewTimer(c.opts.StopTimeout + c.opts.DrainTimeout)
				defer t.Stop()
				deadline = t.C
			}
		}
		if deadline == nil {
			return nil, c.refuseMemory(f, need, evict)
		}
		select {
		case <-freed:
		case <-deadline:
			return nil, c.refuseMemory(f, need, evict)
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for memory for %s: %w", f.name, ctx.Err())
		}
	}
}

// refuseMemory counts a refused start and says why.
func (c *Controller) refuseMemory(f *fn, need int64, evicted bool) error {
	b := c.mem
	b.count(false, true)
	c.memoryRefused(f)
	b.mu.Lock()
	committed, limit, vms := b.committed, b.limit, b.vms
	b.mu.Unlock()
	why := "no idle function could be scaled to zero to make room"
	if !evicted {
		why = "a snapshot builder does not scale other functions to zero"
	}
	c.log.Warn("not starting a vm: the memory budget is used up", "function", f.name, "needs_mib", need>>20,
		"committed_mib", committed>>20, "budget_mib", limit>>20, "vms", vms, "why", why)
	return fmt.Errorf("%w: waiting for memory: a VM of %s needs %d MiB, %d of %d MiB are committed to %d VMs (FAAS_MEMORY_BUDGET) and %s; retried when a VM stops",
		ErrNoMemory, f.name, need>>20, committed>>20, limit>>20, vms, why)
}

func (c *Controller) memoryRefused(f *fn) {
	if r, ok := c.rec.(memoryRecorder); ok {
		r.MemoryRefused(f.name)
	}
}

// evictFor scales idle functions other than asker to zero (down to their
// minReplicas), least recently used first, until the VMs drained hold at
// least short bytes or no idle one is left; it returns the bytes their VMs
// will release.
func (c *Controller) evictFor(asker *fn, short int64) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	type cand struct {
		f    *fn
		last time.Time
		ins  []*instance
	}
	var cands []cand
	for _, g := range c.fns {
		if g == asker || g.removed || g.spec == nil {
			continue
		}
		inflight, queued, last := g.load()
		if inflight+queued > 0 {
			continue
		}
		var ready []*instance
		g.dp.mu.Lock()
		for _, in := range g.instances {
			if in.state == instReady && in.inflight == 0 {
				ready = append(ready, in)
			}
		}
		g.dp.mu.Unlock()
		// Instances of the serving version above minReplicas; an old
		// version's ready instances are being replaced anyway.
		keep := g.spec.Scale.MinReplicas
		var evictable []*instance
		for _, in := range ready {
			if in.version == g.spec.Digest && keep > 0 {
				keep--
				continue
			}
			evictable = append(evictable, in)
		}
		if len(evictable) > 0 {
			cands = append(cands, cand{g, last, evictable})
		}
	}
	slices.SortFunc(cands, func(a, b cand) int { return cmp.Compare(a.last.UnixNano(), b.last.UnixNano()) })
	var freed int64
	now := time.Now()
	for _, cd := range cands {
		if freed >= short {
			break
		}
		g := cd.f
		var bytes int64
		for _, in := range cd.ins {
			bytes += vmBytes(in.spec)
			c.drain(g, in)
		}
		freed += bytes
		g.evictedAt = now
		if g.count(instReady, g.spec.Digest) == 0 && g.count(instBooting, g.spec.Digest) == 0 {
			g.state = StateIdle
		}
		c.notify(g)
		c.mem.count(true, false)
		if r, ok := c.rec.(memoryRecorder); ok {
			r.MemoryEvicted(g.name)
		}
		c.log.Info("scaling an idle function to zero to make memory room", "function", g.name, "for", asker.name,
			"vms", len(cd.ins), "frees_mib", bytes>>20, "last_request", cd.last, "step", "memory-evict")
	}
	return freed
}

// memoryWaited records that f's start was refused for memory; deploy says
// it was a deploy (retried as a whole). c.mu is held.
func (c *Controller) memoryWaited(f *fn, deploy bool) {
	f.memWaitUntil = time.Now().Add(c.opts.MemoryRetry)
	if deploy {
		f.memDeploy = true
	}
}

// memoryStarted clears f's scale-out wait after a start that fitted (a
// refused deploy waits until it is promoted or fails for another cause);
// c.mu is held.
func (c *Controller) memoryStarted(f *fn) {
	f.memWaitUntil = time.Time{}
}

// watchMemory retries the refused starts whenever a VM's memory is
// released, and every Options.MemoryRetry besides (an idle function may
// have become evictable without any VM stopping).
func (c *Controller) watchMemory() {
	defer c.wg.Done()
	t := time.NewTicker(c.opts.MemoryRetry)
	defer t.Stop()
	for {
		freed := c.mem.released()
		select {
		case <-c.life.Done():
			return
		case <-freed:
		case <-t.C:
		}
		c.retryMemoryWaiters()
	}
}

// retryMemoryWaiters lets every function whose start was refused try
// again: deploys are synced again, scale-outs kicked.
func (c *Controller) retryMemoryWaiters() {
	var deploys []string
	c.mu.Lock()
	for _, f := range c.fns {
		if f.removed {
			continue
		}
		switch {
		case f.memDeploy:
			deploys = append(deploys, f.name) // a deploy in progress: Sync queues one more
		case !f.memWaitUntil.IsZero():
			f.memWaitUntil = time.Time{}
			c.notify(f)
			c.autoscale(f, time.Now(), false, "memory released")
		}
	}
	c.mu.Unlock()
	for _, name := range deploys {
		c.Sync(name)
	}
}
