package controller

import (
	"context"
	"fmt"
	"sort"
)

// The read model: what the management API shows of each function.

// List returns every function's status, sorted by name.
func (c *Controller) List(ctx context.Context) []Status {
	c.mu.Lock()
	out := make([]Status, 0, len(c.fns))
	rings := make([]latencies, len(c.fns))
	for _, f := range c.fns {
		out = append(out, c.status(f, &rings[len(out)]))
	}
	c.mu.Unlock()
	// The summaries sort: not under any lock.
	for i := range out {
		out[i].Latency = rings[i].summary()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Get returns one function's status.
func (c *Controller) Get(ctx context.Context, name string) (Status, error) {
	c.mu.Lock()
	f := c.fns[name]
	if f == nil {
		c.mu.Unlock()
		return Status{}, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	var ring latencies
	s := c.status(f, &ring)
	c.mu.Unlock()
	s.Latency = ring.summary()
	return s, nil
}

// Logs returns the last lines of the console of the function's newest VM,
// or of the last one that died.
func (c *Controller) Logs(ctx context.Context, name string, lines int) (string, error) {
	c.mu.Lock()
	f := c.fns[name]
	if f == nil {
		c.mu.Unlock()
		return "", fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	var path string
	for _, in := range f.instances {
		if in.m != nil {
			path = in.m.ConsoleLog()
		}
	}
	last := f.lastConsole
	c.mu.Unlock()
	if path == "" {
		return last, nil
	}
	return tail(path, lines), nil
}

// status renders f but its latency summary, and copies its latency ring
// into ring; c.mu is held.
func (c *Controller) status(f *fn, ring *latencies) Status {
	s := Status{
		Name:       f.name,
		State:      f.state,
		Engine:     c.engine.Name(),
		EngineNote: c.opts.EngineNote,
		StartedAt:  f.startedAt,
		LastError:  f.lastErr,
		Warnings:   f.warnings,

		Replicas: Replicas{
			Ready:    f.count(instReady, ""),
			Booting:  f.count(instBooting, ""),
			Draining: f.count(instDraining, ""),
			Desired:  f.desired,
		},
	}
	for _, in := range f.instances {
		if in.queuedBoot && in.state == instBooting {
			s.Replicas.QueuedBoots++
		}
	}
	f.dp.mu.Lock()
	s.Invocations, s.Queued, *ring = f.dp.counts, len(f.dp.queue), f.dp.latency
	for _, in := range f.instances {
		s.InFlight += in.inflight
	}
	f.dp.mu.Unlock()
	s.Instances = instanceStatus(f)
	s.Snapshot = c.snapshotStatus(f)
	if f.spec != nil {
		s.Runtime, s.Mode, s.Handler, s.Version = f.spec.Runtime, f.spec.Mode, f.spec.Handler, short(f.spec.Digest)
		for _, in := range f.instances {
			if in.state == instReady && in.version == f.spec.Digest {
				s.VMID = in.id
			}
		}
		sc := f.spec.Scale
		s.Scale = Scale{
			MinReplicas: sc.MinReplicas, MaxReplicas: sc.MaxReplicas, Concurrency: sc.Concurrency,
			IdleTimeout: sc.IdleTimeout.String(), TargetUtilization: sc.TargetUtilization,
		}
	}
	return s
}
