package controller

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/faasvm/appliance/internal/vm"
)

// A VM of the functions below: 128 MiB of RAM plus the overhead.
const testVM = 128<<20 + VMOverhead

// memFunction writes a 128 MB function scaling between min and 2.
func memFunction(t *testing.T, dir, name, min string) {
	t.Helper()
	writeScaled(t, dir, name, "memory: 128MB\nminReplicas: "+min+"\nmaxReplicas: 2\nconcurrency: 4\nidleTimeout: 1h\n")
}

func withBudget(vms int64) func(*Options) {
	return func(o *Options) {
		o.MemoryBudget = vms * testVM
		o.MemoryRetry = 20 * time.Millisecond
		o.StopTimeout = time.Second
		o.DrainTimeout = time.Second
	}
}

func TestMemoryBudgetLedger(t *testing.T) {
	b := newMemoryBudget(300)
	for i, step := range []struct {
		take, give int64
		wantOK     bool
		wantShort  int64
		committed  int64
	}{
		{take: 100, wantOK: true, committed: 100},
		{take: 200, wantOK: true, committed: 300},
		{take: 1, wantShort: 1, committed: 300},
		{give: 200, committed: 100},
		{take: 250, wantShort: 50, committed: 100},
		{take: 200, wantOK: true, committed: 300},
	} {
		if step.give > 0 {
			freed := b.released()
			b.give(step.give)
			select {
			case <-freed:
			default:
				t.Errorf("step %d: a release did not wake the waiters", i)
			}
		} else {
			ok, _, short := b.take(step.take)
			if ok != step.wantOK || short != step.wantShort {
				t.Errorf("step %d: take(%d) = %v short %d, want %v short %d", i, step.take, ok, short, step.wantOK, step.wantShort)
			}
		}
		if b.committed != step.committed {
			t.Errorf("step %d: committed %d, want %d", i, b.committed, step.committed)
		}
	}
	if newMemoryBudget(0) != nil {
		t.Error("a zero budget must mean none")
	}
}

// touch makes a request to name and ends it at once (its last use).
func touch(t *testing.T, c *Controller, name string) {
	t.Helper()
	in, err := acquire(t, c, name)
	if err != nil {
		t.Fatalf("request to %s: %v", name, err)
	}
	in.Release(200)
}

// syncReady deploys each function in turn, waiting for it to be ready.
func syncReady(t *testing.T, c *Controller, names ...string) {
	t.Helper()
	for _, name := range names {
		c.Sync(name)
		waitState(t, c, name, func(s Status) bool { return s.State == StateReady })
	}
}

// removeFunction deletes name's folder and syncs it.
func removeFunction(t *testing.T, c *Controller, dir, name string) {
	t.Helper()
	if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
	c.Sync(name)
}

func committed(c *Controller) int64 { return c.MemoryState().CommittedBytes }

// TestMemoryEvictsLeastRecentlyUsed: room for two VMs; a third function's
// deploy scales the least recently used idle one to zero, and a request to
// that one later makes room again by evicting the next least recent.
func TestMemoryEvictsLeastRecentlyUsed(t *testing.T) {
	e := &fakeEngine{}
	rec := &memRecorder{fakeRecorder: newFakeRecorder()}
	c, dir := newTestController(t, e, noTicks, withBudget(2), func(o *Options) { o.Metrics = rec })
	for _, name := range []string{"a", "b", "c"} {
		memFunction(t, dir, name, "0")
	}
	syncReady(t, c, "a", "b")
	touch(t, c, "a")
	time.Sleep(5 * time.Millisecond)
	touch(t, c, "b") // a is now the least recently used
	if got := committed(c); got != 2*testVM {
		t.Fatalf("committed after two deploys: %d, want %d", got, 2*testVM)
	}

	c.Sync("c")
	waitState(t, c, "c", func(s Status) bool { return s.State == StateReady })
	waitState(t, c, "a", func(s Status) bool { return s.State == StateIdle && s.Replicas.Ready == 0 })
	if s, _ := c.Get(context.Background(), "b"); s.Replicas.Ready != 1 {
		t.Errorf("b (used more recently) lost its VM: %+v", s.Replicas)
	}
	eventually(t, "two VMs running", func() bool { return len(e.running()) == 2 })
	if got := committed(c); got != 2*testVM {
		t.Errorf("committed: %d, want %d", got, 2*testVM)
	}
	// The evicted function stays at zero (no boot back) until asked.
	tick(c, "a", time.Now())
	if s, _ := c.Get(context.Background(), "a"); s.Replicas.Ready+s.Replicas.Booting != 0 {
		t.Errorf("evicted a came back without a request: %+v", s.Replicas)
	}

	// A request to a: b (older than c's deploy) makes room.
	touch(t, c, "a")
	waitState(t, c, "b", func(s Status) bool { return s.Replicas.Ready == 0 })
	if s, _ := c.Get(context.Background(), "c"); s.Replicas.Ready != 1 {
		t.Errorf("c lost its VM instead of b: %+v", s.Replicas)
	}
	st := c.MemoryState()
	if st.Evictions != 2 || st.Refusals != 0 || st.VMs != 2 || st.FreeBytes != 0 {
		t.Errorf("memory state: %+v, want 2 evictions, 0 refusals, 2 VMs, nothing free", st)
	}
	if rec.count("evicted", "a") != 1 || rec.count("evicted", "b") != 1 {
		t.Errorf("recorded evictions: %v", rec.snapshot())
	}
}

// TestMemoryRefusesWhenBusy: with every VM busy nothing can be evicted:
// the start is refused with ErrNoMemory and the status says why; once a
// busy function goes idle the refused deploy is retried and succeeds.
func TestMemoryRefusesWhenBusy(t *testing.T) {
	e := &fakeEngine{}
	c, dir := newTestController(t, e, noTicks, withBudget(2))
	for _, name := range []string{"a", "b", "c"} {
		memFunction(t, dir, name, "0")
	}
	syncReady(t, c, "a", "b")
	la, err := acquire(t, c, "a")
	if err != nil {
		t.Fatal(err)
	}
	lb, err := acquire(t, c, "b")
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Release(200)

	c.Sync("c")
	s := waitState(t, c, "c", func(s Status) bool { return strings.Contains(s.LastError, "waiting for memory") })
	if s.Replicas.Ready != 0 || !strings.Contains(s.LastError, "needs 192 MiB") {
		t.Errorf("c's status: %+v, want no replica and the memory it needs", s)
	}
	if _, err := acquire(t, c, "c"); !errors.Is(err, ErrNoMemory) {
		t.Errorf("request to c: got %v, want ErrNoMemory", err)
	}
	if st := c.MemoryState(); st.Refusals == 0 || len(st.Waiting) != 1 || st.Waiting[0] != "c" {
		t.Errorf("memory state: %+v, want a refusal and c waiting", st)
	}
	if len(e.running()) != 2 {
		t.Errorf("running VMs: %d, want 2 (nothing evicted while busy)", len(e.running()))
	}

	la.Release(200) // a is idle now: the retry evicts it
	waitState(t, c, "c", func(s Status) bool { return s.State == StateReady && s.Replicas.Ready == 1 })
	waitState(t, c, "a", func(s Status) bool { return s.Replicas.Ready == 0 })
	if st := c.MemoryState(); len(st.Waiting) != 0 || st.CommittedBytes != 2*testVM {
		t.Errorf("after the retry: %+v", st)
	}
}

// TestMemoryKeepsMinReplicas: a function's minReplicas are never evicted,
// even when it is the least recently used.
func TestMemoryKeepsMinReplicas(t *testing.T) {
	e := &fakeEngine{}
	c, dir := newTestController(t, e, noTicks, withBudget(2))
	memFunction(t, dir, "pinned", "1")
	memFunction(t, dir, "loose", "0")
	memFunction(t, dir, "new", "0")
	syncReady(t, c, "pinned", "loose")
	touch(t, c, "loose") // pinned is the least recently used
	c.Sync("new")
	waitState(t, c, "new", func(s Status) bool { return s.State == StateReady })
	waitState(t, c, "loose", func(s Status) bool { return s.Replicas.Ready == 0 })
	if s, _ := c.Get(context.Background(), "pinned"); s.Replicas.Ready != 1 {
		t.Errorf("pinned (minReplicas 1) lost its VM: %+v", s.Replicas)
	}
}

// TestMemoryTooBig: a VM larger than the whole budget fails its deploy for
// good, saying so, and is not retried.
func TestMemoryTooBig(t *testing.T) {
	e := &fakeEngine{}
	c, dir := newTestController(t, e, noTicks, func(o *Options) { o.MemoryBudget = 100 << 20; o.MemoryRetry = 10 * time.Millisecond })
	memFunction(t, dir, "huge", "0")
	c.Sync("huge")
	s := waitState(t, c, "huge", func(s Status) bool { return s.State == StateFailed })
	if !strings.Contains(s.LastError, "larger than the whole memory budget") {
		t.Errorf("last error: %q", s.LastError)
	}
	time.Sleep(50 * time.Millisecond)
	if st := c.MemoryState(); len(st.Waiting) != 0 || st.CommittedBytes != 0 {
		t.Errorf("memory state: %+v, want nothing waiting or committed", st)
	}
	if len(e.machines) != 0 {
		t.Errorf("engine started %d VMs", len(e.machines))
	}
}

// TestMemoryReleasedOnEveryPath: boots that fail, crashes, redeploys,
// removal and Close all give their reservation back.
func TestMemoryReleasedOnEveryPath(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, c *Controller, e *fakeEngine, dir string)
		want int64
	}{
		{"failed boot", func(t *testing.T, c *Controller, e *fakeEngine, dir string) {
			e.fail = func(*vm.Spec) error { return errors.New("no boot") }
			memFunction(t, dir, "f", "1")
			c.Sync("f")
			waitState(t, c, "f", func(s Status) bool { return s.State == StateFailed })
		}, 0},
		{"crash and replacement", func(t *testing.T, c *Controller, e *fakeEngine, dir string) {
			memFunction(t, dir, "f", "1")
			c.Sync("f")
			eventually(t, "booted", func() bool { return len(e.running()) == 1 })
			e.running()[0].crash()
			eventually(t, "replacement", func() bool {
				s, _ := c.Get(context.Background(), "f")
				return s.Replicas.Ready == 1 && len(e.machines) == 2
			})
		}, testVM},
		{"redeploy", func(t *testing.T, c *Controller, e *fakeEngine, dir string) {
			memFunction(t, dir, "f", "1")
			c.Sync("f")
			writeScaled(t, dir, "f", "memory: 128MB\nminReplicas: 1\nmaxReplicas: 2\nconcurrency: 2\n")
			c.Sync("f")
			eventually(t, "old version stopped", func() bool { return len(e.running()) == 1 })
		}, testVM},
		{"removal", func(t *testing.T, c *Controller, e *fakeEngine, dir string) {
			memFunction(t, dir, "f", "1")
			c.Sync("f")
			removeFunction(t, c, dir, "f")
			eventually(t, "stopped", func() bool { return len(e.running()) == 0 })
		}, 0},
		{"stopped while waiting for memory", func(t *testing.T, c *Controller, e *fakeEngine, dir string) {
			memFunction(t, dir, "a", "1")
			memFunction(t, dir, "b", "1")
			memFunction(t, dir, "c", "1")
			syncReady(t, c, "a", "b")
			c.Sync("c") // refused: both others keep their minimum
			waitState(t, c, "c", func(s Status) bool { return strings.Contains(s.LastError, "waiting for memory") })
			removeFunction(t, c, dir, "a")
			waitState(t, c, "c", func(s Status) bool { return s.Replicas.Ready == 1 })
		}, 2 * testVM},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := &fakeEngine{}
			c, dir := newTestController(t, e, withBudget(2))
			tc.run(t, c, e, dir)
			eventually(t, "reservations settled", func() bool { return committed(c) == tc.want })
			if err := c.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := committed(c); got != 0 {
				t.Errorf("committed after Close: %d, want 0", got)
			}
		})
	}
}

// memRecorder records the budget's events besides fakeRecorder's.
type memRecorder struct {
	*fakeRecorder
	mu     sync.Mutex
	events map[string]int
}

func (r *memRecorder) MemoryEvicted(fn string) { r.add("evicted", fn) }
func (r *memRecorder) MemoryRefused(fn string) { r.add("refused", fn) }

func (r *memRecorder) add(kind, fn string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.events == nil {
		r.events = map[string]int{}
	}
	r.events[kind+" "+fn]++
}

func (r *memRecorder) count(kind, fn string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.events[kind+" "+fn]
}

func (r *memRecorder) snapshot() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for k, v := range r.events {
		out[k] = v
	}
	return out
}
