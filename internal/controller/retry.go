package controller

import (
	"time"

	"github.com/faasvm/appliance/internal/image"
)

// retryTransient schedules another deploy of f when its disks failed for a
// cause that goes away by itself (image.Transient: a full state disk, the
// Docker engine away): the status says so meanwhile, and once space is
// freed or the engine answers the function deploys without anyone touching
// its folder. The delay starts at Options.PrepareRetry and doubles up to
// Options.MaxBackoff.
func (c *Controller) retryTransient(f *fn, err error) {
	if !image.Transient(err) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || f.removed {
		return
	}
	delay := c.opts.PrepareRetry << min(f.prepareFails, 16)
	delay = min(delay, c.opts.MaxBackoff)
	f.prepareFails++
	f.lastErr += " (retrying in " + delay.String() + ")"
	c.notify(f)
	c.log.Warn("deploy failed for a transient cause: retrying", "function", f.name, "in", delay, "attempt", f.prepareFails, "err", err)
	time.AfterFunc(delay, func() {
		c.mu.Lock()
		current := c.fns[f.name] == f && !f.removed && !c.closed
		c.mu.Unlock()
		if current {
			c.Sync(f.name)
		}
	})
}
