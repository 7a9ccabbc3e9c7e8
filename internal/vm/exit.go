package vm

import (
	"context"
	"fmt"
	"sync"
)

// Exit records, once, that a VM ended and why: what an engine's
// Machine.Wait reports. The zero value is not usable; use NewExit.
type Exit struct {
	name string // the VM's name, for Wait's error
	once sync.Once
	done chan struct{} // closed once err is set
	err  error
}

// NewExit returns an Exit for the VM called name.
func NewExit(name string) *Exit {
	return &Exit{name: name, done: make(chan struct{})}
}

// Set records that the VM ended because of err. Only the first call
// counts; later ones are ignored.
func (x *Exit) Set(err error) {
	x.once.Do(func() {
		x.err = err
		close(x.done)
	})
}

// Done is closed once the VM has ended.
func (x *Exit) Done() <-chan struct{} { return x.done }

// Exited reports whether the VM has ended.
func (x *Exit) Exited() bool {
	select {
	case <-x.done:
		return true
	default:
		return false
	}
}

// Wait blocks until the VM ends, returning an error that wraps ErrExited
// and says why, or until ctx is done, returning ctx's error.
func (x *Exit) Wait(ctx context.Context) error {
	select {
	case <-x.done:
		return fmt.Errorf("vm %s: %w: %w", x.name, ErrExited, x.err)
	case <-ctx.Done():
		return ctx.Err()
	}
}
