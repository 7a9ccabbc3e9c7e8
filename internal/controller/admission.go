package controller

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Admission, the data plane: which ready instance serves a request, the
// queue of requests waiting for a slot, and the lease that gives it back.
//
// Each function has its own data-plane state (admission) behind its own
// lock: a request for one function never waits for another function's
// requests nor for the control plane (c.mu), and nothing under that lock
// does I/O, logs, records metrics or sorts. The control plane stays the one
// owner of instances and states: after each change it publishes what the
// data plane needs (resync) — the ready instances of the serving version and
// whether the function can serve at all. Waiting requests queue in arrival
// order; a freed slot goes straight to the oldest waiter (exactly one wake
// per slot), a new ready instance to as many waiters as it has slots.
//
// Lock order: c.mu, then f.gauge, then f.dp.mu. Never c.mu under f.dp.mu.

// admission is one function's data-plane state. Its mu also guards every
// instance's inflight, serving, suspect and draining fields.
type admission struct {
	mu      sync.Mutex
	serving []*instance // ready instances of the serving version, not suspect
	ready   int         // ready instances of any version, for the gauge
	conc    int         // concurrency slots per instance
	queue   []*waiter   // requests waiting, oldest first
	counts  Counts
	latency latencies
	// lastRequest is the last request's arrival (or the deploy), for the
	// autoscaler's idle timeout.
	lastRequest time.Time
	gate        gate
}

// gate is what the control plane says about whether the function serves,
// as of its last change.
type gate struct {
	removed   bool
	closed    bool
	booting   int       // instances booting (any version)
	state     string    // the function's state
	hasSpec   bool      // a version was ever loaded
	restartAt time.Time // a crash's backoff runs until then
	waitCrash bool      // requests wait through this backoff (see waitCrashes)
	lastErr   string
	// a start was refused for memory: requests that find no instance are
	// refused until memWaitUntil, or until a refused deploy is retried.
	memWaitUntil time.Time
	memDeploy    bool
}

// waitCrashes is how many crashes in a row of a VM that was serving
// requests still wait through: after a VM dies now and then (a killed QEMU,
// the OOM killer) the replacement boots within a few seconds and the
// requests arriving meanwhile are served by it; a function that keeps
// crashing, or whose boot failed, is refused at once (503 with Retry-After)
// until its backoff ends.
const waitCrashes = 2

// waiter is one request waiting for a slot. Exactly one of in and err is
// set, under the admission lock, before ready gets its one value.
type waiter struct {
	ready chan struct{} // buffered (1)
	in    *instance
	err   error
}

// pick returns the serving instance with the fewest requests in flight and
// a free slot, or nil; a.mu is held.
func (a *admission) pick() *instance {
	var best *instance
	for _, in := range a.serving {
		if in.inflight >= a.conc {
			continue
		}
		if best == nil || in.inflight < best.inflight {
			best = in
		}
	}
	return best
}

// unavailable says why the function cannot serve now, or nil when it can
// (perhaps after a boot); a.mu is held.
func (a *admission) unavailable(name string, now time.Time) error {
	g := &a.gate
	switch {
	case g.removed:
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	case g.closed:
		return fmt.Errorf("%w: %s: the appliance is shutting down", ErrUnavailable, name)
	case g.booting > 0:
		return nil
	case len(a.serving) == 0 && (g.memDeploy || now.Before(g.memWaitUntil)):
		return fmt.Errorf("%w: %s: %s", ErrNoMemory, name, g.lastErr)
	case g.state == StateInvalid:
	case g.state == StateFailed && (!g.hasSpec || (now.Before(g.restartAt) && !g.waitCrash)):
		// Nothing ever served, or a crash's backoff runs: after it, a
		// request boots the version again.
	default:
		return nil
	}
	return fmt.Errorf("%w: %s: %s", ErrUnavailable, name, g.lastErr)
}

// grant gives in's slot to w; a.mu is held.
func (w *waiter) grant(in *instance) {
	w.in = in
	w.ready <- struct{}{}
}

// dispatch hands free slots to waiters, oldest first, and fails every
// waiter when the function cannot serve any more; a.mu is held.
func (a *admission) dispatch(name string, now time.Time) {
	for len(a.queue) > 0 {
		in := a.pick()
		if in == nil {
			break
		}
		in.inflight++
		w := a.queue[0]
		a.queue[0] = nil
		a.queue = a.queue[1:]
		w.grant(in)
	}
	if len(a.queue) == 0 {
		return
	}
	if err := a.unavailable(name, now); err != nil {
		for _, w := range a.queue {
			w.err = err
			w.ready <- struct{}{}
		}
		a.queue = a.queue[:0]
	}
}

// freeSlot gives back one slot of in: to the oldest waiter when in still
// serves, else to nobody (and in's drain may end); a.mu is held.
func (a *admission) freeSlot(in *instance) {
	if in.serving && len(a.queue) > 0 {
		w := a.queue[0]
		a.queue[0] = nil
		a.queue = a.queue[1:]
		w.grant(in) // the slot changes hands: inflight unchanged
		return
	}
	in.inflight--
	a.drainCheck(in)
}

// withdraw takes in out of the serving set at once; a.mu is held.
func (a *admission) withdraw(in *instance) {
	if i := slices.Index(a.serving, in); i >= 0 {
		a.serving = slices.Delete(a.serving, i, i+1)
	}
	in.serving = false
}

// drainCheck closes in.drained once a draining instance has nothing in
// flight; a.mu is held.
func (a *admission) drainCheck(in *instance) {
	if in.draining && in.inflight == 0 && !in.drainedClosed {
		in.drainedClosed = true
		close(in.drained)
	}
}

// resync publishes f's instances and state to its data plane and serves
// the waiters that can be served now; c.mu is held.
func (c *Controller) resync(f *fn) {
	a := &f.dp
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, in := range a.serving {
		in.serving = false
	}
	a.serving = a.serving[:0]
	a.conc = 0
	a.ready = f.count(instReady, "")
	if f.spec != nil && !f.removed && !c.closed {
		a.conc = f.spec.Scale.Concurrency
		for _, in := range f.instances {
			if in.state == instReady && in.version == f.spec.Digest && !in.suspect {
				in.serving = true
				a.serving = append(a.serving, in)
			}
		}
	}
	a.gate = gate{
		removed: f.removed, closed: c.closed, booting: f.count(instBooting, ""),
		state: f.state, hasSpec: f.spec != nil, restartAt: f.restartAt, waitCrash: f.waitCrash, lastErr: f.lastErr,
		memWaitUntil: f.memWaitUntil, memDeploy: f.memDeploy,
	}
	a.dispatch(f.name, time.Now())
}

// lookup finds a function without the controller's lock.
func (c *Controller) lookup(name string) *fn {
	if v, ok := c.dir.Load(name); ok {
		return v.(*fn)
	}
	return nil
}

// Acquire waits, bounded by ctx, for a ready instance of name with a free
// concurrency slot, and reserves the slot. A request that has to wait
// counts against the queue bound, in arrival order, and makes the
// autoscaler look at the function at once; a function at zero replicas
// boots one for it (the activator). Errors wrap ErrNotFound, ErrNotReady,
// ErrUnavailable or ErrOverloaded.
func (c *Controller) Acquire(ctx context.Context, name string) (Instance, error) {
	arrived := time.Now()
	for {
		f := c.lookup(name)
		if f == nil {
			return Instance{}, fmt.Errorf("%w: %s", ErrNotFound, name)
		}
		inst, err, retry := c.acquire(ctx, f, arrived)
		if !retry {
			return inst, err
		}
		// The function was removed while this request waited: its folder
		// may be back already, as a new function of the same name.
	}
}

// acquire is Acquire on one fn; retry says it was removed meanwhile.
func (c *Controller) acquire(ctx context.Context, f *fn, arrived time.Time) (inst Instance, err error, retry bool) {
	a := &f.dp
	a.mu.Lock()
	a.lastRequest = arrived
	if in := a.pick(); in != nil {
		in.inflight++
		a.mu.Unlock()
		return c.lease(f, in, arrived), nil, false
	}
	if err := a.unavailable(f.name, arrived); err != nil {
		a.mu.Unlock()
		return Instance{}, err, false
	}
	if len(a.queue) >= c.opts.QueueSize {
		a.counts.Rejected++
		n := len(a.queue)
		a.mu.Unlock()
		return Instance{}, fmt.Errorf("%w: %s: %d requests already waiting", ErrOverloaded, f.name, n), false
	}
	w := &waiter{ready: make(chan struct{}, 1)}
	a.queue = append(a.queue, w)
	a.mu.Unlock()
	c.publishQueue(f)
	c.kick(f) // the autoscaler looks at the function at once
	defer c.publishQueue(f)

	select {
	case <-w.ready:
	case <-ctx.Done():
		a.mu.Lock()
		if i := slices.Index(a.queue, w); i >= 0 {
			a.queue = slices.Delete(a.queue, i, i+1)
			a.mu.Unlock()
			return Instance{}, fmt.Errorf("%w: %s: no instance ready in time (%v)", ErrNotReady, f.name, context.Cause(ctx)), false
		}
		a.mu.Unlock()
		<-w.ready // resolved meanwhile: take what it got
	}
	if w.err != nil {
		if a.gateRemoved() {
			return Instance{}, w.err, true
		}
		return Instance{}, w.err, false
	}
	cold := w.in.started.After(arrived)
	if cold {
		a.mu.Lock()
		a.counts.ColdStarts++
		a.mu.Unlock()
		c.rec.ColdStart(f.name)
	}
	return c.lease(f, w.in, arrived), nil, false
}

func (a *admission) gateRemoved() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.gate.removed
}

// lease hands out a reserved slot of in.
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
				a := &f.dp
				a.mu.Lock()
				a.counts.Total++
				if status == 0 || status >= 500 {
					a.counts.Errors++
				}
				a.latency.add(took)
				a.freeSlot(in)
				a.mu.Unlock()
			})
		},
		Suspect: func() { c.suspect(f, in) },
	}
}

// suspect takes an instance the gateway could not reach (connection
// refused or reset) out of service at once and has its health watch check
// it now: back in service if it answers, replaced if not.
func (c *Controller) suspect(f *fn, in *instance) {
	a := &f.dp
	a.mu.Lock()
	if in.suspect {
		a.mu.Unlock()
		return
	}
	in.suspect = true
	a.withdraw(in)
	a.mu.Unlock()
	select {
	case in.check <- struct{}{}:
	default: // a check is already asked for
	}
}

// kick asks the autoscaler to look at f now (at most one ask pending).
func (c *Controller) kick(f *fn) {
	if f.kicked.CompareAndSwap(false, true) {
		select {
		case c.kicks <- f:
		default:
			f.kicked.Store(false) // the next tick looks anyway
		}
	}
}

// publishQueue reports f's gauges after its queue changed.
func (c *Controller) publishQueue(f *fn) {
	f.gauge.Lock()
	defer f.gauge.Unlock()
	f.dp.mu.Lock()
	removed, ready, queued := f.dp.gate.removed, f.dp.ready, len(f.dp.queue)
	f.dp.mu.Unlock()
	if !removed {
		c.rec.FunctionState(f.name, ready, queued)
	}
}

// load is f's requests in flight on the serving version's ready instances
// and its waiting requests; c.mu is held.
func (f *fn) load() (inflight, queued int, lastRequest time.Time) {
	f.dp.mu.Lock()
	defer f.dp.mu.Unlock()
	for _, in := range f.instances {
		if f.spec != nil && in.version == f.spec.Digest && in.state == instReady {
			inflight += in.inflight
		}
	}
	return inflight, len(f.dp.queue), f.dp.lastRequest
}
