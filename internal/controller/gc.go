package controller

import (
	"context"
	"time"
)

// Garbage collection of disks: the controller knows which disks its VMs
// boot from, so it tells the image cache (Options.Collector) what stays
// after each deploy settles and every Options.GCInterval: the disks of every
// instance it runs (booting, serving, draining), of every function's
// serving version and of the Options.KeepVersions versions each function
// served before (a quick rollback: redeploying one makes no disk), plus the
// kernel, the initramfs and whatever Options.GCReferenced adds (snapshots
// name the disks they were made from). The cache removes the rest.

// Collector removes the disks that are not referenced.
type Collector interface {
	// Collect removes every entry it owns that is not in referenced
	// (absolute paths) and that it has not handed out recently.
	Collect(ctx context.Context, referenced []string) error
}

// diskSet is the files of one version's disks.
type diskSet struct{ rootfs, code, deps string }

func (d disks) set() diskSet { return diskSet{d.rootfs, d.code, d.deps} }

func (s diskSet) paths() []string {
	var out []string
	for _, p := range []string{s.rootfs, s.code, s.deps} {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// gcSettle is how long collection waits after a deploy ends, so that a
// burst of deploys (a folder copied in) is collected once.
const gcSettle = 2 * time.Second

// remember records that f's serving version moves from old to d: old
// joins the front of f's history, which keeps Options.KeepVersions
// versions; c.mu is held.
func (c *Controller) remember(f *fn, old disks) {
	o := old.set()
	if len(o.paths()) == 0 {
		return
	}
	h := append([]diskSet{o}, f.history...)
	f.history = h[:min(len(h), c.opts.KeepVersions)]
}

// kickGC asks for a collection once things settle (no-op without a
// Collector).
func (c *Controller) kickGC() {
	if c.opts.Collector == nil {
		return
	}
	select {
	case c.gcKicks <- struct{}{}:
	default:
	}
}

// gcFollowUp is when collection runs again after one a deploy asked for:
// the cache keeps what it handed out recently (image.DefaultGCGrace), so
// the disks a deploy replaced go at the latest then.
const gcFollowUp = 20 * time.Second

// gcLoop collects after deploys settle (and once more gcFollowUp later)
// and every Options.GCInterval.
func (c *Controller) gcLoop() {
	defer c.wg.Done()
	tick := time.NewTicker(c.opts.GCInterval)
	defer tick.Stop()
	follow := time.NewTimer(time.Hour)
	follow.Stop()
	for {
		select {
		case <-c.life.Done():
			return
		case <-tick.C:
		case <-follow.C:
		case <-c.gcKicks:
			follow.Reset(gcFollowUp)
			// Let a burst of deploys finish first (bounded: a
			// function that keeps redeploying does not starve it).
			for i := 0; i < 30 && c.busy(); i++ {
				select {
				case <-c.life.Done():
					return
				case <-time.After(gcSettle):
				}
			}
		}
		if err := c.CollectGarbage(c.life); err != nil && c.life.Err() == nil {
			c.log.Warn("collecting unused disks (retried at the next deploy or interval)", "err", err)
		}
	}
}

// busy reports whether some function is being reconciled.
func (c *Controller) busy() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.fns {
		if f.working {
			return true
		}
	}
	return false
}

// CollectGarbage removes the disks nothing references now (see Collector);
// a no-op without one.
func (c *Controller) CollectGarbage(ctx context.Context) error {
	if c.opts.Collector == nil {
		return nil
	}
	refs := c.referenced()
	if c.opts.GCReferenced != nil {
		refs = append(refs, c.opts.GCReferenced()...)
	}
	return c.opts.Collector.Collect(ctx, refs)
}

// referenced is every disk some instance or kept version uses.
func (c *Controller) referenced() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	refs := []string{c.opts.Kernel, c.opts.Initrd}
	for _, f := range c.fns {
		refs = append(refs, f.disks.set().paths()...)
		refs = append(refs, f.preparing.paths()...)
		for _, h := range f.history {
			refs = append(refs, h.paths()...)
		}
		for _, in := range f.instances {
			refs = append(refs, in.disks.paths()...)
		}
	}
	return refs
}

// setPreparing records the disks a deploy in progress made for f (the
// zero diskSet once it is over).
func (c *Controller) setPreparing(f *fn, d diskSet) {
	c.mu.Lock()
	f.preparing = d
	c.mu.Unlock()
}
