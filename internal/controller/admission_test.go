package controller

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/faasvm/appliance/internal/vm"
)

// heldBoots makes every boot of e wait until the test lets it go (or the
// boot's context ends); started reports each boot as it begins.
type heldBoots struct {
	release chan struct{}
	started chan string // the VM's function name
}

func holdBoots(e *fakeEngine) *heldBoots {
	h := &heldBoots{release: make(chan struct{}), started: make(chan string, 16)}
	e.hold = func(ctx context.Context, spec *vm.Spec) error {
		h.started <- spec.Agent.Name
		select {
		case <-h.release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return h
}

func (h *heldBoots) waitStarted(t *testing.T) {
	t.Helper()
	select {
	case <-h.started:
	case <-time.After(5 * time.Second):
		t.Fatal("no boot started within 5s")
	}
}

// acquireAsync starts an Acquire and returns where its result arrives.
func acquireAsync(c *Controller, name string, bound time.Duration) <-chan error {
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		defer cancel()
		in, err := c.Acquire(ctx, name)
		if err == nil {
			in.Release(200)
		}
		done <- err
	}()
	return done
}

func waitErr(t *testing.T, what string, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no answer within 5s", what)
		return nil
	}
}

// The control plane changes state while a VM boots, with a request waiting
// for that boot: the request gets the right answer at once, nothing leaks.
func TestChangesDuringBoot(t *testing.T) {
	tests := []struct {
		name string
		// change acts while the first boot is held; it returns the error
		// the waiting request must get (nil: it must be served).
		change  func(t *testing.T, c *Controller, dir string, h *heldBoots) error
		running int // machines left running at the end
	}{
		{
			name: "removal",
			change: func(t *testing.T, c *Controller, dir string, h *heldBoots) error {
				if err := os.RemoveAll(filepath.Join(dir, "slow")); err != nil {
					t.Fatal(err)
				}
				c.Sync("slow")
				return ErrNotFound
			},
		},
		{
			name: "shutdown",
			change: func(t *testing.T, c *Controller, dir string, h *heldBoots) error {
				closed := make(chan error, 1)
				go func() { closed <- c.Close(context.Background()) }()
				t.Cleanup(func() {
					if err := <-closed; err != nil {
						t.Errorf("Close: %v", err)
					}
				})
				return ErrUnavailable
			},
		},
		{
			name: "redeploy",
			change: func(t *testing.T, c *Controller, dir string, h *heldBoots) error {
				writeFunction(t, dir, "slow", "print('v2')\n")
				c.Sync("slow")
				close(h.release) // both versions' boots go ahead
				return nil
			},
			running: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &fakeEngine{}
			h := holdBoots(e)
			c, dir := newTestController(t, e)
			writeFunction(t, dir, "slow", "print('v1')\n")
			c.Sync("slow")
			h.waitStarted(t)
			waiting := acquireAsync(c, "slow", 10*time.Second)
			eventually(t, "request queued", func() bool { return queued(c, "slow") == 1 })

			want := tt.change(t, c, dir, h)
			err := waitErr(t, "waiting request", waiting)
			if want == nil && err != nil || want != nil && !errors.Is(err, want) {
				t.Fatalf("waiting request: got %v, want %v", err, want)
			}
			if want != nil {
				close(h.release) // the held boot ends after the change
			}
			if tt.name == "redeploy" {
				// Both versions booted (v1 served the waiting request, v2
				// replaced it), and only v2's machine is left.
				eventually(t, "the new version alone serves", func() bool {
					e.mu.Lock()
					started := append([]*fakeMachine(nil), e.machines...)
					e.mu.Unlock()
					run := e.running()
					return len(started) == 2 && len(run) == 1 && run[0] == started[1]
				})
				if s := waitState(t, c, "slow", func(s Status) bool { return s.State == StateReady && s.Replicas.Ready == 1 }); s.Version == "" {
					t.Fatalf("after redeploy: status %+v; want the new version ready", s)
				}
			}
			eventually(t, "machines stopped", func() bool { return len(e.running()) == tt.running })
			if want != nil {
				if _, err := acquire(t, c, "slow"); !errors.Is(err, want) {
					t.Errorf("a later request: got %v, want %v", err, want)
				}
			}
		})
	}
}

// Waiting requests are served in arrival order, one per freed slot.
func TestQueueIsFIFO(t *testing.T) {
	e := &fakeEngine{}
	c, dir := newTestController(t, e, func(o *Options) { o.QueueSize = 8 })
	writeScaled(t, dir, "one", "maxReplicas: 1\nconcurrency: 1\n")
	c.Sync("one")
	first, err := acquire(t, c, "one")
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	const n = 5
	var mu sync.Mutex
	var order []int
	got := make([]chan Instance, n)
	for i := range n {
		got[i] = make(chan Instance, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			in, err := c.Acquire(ctx, "one")
			if err != nil {
				t.Errorf("waiter %d: %v", i, err)
				close(got[i])
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			got[i] <- in
		}()
		eventually(t, "waiter queued", func() bool { return queued(c, "one") == i+1 })
	}
	first.Release(200)
	for i := range n {
		in, ok := <-got[i]
		if !ok {
			t.FailNow()
		}
		// Exactly one waiter was woken for the one freed slot.
		if q := queued(c, "one"); q != n-1-i {
			t.Errorf("after %d releases: %d waiting, want %d", i+1, q, n-1-i)
		}
		in.Release(200)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, w := range order {
		if w != i {
			t.Fatalf("service order: got %v, want 0..%d in order", order, n-1)
		}
	}
	s, _ := c.Get(context.Background(), "one")
	if s.Invocations.Total != n+1 || s.Queued != 0 || s.InFlight != 0 {
		t.Errorf("status: got %+v, want %d invocations, none queued or in flight", s.Invocations, n+1)
	}
}

// A request that gives up leaves the queue; the next one is still served.
func TestQueueLeaveOnTimeout(t *testing.T) {
	e := &fakeEngine{}
	c, dir := newTestController(t, e, func(o *Options) { o.QueueSize = 4 })
	writeScaled(t, dir, "one", "maxReplicas: 1\nconcurrency: 1\n")
	c.Sync("one")
	first, err := acquire(t, c, "one")
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := c.Acquire(ctx, "one"); !errors.Is(err, ErrNotReady) {
		t.Fatalf("timed-out waiter: got %v, want ErrNotReady", err)
	}
	if q := queued(c, "one"); q != 0 {
		t.Fatalf("queue after the timeout: %d, want 0", q)
	}
	next := acquireAsync(c, "one", 5*time.Second)
	eventually(t, "waiter queued", func() bool { return queued(c, "one") == 1 })
	first.Release(200)
	if err := waitErr(t, "next waiter", next); err != nil {
		t.Fatalf("next waiter: %v", err)
	}
}

// Many functions and requests at once: run with -race.
func TestAdmissionConcurrent(t *testing.T) {
	e := &fakeEngine{}
	c, dir := newTestController(t, e, func(o *Options) { o.QueueSize = 64 })
	names := []string{"a", "b", "c"}
	for _, n := range names {
		writeScaled(t, dir, n, "maxReplicas: 2\nconcurrency: 2\n")
		c.Sync(n)
		waitState(t, c, n, func(s Status) bool { return s.Replicas.Ready >= 1 })
	}
	var wg sync.WaitGroup
	for i := range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			in, err := c.Acquire(ctx, names[i%len(names)])
			if err != nil {
				t.Errorf("Acquire: %v", err)
				return
			}
			_ = c.List(ctx)
			in.Release(200)
		}()
	}
	wg.Wait()
	for _, n := range names {
		s, _ := c.Get(context.Background(), n)
		if s.InFlight != 0 || s.Queued != 0 || s.Invocations.Total != 20 {
			t.Errorf("%s: got in flight %d, queued %d, total %d; want 0, 0, 20", n, s.InFlight, s.Queued, s.Invocations.Total)
		}
	}
}

// An instance the gateway reports as unreachable gets no request until its
// health check passes; one that fails the check is replaced.
func TestSuspect(t *testing.T) {
	for _, sick := range []bool{false, true} {
		name := map[bool]string{false: "healthy", true: "dead"}[sick]
		t.Run(name, func(t *testing.T) {
			e := &fakeEngine{}
			p := &fakeProber{}
			c, dir := newTestController(t, e, func(o *Options) { o.Prober = p; o.HealthInterval = time.Hour })
			writeFunction(t, dir, "sus", "print('hi')\n")
			c.Sync("sus")
			in, err := acquire(t, c, "sus")
			if err != nil {
				t.Fatalf("Acquire: %v", err)
			}
			if sick {
				p.setSick("fake-control-" + in.VMID)
			}
			in.Suspect()
			in.Release(0)
			if sick {
				eventually(t, "replaced", func() bool {
					s, _ := c.Get(context.Background(), "sus")
					return s.Replicas.Ready == 1 && s.VMID != in.VMID
				})
				return
			}
			next, err := acquire(t, c, "sus")
			if err != nil {
				t.Fatalf("Acquire after a passed check: %v", err)
			}
			if next.VMID != in.VMID {
				t.Errorf("after a passed check: got vm %s, want the same %s back", next.VMID, in.VMID)
			}
			next.Release(200)
		})
	}
}
