package vm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Step is one named step of a VM's boot (assets, disk, network, process,
// agent ready, ...).
type Step struct {
	// Name is what an error from Run says failed ("step NAME: ...").
	Name string
	// Timed puts the step under Boot.Timeout. The timeout starts with the
	// first timed step and bounds every step after it, timed or not.
	Timed bool
	// Run does the step. Whatever it sets up that a later failure must
	// undo it registers with Boot.Cleanup.
	Run func(context.Context) error
}

// Boot runs a VM's boot steps in order and, when one fails, undoes what
// the earlier ones set up, in reverse order. The zero value is usable; one
// Boot serves one Start.
type Boot struct {
	// Timeout bounds the boot from its first timed step on; 0 means no
	// bound beyond Run's ctx.
	Timeout time.Duration
	// Log receives a debug line per finished step (step, took). Default:
	// no log.
	Log *slog.Logger
	// Explain, when set, adds to a step's error (the console's tail, say)
	// before anything is undone. It gets Run's ctx, which may be over.
	Explain func(ctx context.Context, err error) error

	undo []func() error
}

// Cleanup registers f to run if the boot fails. Registered functions run
// in reverse order of registration; their errors are joined.
func (b *Boot) Cleanup(f func() error) {
	b.undo = append(b.undo, f)
}

// Run runs steps in order under ctx. On the first failure it returns
// "step NAME: ERR" (passed through Explain), joined with what undoing the
// earlier steps reported, after undoing them.
func (b *Boot) Run(ctx context.Context, steps []Step) error {
	stepCtx := ctx
	for _, s := range steps {
		if s.Timed && stepCtx == ctx && b.Timeout > 0 {
			var cancel context.CancelFunc
			stepCtx, cancel = context.WithTimeout(ctx, b.Timeout)
			defer cancel()
		}
		t := time.Now()
		if err := s.Run(stepCtx); err != nil {
			err = fmt.Errorf("step %s: %w", s.Name, err)
			if b.Explain != nil {
				err = b.Explain(ctx, err)
			}
			if uerr := b.rollback(); uerr != nil {
				err = errors.Join(err, fmt.Errorf("undoing earlier steps: %w", uerr))
			}
			return err
		}
		if b.Log != nil {
			b.Log.Debug("boot step done", "step", s.Name, "took", time.Since(t))
		}
	}
	return nil
}

// rollback runs the cleanup stack in reverse order, once.
func (b *Boot) rollback() error {
	var errs []error
	for i := len(b.undo) - 1; i >= 0; i-- {
		if err := b.undo[i](); err != nil {
			errs = append(errs, err)
		}
	}
	b.undo = nil
	return errors.Join(errs...)
}
