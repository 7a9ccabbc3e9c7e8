package controller

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/faasvm/appliance/internal/function"
)

// The prepare deadline: a hung Docker build or pull (or dependency install)
// fails its version with the cause in the status instead of holding the
// function's reconcile for ever.

// errPrepareTimeout is the cause of a prepare's context past
// Options.PrepareTimeout.
var errPrepareTimeout = errors.New("prepare deadline")

// prepareAbandonWait is how long a timed-out prepare is given to return
// once its context is cancelled (to say what it was doing) before the
// deploy fails without it.
var prepareAbandonWait = 5 * time.Second

// prepareProgressEvery is how often a prepare still running is logged.
const prepareProgressEvery = 30 * time.Second

// prepareStep names the step of a prepare in progress, for the timeout
// message and the progress log.
type prepareStep struct {
	mu   sync.Mutex
	what string
}

type prepareStepKey struct{}

// setPrepareStep records what the prepare running under ctx does now.
func setPrepareStep(ctx context.Context, what string) {
	if s, ok := ctx.Value(prepareStepKey{}).(*prepareStep); ok {
		s.mu.Lock()
		s.what = what
		s.mu.Unlock()
	}
}

func (s *prepareStep) get() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.what
}

// prepareBounded is prepare within Options.PrepareTimeout. Past it the
// error says so, what was running, and what to do; a prepare that ignores
// its context is abandoned after prepareAbandonWait (it finishes in the
// background; the caches write their entries atomically).
func (c *Controller) prepareBounded(f *fn, spec *function.Spec) (disks, error) {
	limit := c.opts.PrepareTimeout
	step := &prepareStep{what: "starting"}
	ctx, cancel := context.WithTimeoutCause(context.WithValue(c.life, prepareStepKey{}, step), limit, errPrepareTimeout)
	defer cancel()
	type result struct {
		d   disks
		err error
	}
	done := make(chan result, 1)
	begin := time.Now()
	go func() {
		d, err := c.prepare(ctx, spec)
		done <- result{d, err}
	}()
	log := c.log.With("function", f.name, "version", short(spec.Digest))
	log.Info("preparing disks", "timeout", limit)
	tick := time.NewTicker(prepareProgressEvery)
	defer tick.Stop()
	for {
		select {
		case r := <-done:
			if r.err != nil && errors.Is(context.Cause(ctx), errPrepareTimeout) {
				return disks{}, c.prepareTimedOut(step, r.err)
			}
			if r.err == nil {
				log.Info("disks prepared", "took", time.Since(begin).Round(time.Millisecond))
			}
			return r.d, r.err
		case <-tick.C:
			log.Info("still preparing", "step", step.get(), "elapsed", time.Since(begin).Round(time.Second), "timeout", limit)
		case <-ctx.Done():
			if !errors.Is(context.Cause(ctx), errPrepareTimeout) {
				r := <-done // shutting down: the prepare returns with its context
				return r.d, r.err
			}
			t := time.NewTimer(prepareAbandonWait)
			select {
			case r := <-done:
				t.Stop()
				if r.err == nil { // finished at the deadline after all
					return r.d, nil
				}
				return disks{}, c.prepareTimedOut(step, r.err)
			case <-t.C:
				log.Warn("prepare did not return after its deadline; abandoned", "step", step.get())
				return disks{}, c.prepareTimedOut(step, nil)
			}
		}
	}
}

// prepareTimedOut is the error of a prepare past its deadline.
func (c *Controller) prepareTimedOut(step *prepareStep, err error) error {
	msg := fmt.Sprintf("prepare timed out after %s while %s", c.opts.PrepareTimeout, step.get())
	if err != nil {
		msg += ": " + err.Error()
	}
	return errors.New(msg + "; raise FAAS_PREPARE_TIMEOUT or fix the build")
}

// rootfsStep says how spec's root filesystem is made.
func rootfsStep(spec *function.Spec) string {
	if spec.Image != "" {
		return fmt.Sprintf("pulling and exporting image %s (docker pull)", spec.Image)
	}
	return fmt.Sprintf("building runtime %s's root filesystem (docker build)", spec.Runtime)
}
