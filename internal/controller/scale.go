package controller

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/faasvm/appliance/internal/function"
)

// The autoscaler.
//
// Every Options.ScaleInterval, and at once when a request has to wait, each
// function's load (requests in flight on its ready instances plus requests
// waiting) is turned into a desired replica count (desiredReplicas). Below
// it (counting booting instances) the controller boots the difference at
// once: bursts are met without waiting for a tick, and a function at zero
// replicas boots one for its first request (the activator). Above it, the
// controller scales in only after fewer replicas have done for a whole
// idleTimeout, and then only down to the most that were wanted during that
// window: steady load does not flap. A function that has had no request
// for idleTimeout goes to minReplicas at once, which may be zero. Scaling
// in drains the instances with the fewest requests in flight.

// loadReplicas is how many instances serve load requests (in flight plus
// queued) at the target utilisation: ceil(load / (concurrency × target)).
func loadReplicas(load int, s function.Scale) int {
	if load <= 0 {
		return 0
	}
	per := float64(s.Concurrency) * s.TargetUtilization
	// The epsilon keeps 7/(10×0.7) at 1, whatever the rounding of 0.7.
	return int(math.Ceil(float64(load)/per - 1e-9))
}

// desiredReplicas clamps loadReplicas between the floor and maxReplicas.
// The floor is minReplicas, and at least one unless the function is idle
// (no request for idleTimeout): only idleness takes a function to zero.
func desiredReplicas(load int, s function.Scale, idle bool) int {
	floor := s.MinReplicas
	if !idle {
		floor = max(floor, 1)
	}
	return min(max(loadReplicas(load, s), floor), s.MaxReplicas)
}

// autoscaleLoop runs autoscale on every function each ScaleInterval.
func (c *Controller) autoscaleLoop() {
	defer c.wg.Done()
	t := time.NewTicker(c.opts.ScaleInterval)
	defer t.Stop()
	for {
		select {
		case <-c.life.Done():
			return
		case now := <-t.C:
			c.mu.Lock()
			for _, f := range c.fns {
				c.autoscale(f, now, true, "tick")
			}
			c.mu.Unlock()
		case f := <-c.kicks:
			f.kicked.Store(false)
			c.mu.Lock()
			c.autoscale(f, time.Now(), false, "request waiting")
			c.mu.Unlock()
		}
	}
}

// autoscale compares f's replicas with what its load wants and boots or
// drains instances; with scaleIn false it only ever adds. trigger says what
// asked, for the log. c.mu is held.
func (c *Controller) autoscale(f *fn, now time.Time, scaleIn bool, trigger string) {
	if c.closed || f.removed || f.spec == nil || f.state == StateInvalid {
		return
	}
	spec := f.spec
	sc := spec.Scale
	ready, booting := f.count(instReady, spec.Digest), f.count(instBooting, spec.Digest)
	inflight, queued, lastRequest := f.load()
	current := ready + booting
	load := inflight + queued
	// Scaled to zero to make memory room: idle until its next request.
	evicted := !f.evictedAt.IsZero() && !lastRequest.After(f.evictedAt)
	idle := load == 0 && (now.Sub(lastRequest) >= sc.IdleTimeout || evicted)
	desired := desiredReplicas(load, sc, idle)
	f.desired = desired
	log := c.log.With("function", f.name, "from", current, "in_flight", inflight, "queued", queued, "trigger", trigger)

	if desired > current {
		f.belowSince = time.Time{}
		if now.Before(f.restartAt) {
			return // backing off after a crash or a failed boot
		}
		if now.Before(f.memWaitUntil) {
			return // a start was refused for memory: retried when some is released
		}
		reason := "below minReplicas"
		switch {
		case current == 0 && load > 0:
			reason = "activating from zero for waiting requests"
		case loadReplicas(load, sc) > current:
			reason = fmt.Sprintf("in-flight per replica above %.0f%% of concurrency %d", sc.TargetUtilization*100, sc.Concurrency)
		}
		log.Info("scaling out", "to", desired, "reason", reason)
		c.scaleOut(f, desired-current)
		return
	}
	if !scaleIn {
		return
	}
	if desired == current || booting > 0 {
		f.belowSince = time.Time{}
		return
	}
	target, reason := desired, fmt.Sprintf("no request for idleTimeout %s", sc.IdleTimeout)
	if !idle {
		if f.belowSince.IsZero() {
			f.belowSince, f.peak = now, desired
			return
		}
		f.peak = max(f.peak, desired)
		if now.Sub(f.belowSince) < sc.IdleTimeout {
			return
		}
		target = f.peak
		reason = fmt.Sprintf("load needed at most %d replicas for idleTimeout %s", target, sc.IdleTimeout)
	}
	f.belowSince = time.Time{}
	if target >= current {
		return
	}
	log.Info("scaling in", "to", target, "reason", reason)
	c.scaleIn(f, current-target)
}

// scaleOut boots n more instances of the serving version in the
// background; each serves as soon as it is ready. c.mu is held.
func (c *Controller) scaleOut(f *fn, n int) {
	spec, d := f.spec, f.disks
	for range n {
		in, err := c.register(f, spec)
		if err != nil {
			c.log.Warn("not scaling out", "function", f.name, "err", err)
			return
		}
		in.disks = d.set()
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			if err := c.start(f, in, d); err != nil {
				c.bootFailed(f, in, err)
				return
			}
			c.mu.Lock()
			if f.removed || c.closed || f.spec == nil || f.spec.Digest != in.version || in.state != instBooting {
				c.mu.Unlock()
				c.stopInstance(f, in) // not wanted any more
				return
			}
			in.state = instReady
			f.state = StateReady
			c.ensureSnapshot(f)
			c.notify(f)
			c.mu.Unlock()
		}()
	}
}

// bootFailed records a failed scale-out boot: the function backs off
// before the next one, and fails if nothing else can serve it.
func (c *Controller) bootFailed(f *fn, in *instance, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || f.removed || errors.Is(err, errStoppedBooting) {
		return
	}
	if errors.Is(err, ErrNoMemory) && !errors.Is(err, errMemoryTooBig) {
		// Not the function's fault: no crash backoff; retried when memory
		// is released (memory.go).
		f.lastErr = "scaling out: " + err.Error()
		c.memoryWaited(f, false)
		if f.spec != nil && f.count(instReady, f.spec.Digest) == 0 && f.count(instBooting, f.spec.Digest) == 0 && f.state == StateReady {
			f.state = StateIdle
		}
		c.notify(f)
		c.log.Warn("scale-out refused: not enough memory", "function", f.name, "vm_id", in.id, "err", err)
		return
	}
	f.lastErr = "scaling out: " + err.Error()
	f.crashes++
	delay := c.backoff(f.crashes)
	f.restartAt = time.Now().Add(delay)
	f.waitCrash = false
	if f.spec != nil && f.spec.Digest == in.version && f.count(instReady, in.version) == 0 && f.count(instBooting, in.version) == 0 {
		f.state = StateFailed
	}
	c.notify(f)
	c.log.Error("scale-out boot failed", "function", f.name, "vm_id", in.id, "err", err, "backoff", delay)
}

// scaleIn drains the n ready instances of the serving version with the
// fewest requests in flight. c.mu is held.
func (c *Controller) scaleIn(f *fn, n int) {
	type cand struct {
		in       *instance
		inflight int
	}
	var ready []cand
	f.dp.mu.Lock()
	for _, in := range f.instances {
		if in.state == instReady && in.version == f.spec.Digest {
			ready = append(ready, cand{in, in.inflight})
		}
	}
	f.dp.mu.Unlock()
	slices.SortStableFunc(ready, func(a, b cand) int { return cmp.Compare(a.inflight, b.inflight) })
	for _, r := range ready[:min(n, len(ready))] {
		c.log.Info("draining vm", "function", f.name, "vm_id", r.in.id, "in_flight", r.inflight, "step", "scale-in")
		c.drain(f, r.in)
	}
	if f.count(instReady, f.spec.Digest) == 0 && f.count(instBooting, f.spec.Digest) == 0 {
		f.state = StateIdle
	}
	c.notify(f)
}
