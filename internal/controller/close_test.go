package controller

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/faasvm/appliance/internal/vm"
)

// slowStopEngine boots fake machines whose Stop hangs: until its ctx ends
// (honest), or for ever (hung: ignores ctx).
type slowStopEngine struct {
	fakeEngine
	ignoreCtx bool
	stops     atomic.Int32
}

type slowStopMachine struct {
	*fakeMachine
	e *slowStopEngine
}

func (e *slowStopEngine) Start(ctx context.Context, spec *vm.Spec) (vm.Machine, error) {
	m, err := e.fakeEngine.Start(ctx, spec)
	if err != nil {
		return nil, err
	}
	return &slowStopMachine{m.(*fakeMachine), e}, nil
}

func (m *slowStopMachine) Stop(ctx context.Context) error {
	m.e.stops.Add(1)
	if m.e.ignoreCtx {
		select {} // a stop that never returns
	}
	<-ctx.Done()
	return m.fakeMachine.Stop(context.Background())
}

// TestCloseWithinContext: Close stops every VM in parallel and returns
// within its context, also when a VM's stop hangs for ever.
func TestCloseWithinContext(t *testing.T) {
	for _, tt := range []struct {
		name      string
		ignoreCtx bool
		stop      time.Duration // Options.StopTimeout
		wantErr   bool
	}{
		{name: "stops end at StopTimeout", stop: 100 * time.Millisecond},
		{name: "a stop hangs for ever", ignoreCtx: true, stop: time.Hour, wantErr: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := &slowStopEngine{ignoreCtx: tt.ignoreCtx}
			c, dir := newTestController(t, &e.fakeEngine, func(o *Options) { o.StopTimeout = tt.stop })
			c.engine = e
			const n = 4
			for i := range n {
				name := fmt.Sprintf("f%d", i)
				writeFunction(t, dir, name, "def handle(req): return 'ok'\n")
				c.Sync(name)
				waitState(t, c, name, func(s Status) bool { return s.State == StateReady })
			}
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			begin := time.Now()
			err := c.Close(ctx)
			took := time.Since(begin)
			// Four stops in a row would take 4 x 100ms, or for ever.
			if took > 350*time.Millisecond {
				t.Errorf("Close took %s, want at most about its 300ms context (stops in parallel)", took)
			}
			if got := e.stops.Load(); got != n {
				t.Errorf("%d stops, want %d", got, n)
			}
			if (err != nil) != tt.wantErr {
				t.Errorf("Close: %v, want error %v", err, tt.wantErr)
			}
		})
	}
}
