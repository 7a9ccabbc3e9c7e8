package controller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/faasvm/appliance/internal/function"
	"github.com/faasvm/appliance/internal/vm"
)

// fakeEngine boots fake machines; fail (if set) decides a boot's error;
// hold (if set) runs first, outside the engine's lock, and may block the
// boot like a slow VM (its error fails the boot).
type fakeEngine struct {
	mu       sync.Mutex
	fail     func(spec *vm.Spec) error
	hold     func(ctx context.Context, spec *vm.Spec) error
	machines []*fakeMachine
}

var _ vm.Engine = (*fakeEngine)(nil)

// Name poses as the qemu engine: function.Load checks fields against it.
func (e *fakeEngine) Name() string { return "qemu" }

func (e *fakeEngine) Start(ctx context.Context, spec *vm.Spec) (vm.Machine, error) {
	if e.hold != nil {
		if err := e.hold(ctx, spec); err != nil {
			return nil, err
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.fail != nil {
		if err := e.fail(spec); err != nil {
			return nil, err
		}
	}
	m := &fakeMachine{id: string(spec.VM.UID), spec: spec, exit: make(chan error, 1), stopped: make(chan struct{})}
	e.machines = append(e.machines, m)
	return m, nil
}

func (e *fakeEngine) running() []*fakeMachine {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []*fakeMachine
	for _, m := range e.machines {
		select {
		case <-m.stopped:
		default:
			out = append(out, m)
		}
	}
	return out
}

type fakeMachine struct {
	id       string
	spec     *vm.Spec
	exit     chan error
	stopped  chan struct{}
	stopOnce sync.Once
}

var _ vm.Machine = (*fakeMachine)(nil)

func (m *fakeMachine) ID() string              { return m.id }
func (m *fakeMachine) Endpoint() string        { return "fake-endpoint-" + m.id }
func (m *fakeMachine) ControlEndpoint() string { return "fake-control-" + m.id }
func (m *fakeMachine) ConsoleLog() string      { return "" }
func (m *fakeMachine) crash()                  { m.exit <- errors.New("boom") }
func (m *fakeMachine) Wait(ctx context.Context) error {
	select {
	case err := <-m.exit:
		return fmt.Errorf("%w: %v", vm.ErrExited, err)
	case <-m.stopped:
		return vm.ErrExited
	case <-ctx.Done():
		return ctx.Err()
	}
}
func (m *fakeMachine) Stop(ctx context.Context) error {
	m.stopOnce.Do(func() { close(m.stopped) })
	return nil
}

type fakeImages struct{}

func (fakeImages) RootFS(ctx context.Context, runtime, image string) (string, error) {
	return "/rootfs/" + runtime, nil
}
func (fakeImages) CodeDisk(ctx context.Context, dir string) (string, error) {
	return dir + ".ext4", nil
}

// newTestController returns a controller of fake VMs that are always
// healthy; tune adjusts its options.
func newTestController(t *testing.T, e *fakeEngine, tune ...func(*Options)) (*Controller, string) {
	t.Helper()
	dir := t.TempDir()
	opts := Options{
		FunctionsDir: dir,
		Defaults: function.Defaults{
			Timeout: 5 * time.Second, MinReplicas: 1, MaxReplicas: 1, Concurrency: 2,
			IdleTimeout: time.Minute, TargetUtilization: 0.7, MaxSize: 1 << 20,
		},
		Template:     vm.NewVM("template"),
		DrainTimeout: 5 * time.Second,
		MaxBackoff:   10 * time.Millisecond,
		QueueSize:    2,
		Prober:       &fakeProber{},
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, f := range tune {
		f(&opts)
	}
	c := New(opts, e, fakeImages{})
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c, dir
}

func writeFunction(t *testing.T, dir, name, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name, "handler.py"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// waitState polls the status until cond holds (bounded).
func waitState(t *testing.T, c *Controller, name string, cond func(Status) bool) Status {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, err := c.Get(context.Background(), name)
		if err == nil && cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: condition not met; last status %+v (err %v)", name, s, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func acquire(t *testing.T, c *Controller, name string) (Instance, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return c.Acquire(ctx, name)
}

func TestDeployAcquireRelease(t *testing.T) {
	e := &fakeEngine{}
	c, dir := newTestController(t, e)
	writeFunction(t, dir, "hello", "print('hi')\n")
	c.Sync("hello")
	in, err := acquire(t, c, "hello")
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if in.Secret == "" || in.Endpoint == "" || in.Timeout != 5*time.Second {
		t.Errorf("instance: got %+v, want secret, endpoint and a 5s timeout", in)
	}
	in.Release(200)
	in.Release(200) // a second call must not count twice
	s, _ := c.Get(context.Background(), "hello")
	if s.State != StateReady || s.Invocations.Total != 1 || s.Invocations.Errors != 0 || s.Replicas.Ready != 1 {
		t.Errorf("status: got %+v, want ready with 1 invocation and 1 ready replica", s)
	}
	if got := len(e.running()); got != 1 {
		t.Errorf("running machines: got %d, want 1", got)
	}
	agent := e.running()[0].spec.Agent
	if agent.Mode != "exec" || agent.Secret != in.Secret {
		t.Errorf("agent config: got mode %q secret match %v, want exec and the instance's secret", agent.Mode, agent.Secret == in.Secret)
	}
}

func TestAcquireErrors(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, c *Controller, e *fakeEngine, dir string)
		fn      string
		wantErr error
	}{
		{
			name:    "unknown function",
			setup:   func(t *testing.T, c *Controller, e *fakeEngine, dir string) {},
			fn:      "nope",
			wantErr: ErrNotFound,
		},
		{
			name: "invalid folder name",
			setup: func(t *testing.T, c *Controller, e *fakeEngine, dir string) {
				writeFunction(t, dir, "Bad_Name", "print(1)\n")
				c.Sync("Bad_Name")
				waitState(t, c, "Bad_Name", func(s Status) bool { return s.State == StateInvalid })
			},
			fn:      "Bad_Name",
			wantErr: ErrUnavailable,
		},
		{
			name: "boot fails",
			setup: func(t *testing.T, c *Controller, e *fakeEngine, dir string) {
				e.fail = func(*vm.Spec) error { return errors.New("handler crashed at start") }
				writeFunction(t, dir, "crashy", "print(1)\n")
				c.Sync("crashy")
				s := waitState(t, c, "crashy", func(s Status) bool { return s.State == StateFailed })
				if s.LastError == "" {
					t.Errorf("failed status has no reason")
				}
			},
			fn:      "crashy",
			wantErr: ErrUnavailable,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &fakeEngine{}
			c, dir := newTestController(t, e)
			tt.setup(t, c, e, dir)
			_, err := acquire(t, c, tt.fn)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Acquire: got %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestRedeployDrainsOldVersion(t *testing.T) {
	e := &fakeEngine{}
	c, dir := newTestController(t, e)
	writeFunction(t, dir, "fn", "v1\n")
	c.Sync("fn")
	old, err := acquire(t, c, "fn")
	if err != nil {
		t.Fatal(err)
	}
	v1 := waitState(t, c, "fn", func(s Status) bool { return s.State == StateReady }).Version

	writeFunction(t, dir, "fn", "v2\n")
	c.Sync("fn")
	s := waitState(t, c, "fn", func(s Status) bool { return s.Version != v1 && s.State == StateReady })
	if s.Replicas.Draining != 1 {
		t.Errorf("while a request is in flight on v1: got %d draining, want 1", s.Replicas.Draining)
	}
	in, err := acquire(t, c, "fn")
	if err != nil {
		t.Fatal(err)
	}
	if in.VMID == old.VMID {
		t.Errorf("new requests still go to the old vm %s", old.VMID)
	}
	in.Release(200)
	old.Release(200) // the old VM drains and stops
	waitState(t, c, "fn", func(s Status) bool { return s.Replicas.Draining == 0 })
	if got := len(e.running()); got != 1 {
		t.Errorf("running machines after drain: got %d, want 1", got)
	}

	// A broken new version leaves v2 serving with the reason in the status.
	if err := os.WriteFile(filepath.Join(dir, "fn", "function.yaml"), []byte("mode: bogus\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.Sync("fn")
	s = waitState(t, c, "fn", func(s Status) bool { return s.LastError != "" })
	if s.State != StateReady {
		t.Errorf("state after a broken redeploy: got %s, want ready", s.State)
	}
	if in, err := acquire(t, c, "fn"); err != nil {
		t.Errorf("old version should keep serving: %v", err)
	} else {
		in.Release(200)
	}
}

func TestRemoveStopsEverything(t *testing.T) {
	e := &fakeEngine{}
	c, dir := newTestController(t, e)
	writeFunction(t, dir, "gone", "x\n")
	c.Sync("gone")
	waitState(t, c, "gone", func(s Status) bool { return s.State == StateReady })
	if err := os.RemoveAll(filepath.Join(dir, "gone")); err != nil {
		t.Fatal(err)
	}
	c.Sync("gone")
	deadline := time.Now().Add(5 * time.Second)
	for len(e.running()) > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := len(e.running()); got != 0 {
		t.Errorf("running machines: got %d, want 0", got)
	}
	if _, err := acquire(t, c, "gone"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Acquire after removal: got %v, want ErrNotFound", err)
	}
}

func TestCrashedVMIsRestarted(t *testing.T) {
	e := &fakeEngine{}
	c, dir := newTestController(t, e)
	writeFunction(t, dir, "flaky", "x\n")
	c.Sync("flaky")
	waitState(t, c, "flaky", func(s Status) bool { return s.State == StateReady })
	first := e.running()[0]
	first.crash()
	s := waitState(t, c, "flaky", func(s Status) bool {
		return s.State == StateReady && s.VMID != "" && s.VMID != first.id
	})
	if s.LastError == "" {
		t.Errorf("status after a crash should say what happened")
	}
}

func TestQueueBound(t *testing.T) {
	e := &fakeEngine{}
	c, dir := newTestController(t, e)
	writeFunction(t, dir, "busy", "x\n")
	c.Sync("busy")
	// Concurrency 2, queue 2: two leases, two waiters, the fifth is refused.
	var leases []Instance
	for range 2 {
		in, err := acquire(t, c, "busy")
		if err != nil {
			t.Fatal(err)
		}
		leases = append(leases, in)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	got := make(chan Instance, 2)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if in, err := c.Acquire(ctx, "busy"); err == nil {
				got <- in
			}
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		w := queued(c, "busy")
		if w == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiters: got %d, want 2", w)
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := acquire(t, c, "busy"); !errors.Is(err, ErrOverloaded) {
		t.Errorf("past the queue bound: got %v, want ErrOverloaded", err)
	}
	leases[0].Release(200) // frees a slot: one waiter gets it
	select {
	case in := <-got:
		in.Release(200)
	case <-time.After(5 * time.Second):
		t.Fatal("a queued request did not get the freed slot")
	}
	leases[1].Release(200)
	wg.Wait()
}
