package controller

import (
	"errors"
	"testing"
	"time"
)

func TestRequestsWaitThroughAnOccasionalCrash(t *testing.T) {
	e := &fakeEngine{}
	c, dir := newTestController(t, e, func(o *Options) { o.MaxBackoff = 400 * time.Millisecond })
	writeFunction(t, dir, "flaky", "x\n")
	c.Sync("flaky")
	waitState(t, c, "flaky", func(s Status) bool { return s.State == StateReady })
	for crash := 1; crash <= waitCrashes+1; crash++ {
		vm := e.running()[0]
		vm.crash()
		waitState(t, c, "flaky", func(s Status) bool { return s.State == StateFailed })
		in, err := acquire(t, c, "flaky")
		if crash <= waitCrashes {
			// Served by the replacement once it boots.
			if err != nil {
				t.Fatalf("crash %d: a request during the backoff got %v, want it to wait for the replacement", crash, err)
			}
			if in.VMID == vm.id {
				t.Fatalf("crash %d: served by the dead VM", crash)
			}
			in.Release(200)
			continue
		}
		// Crashing again and again: refused at once during the backoff.
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("crash %d in a row: got %v, want ErrUnavailable during the backoff", crash, err)
		}
	}
}
