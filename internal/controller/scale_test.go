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

	"github.com/faasvm/appliance/internal/function"
	"github.com/faasvm/appliance/internal/vm"
)

// fakeProber fails the health checks of the endpoints marked sick.
type fakeProber struct {
	mu      sync.Mutex
	sick    map[string]bool
	secrets map[string]string // endpoint → the secret it was probed with
}

var _ Prober = (*fakeProber)(nil)

func (p *fakeProber) Probe(ctx context.Context, endpoint, secret string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.secrets == nil {
		p.secrets = map[string]string{}
	}
	p.secrets[endpoint] = secret
	if p.sick[endpoint] {
		return errors.New("agent not answering")
	}
	return nil
}

func (p *fakeProber) setSick(endpoint string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sick == nil {
		p.sick = map[string]bool{}
	}
	p.sick[endpoint] = true
}

func (p *fakeProber) secretFor(endpoint string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.secrets[endpoint]
}

// fakeRecorder keeps what the controller records.
type fakeRecorder struct {
	mu        sync.Mutex
	ready     map[string]int
	queued    map[string]int
	booted    map[string]int
	cold      map[string]int
	forgotten []string
}

var _ Recorder = (*fakeRecorder)(nil)

func newFakeRecorder() *fakeRecorder {
	return &fakeRecorder{ready: map[string]int{}, queued: map[string]int{}, booted: map[string]int{}, cold: map[string]int{}}
}

func (r *fakeRecorder) FunctionState(fn string, ready, queued int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ready[fn], r.queued[fn] = ready, queued
}

func (r *fakeRecorder) VMStarted(fn, method string, took time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.booted[fn]++
}

func (r *fakeRecorder) ColdStart(fn string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cold[fn]++
}

func (r *fakeRecorder) Forget(fn string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.forgotten = append(r.forgotten, fn)
	delete(r.ready, fn)
	delete(r.queued, fn)
}

func (r *fakeRecorder) get(m map[string]int, fn string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return m[fn]
}

// writeScaled writes a function with a function.yaml.
func writeScaled(t *testing.T, dir, name, manifest string) {
	t.Helper()
	writeFunction(t, dir, name, "print('hi')\n")
	if err := os.WriteFile(filepath.Join(dir, name, "function.yaml"), []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
}

// noTicks leaves scaling to the test (and to waiting requests).
func noTicks(o *Options) { o.ScaleInterval = time.Hour }

// tick runs the autoscaler once for name as if the time were at.
func tick(c *Controller, name string, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f := c.fns[name]; f != nil {
		c.autoscale(f, at, true, "test")
	}
}

// readyVMs maps each ready instance of name to its requests in flight.
func readyVMs(c *Controller, name string) map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	if f := c.fns[name]; f != nil {
		f.dp.mu.Lock()
		defer f.dp.mu.Unlock()
		for _, in := range f.instances {
			if in.state == instReady {
				out[in.id] = in.inflight
			}
		}
	}
	return out
}

// queued is how many requests wait for name.
func queued(c *Controller, name string) int {
	f := c.lookup(name)
	if f == nil {
		return 0
	}
	f.dp.mu.Lock()
	defer f.dp.mu.Unlock()
	return len(f.dp.queue)
}

// eventually polls cond until it holds (bounded).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// leases acquires n leases of name at once (each waits for a slot or a
// boot) and returns them.
func leases(t *testing.T, c *Controller, name string, n int) []Instance {
	t.Helper()
	out := make([]Instance, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			out[i], errs[i] = c.Acquire(ctx, name)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("acquiring %d leases of %s: %v", n, name, err)
	}
	return out
}

func TestDesiredReplicas(t *testing.T) {
	scale := func(minR, maxR, conc int, target float64) function.Scale {
		return function.Scale{MinReplicas: minR, MaxReplicas: maxR, Concurrency: conc, TargetUtilization: target, IdleTimeout: time.Minute}
	}
	tests := []struct {
		name  string
		load  int
		scale function.Scale
		idle  bool
		want  int
	}{
		{name: "idle, minReplicas 0: zero", load: 0, scale: scale(0, 3, 1, 1), idle: true, want: 0},
		{name: "idle, minReplicas 2: two", load: 0, scale: scale(2, 3, 1, 1), idle: true, want: 2},
		{name: "no load but recent traffic keeps one", load: 0, scale: scale(0, 3, 1, 1), want: 1},
		{name: "one request, one slot", load: 1, scale: scale(0, 3, 1, 1), want: 1},
		{name: "three requests, one slot each", load: 3, scale: scale(0, 3, 1, 1), want: 3},
		{name: "capped at maxReplicas", load: 10, scale: scale(0, 3, 1, 1), want: 3},
		{name: "exactly at target: 7 of 10 slots at 0.7", load: 7, scale: scale(1, 5, 10, 0.7), want: 1},
		{name: "just above target: 8 of 10 slots at 0.7", load: 8, scale: scale(1, 5, 10, 0.7), want: 2},
		{name: "concurrency 1 at 0.7 wants headroom", load: 1, scale: scale(0, 5, 1, 0.7), want: 2},
		{name: "queued requests count", load: 16, scale: scale(1, 5, 8, 1), want: 2},
		{name: "minReplicas is a floor under load", load: 5, scale: scale(3, 5, 8, 0.5), want: 3},
		{name: "maxReplicas 1 never scales", load: 100, scale: scale(1, 1, 8, 0.7), want: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := desiredReplicas(tt.load, tt.scale, tt.idle); got != tt.want {
				t.Errorf("desiredReplicas(%d, %+v, idle %v): got %d, want %d", tt.load, tt.scale, tt.idle, got, tt.want)
			}
		})
	}
}

func TestPickFewestInFlight(t *testing.T) {
	type inst struct {
		state    string
		version  string
		inflight int
	}
	tests := []struct {
		name      string
		instances []inst
		want      int // index, -1 for none
	}{
		{name: "fewest in flight wins", instances: []inst{{instReady, "v1", 2}, {instReady, "v1", 0}, {instReady, "v1", 1}}, want: 1},
		{name: "full instances are skipped", instances: []inst{{instReady, "v1", 3}, {instReady, "v1", 3}}, want: -1},
		{name: "booting, draining and unhealthy are never picked", instances: []inst{
			{instBooting, "v1", 0}, {instDraining, "v1", 0}, {instUnhealthy, "v1", 0}, {instReady, "v1", 2}}, want: 3},
		{name: "only the serving version", instances: []inst{{instReady, "v0", 0}, {instReady, "v1", 1}}, want: 1},
		{name: "nothing ready", instances: []inst{{instBooting, "v1", 0}}, want: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fn{spec: &function.Spec{Digest: "v1", Scale: function.Scale{Concurrency: 3}}}
			for _, in := range tt.instances {
				f.instances = append(f.instances, &instance{state: in.state, version: in.version, inflight: in.inflight})
			}
			(&Controller{}).resync(f)
			got := f.dp.pick()
			want := (*instance)(nil)
			if tt.want >= 0 {
				want = f.instances[tt.want]
			}
			if got != want {
				t.Errorf("pick: got %+v, want %+v", got, want)
			}
		})
	}
}

func TestBurstScalesOut(t *testing.T) {
	e := &fakeEngine{}
	c, dir := newTestController(t, e, noTicks)
	writeScaled(t, dir, "burst", "maxReplicas: 3\nconcurrency: 1\ntargetUtilization: 1\n")
	c.Sync("burst")
	waitState(t, c, "burst", func(s Status) bool { return s.Replicas.Ready == 1 })
	// Three requests at once with one slot per VM: the waiting ones make
	// the controller boot VMs without waiting for a tick.
	ls := leases(t, c, "burst", 3)
	seen := map[string]bool{}
	for _, l := range ls {
		seen[l.VMID] = true
	}
	if len(seen) != 3 {
		t.Errorf("VMs serving the burst: got %d distinct, want 3", len(seen))
	}
	s, _ := c.Get(context.Background(), "burst")
	if s.Replicas.Ready != 3 || s.Replicas.Desired != 3 || s.InFlight != 3 {
		t.Errorf("status: got replicas %+v in flight %d, want 3 ready, 3 desired, 3 in flight", s.Replicas, s.InFlight)
	}
	for _, l := range ls {
		l.Release(200)
	}
	s, _ = c.Get(context.Background(), "burst")
	if s.Invocations.Total != 3 || s.Latency.Samples != 3 {
		t.Errorf("after release: got %+v latency %+v, want 3 invocations and 3 samples", s.Invocations, s.Latency)
	}
}

func TestTickScalesOutAboveTarget(t *testing.T) {
	e := &fakeEngine{}
	c, dir := newTestController(t, e, noTicks)
	writeScaled(t, dir, "warm", "maxReplicas: 3\nconcurrency: 2\ntargetUtilization: 0.5\n")
	c.Sync("warm")
	waitState(t, c, "warm", func(s Status) bool { return s.Replicas.Ready == 1 })
	ls := leases(t, c, "warm", 2) // both fit in the one VM: nobody waits
	if got := len(readyVMs(c, "warm")); got != 1 {
		t.Fatalf("before the tick: got %d ready, want 1", got)
	}
	tick(c, "warm", time.Now()) // 2 in flight on 2 slots at target 0.5: two VMs
	eventually(t, "second VM ready", func() bool { return len(readyVMs(c, "warm")) == 2 })
	for _, l := range ls {
		l.Release(200)
	}
}

func TestScaleInHysteresis(t *testing.T) {
	e := &fakeEngine{}
	c, dir := newTestController(t, e, noTicks)
	writeScaled(t, dir, "steady", "maxReplicas: 3\nconcurrency: 1\ntargetUtilization: 1\nidleTimeout: 10s\n")
	c.Sync("steady")
	waitState(t, c, "steady", func(s Status) bool { return s.Replicas.Ready == 1 })
	ls := leases(t, c, "steady", 3)
	keep := ls[0] // stays in flight all along
	ls[1].Release(200)
	ls[2].Release(200)

	t0 := time.Now()
	var extra Instance
	steps := []struct {
		at        time.Duration
		before    func(t *testing.T) // runs before the tick
		after     func(t *testing.T) // and after it
		wantReady int
	}{
		{at: 0, wantReady: 3}, // one request needs one VM: the window opens
		{at: 5 * time.Second, wantReady: 3},
		{at: 6 * time.Second, wantReady: 3, // a second request: two VMs wanted
			before: func(t *testing.T) { extra = leases(t, c, "steady", 1)[0] },
			after:  func(t *testing.T) { extra.Release(200) }},
		{at: 9900 * time.Millisecond, wantReady: 3}, // steady: no change inside the window
		{at: 10 * time.Second, wantReady: 2},        // the window's peak: 2
		{at: 11 * time.Second, wantReady: 2},        // a new window opens
		{at: 20 * time.Second, wantReady: 2},
		{at: 21 * time.Second, wantReady: 1},
	}
	for _, st := range steps {
		if st.before != nil {
			st.before(t)
		}
		tick(c, "steady", t0.Add(st.at))
		if st.after != nil {
			st.after(t)
		}
		if got := len(readyVMs(c, "steady")); got != st.wantReady {
			t.Fatalf("at +%s: got %d ready, want %d", st.at, got, st.wantReady)
		}
	}
	// Scaling in drained the idle VMs, never the busy one.
	if _, ok := readyVMs(c, "steady")[keep.VMID]; !ok {
		t.Errorf("the VM with a request in flight was scaled in")
	}
	eventually(t, "drained VMs stopped", func() bool { return len(e.running()) == 1 })
	keep.Release(200)
}

func TestIdleScalesToMinReplicas(t *testing.T) {
	tests := []struct {
		name      string
		manifest  string
		wantReady int
		wantState string
	}{
		{name: "to zero", manifest: "minReplicas: 0\nmaxReplicas: 2\nconcurrency: 1\nidleTimeout: 3s\n", wantReady: 0, wantState: StateIdle},
		{name: "to minReplicas 1", manifest: "minReplicas: 1\nmaxReplicas: 2\nconcurrency: 1\nidleTimeout: 3s\n", wantReady: 1, wantState: StateReady},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &fakeEngine{}
			rec := newFakeRecorder()
			c, dir := newTestController(t, e, noTicks, func(o *Options) { o.Metrics = rec })
			writeScaled(t, dir, "fn", tt.manifest)
			c.Sync("fn")
			waitState(t, c, "fn", func(s Status) bool { return s.Replicas.Ready == 1 })
			for _, l := range leases(t, c, "fn", 2) {
				l.Release(200)
			}
			if got := len(readyVMs(c, "fn")); got != 2 {
				t.Fatalf("after two requests at once: got %d ready, want 2", got)
			}
			tick(c, "fn", time.Now().Add(2*time.Second)) // not idle yet
			if got := len(readyVMs(c, "fn")); got != 2 {
				t.Errorf("before idleTimeout: got %d ready, want 2", got)
			}
			tick(c, "fn", time.Now().Add(3*time.Second))
			s, _ := c.Get(context.Background(), "fn")
			if s.Replicas.Ready != tt.wantReady || s.State != tt.wantState {
				t.Errorf("after idleTimeout: got %d ready, state %s, want %d, %s", s.Replicas.Ready, s.State, tt.wantReady, tt.wantState)
			}
			eventually(t, "idle VMs stopped", func() bool { return len(e.running()) == tt.wantReady })
			if got := rec.get(rec.ready, "fn"); got != tt.wantReady {
				t.Errorf("replica gauge: got %d, want %d", got, tt.wantReady)
			}
		})
	}
}

func TestActivatorFromZero(t *testing.T) {
	tests := []struct {
		name      string
		bootFails bool
		wantErr   error
	}{
		{name: "the first request boots a VM and waits for it"},
		{name: "a failed boot answers unavailable instead of hanging", bootFails: true, wantErr: ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &fakeEngine{}
			rec := newFakeRecorder()
			c, dir := newTestController(t, e, noTicks, func(o *Options) {
				o.Metrics = rec
				o.MaxBackoff = time.Minute // no second try within the test
			})
			writeScaled(t, dir, "lazy", "minReplicas: 0\nidleTimeout: 1s\n")
			c.Sync("lazy")
			// minReplicas 0: the deploy still boots one VM, then idles to zero.
			waitState(t, c, "lazy", func(s Status) bool { return s.Replicas.Ready == 1 })
			tick(c, "lazy", time.Now().Add(time.Second))
			waitState(t, c, "lazy", func(s Status) bool { return s.State == StateIdle && s.Replicas.Ready == 0 })
			eventually(t, "VM stopped", func() bool { return len(e.running()) == 0 })
			if tt.bootFails {
				e.mu.Lock()
				e.fail = func(*vm.Spec) error { return errors.New("out of memory") }
				e.mu.Unlock()
			}

			in, err := acquire(t, c, "lazy")
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Acquire from zero: got %v, want %v", err, tt.wantErr)
			}
			s, _ := c.Get(context.Background(), "lazy")
			if tt.wantErr != nil {
				if s.State != StateFailed || !strings.Contains(s.LastError, "out of memory") {
					t.Errorf("status: got %s %q, want failed with the boot error", s.State, s.LastError)
				}
				return
			}
			in.Release(200)
			s, _ = c.Get(context.Background(), "lazy")
			if s.State != StateReady || s.Replicas.Ready != 1 || s.Invocations.ColdStarts != 1 {
				t.Errorf("status: got %s, %+v, %+v, want ready, 1 replica, 1 cold start", s.State, s.Replicas, s.Invocations)
			}
			if got := rec.get(rec.cold, "lazy"); got != 1 {
				t.Errorf("cold starts recorded: got %d, want 1", got)
			}
			if got := rec.get(rec.booted, "lazy"); got != 2 {
				t.Errorf("boots recorded: got %d, want 2 (deploy, activation)", got)
			}
			// A warm request is not a cold start.
			in, err = acquire(t, c, "lazy")
			if err != nil {
				t.Fatal(err)
			}
			in.Release(200)
			if s, _ := c.Get(context.Background(), "lazy"); s.Invocations.ColdStarts != 1 {
				t.Errorf("after a warm request: got %d cold starts, want 1", s.Invocations.ColdStarts)
			}
		})
	}
}

func TestUnhealthyReplicaReplaced(t *testing.T) {
	e := &fakeEngine{}
	prober := &fakeProber{}
	c, dir := newTestController(t, e, func(o *Options) {
		o.Prober = prober
		o.HealthInterval = 5 * time.Millisecond
		o.HealthThreshold = 3
	})
	writeFunction(t, dir, "sickly", "x\n")
	c.Sync("sickly")
	first := waitState(t, c, "sickly", func(s Status) bool { return s.Replicas.Ready == 1 }).VMID
	var sick *fakeMachine
	for _, m := range e.running() {
		if m.id == first {
			sick = m
		}
	}
	eventually(t, "first health check", func() bool { return prober.secretFor(sick.ControlEndpoint()) != "" })
	if got, want := prober.secretFor(sick.ControlEndpoint()), sick.spec.Agent.ControlSecret; got != want || got == sick.spec.Agent.Secret {
		t.Errorf("health check secret: got %q, want the VM's control secret, not its data secret", got)
	}
	if got := prober.secretFor(sick.Endpoint()); got != "" {
		t.Errorf("a health check went to the data endpoint (with %q), want only the control endpoint", got)
	}
	prober.setSick(sick.ControlEndpoint())
	s := waitState(t, c, "sickly", func(s Status) bool { return s.Replicas.Ready == 1 && s.VMID != first })
	if !strings.Contains(s.LastError, "health checks") {
		t.Errorf("last error: got %q, want it to say the health checks failed", s.LastError)
	}
	eventually(t, "unhealthy VM stopped", func() bool {
		select {
		case <-sick.stopped:
			return true
		default:
			return false
		}
	})
	in, err := acquire(t, c, "sickly")
	if err != nil {
		t.Fatal(err)
	}
	if in.VMID == first {
		t.Errorf("a request went to the unhealthy VM")
	}
	for _, m := range e.running() {
		if m.id == in.VMID && (in.Endpoint != m.Endpoint() || in.Secret != m.spec.Agent.Secret || in.Secret == m.spec.Agent.ControlSecret) {
			t.Errorf("the gateway's instance: got endpoint %q secret %q, want the data endpoint %q and data secret only",
				in.Endpoint, in.Secret, m.Endpoint())
		}
	}
	in.Release(200)
}

func TestRedeployKeepsReplicaCount(t *testing.T) {
	e := &fakeEngine{}
	c, dir := newTestController(t, e, noTicks)
	writeScaled(t, dir, "wide", "maxReplicas: 3\nconcurrency: 1\ntargetUtilization: 1\n")
	c.Sync("wide")
	v1 := waitState(t, c, "wide", func(s Status) bool { return s.Replicas.Ready == 1 }).Version
	old := leases(t, c, "wide", 3)
	writeFunction(t, dir, "wide", "print('v2')\n")
	c.Sync("wide")
	s := waitState(t, c, "wide", func(s Status) bool { return s.Version != v1 })
	// The new version took over with as many ready VMs as the old one had.
	c.mu.Lock()
	f := c.fns["wide"]
	newReady := f.count(instReady, f.spec.Digest)
	c.mu.Unlock()
	if newReady != 3 || s.Replicas.Draining != 3 {
		t.Errorf("at the swap: got %d new ready and %d draining, want 3 and 3", newReady, s.Replicas.Draining)
	}
	for _, l := range old {
		l.Release(200)
	}
	eventually(t, "old version stopped", func() bool { return len(e.running()) == 3 })
}

func TestRemoveForgetsMetrics(t *testing.T) {
	e := &fakeEngine{}
	rec := newFakeRecorder()
	c, dir := newTestController(t, e, func(o *Options) { o.Metrics = rec })
	writeFunction(t, dir, "gone", "x\n")
	c.Sync("gone")
	waitState(t, c, "gone", func(s Status) bool { return s.State == StateReady })
	if got := rec.get(rec.ready, "gone"); got != 1 {
		t.Errorf("replica gauge: got %d, want 1", got)
	}
	if got := rec.get(rec.booted, "gone"); got != 1 {
		t.Errorf("boots recorded: got %d, want 1", got)
	}
	if err := os.RemoveAll(filepath.Join(dir, "gone")); err != nil {
		t.Fatal(err)
	}
	c.Sync("gone")
	eventually(t, "function forgotten", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.forgotten) == 1 && rec.forgotten[0] == "gone"
	})
	eventually(t, "VMs stopped", func() bool { return len(e.running()) == 0 })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if _, ok := rec.ready["gone"]; ok {
		t.Errorf("a removed function's gauge came back: %v", rec.ready)
	}
}

func TestLatencySummary(t *testing.T) {
	msList := func(ms ...int) []time.Duration {
		var out []time.Duration
		for _, m := range ms {
			out = append(out, time.Duration(m)*time.Millisecond)
		}
		return out
	}
	many := make([]time.Duration, 0, 2*LatencyWindow)
	for i := range 2 * LatencyWindow {
		many = append(many, time.Duration(i+1)*time.Millisecond)
	}
	tests := []struct {
		name    string
		samples []time.Duration
		want    Latency
	}{
		{name: "none", want: Latency{}},
		{name: "one", samples: msList(7), want: Latency{Samples: 1, MeanMs: 7, P50Ms: 7, P99Ms: 7}},
		{name: "nearest rank", samples: msList(40, 10, 30, 20), want: Latency{Samples: 4, MeanMs: 25, P50Ms: 20, P99Ms: 40}},
		// Only the last LatencyWindow samples count: 1025ms to 2048ms.
		{name: "window", samples: many, want: Latency{Samples: LatencyWindow, MeanMs: 1536.5, P50Ms: 1536, P99Ms: 2038}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l latencies
			for _, d := range tt.samples {
				l.add(d)
			}
			if got := l.summary(); got != tt.want {
				t.Errorf("summary: got %+v, want %+v", got, tt.want)
			}
		})
	}
}
