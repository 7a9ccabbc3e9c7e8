package async

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/faasvm/appliance/internal/controller"
)

// fakeFunctions is the controller as the workers see it.
type fakeFunctions struct {
	mu  sync.Mutex
	fns map[string]controller.Status
}

func newFakeFunctions(names ...string) *fakeFunctions {
	f := &fakeFunctions{fns: map[string]controller.Status{}}
	for _, n := range names {
		f.set(n, 1, 4)
	}
	return f
}

func (f *fakeFunctions) set(name string, replicas, concurrency int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fns[name] = controller.Status{Name: name, State: controller.StateReady,
		Scale: controller.Scale{MaxReplicas: replicas, Concurrency: concurrency}}
}

func (f *fakeFunctions) Get(_ context.Context, name string) (controller.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.fns[name]
	if !ok {
		return controller.Status{}, fmt.Errorf("%w: %s", controller.ErrNotFound, name)
	}
	return st, nil
}

// seen is one request the fake gateway got.
type seen struct {
	method, path, query, host, remote, body string
	header                                  http.Header
}

// fakeGateway stands in for the gateway's /invoke handler. Per function:
//
//	echo      200, the body back, text/plain
//	flaky     503 twice per call id, then 200
//	always    503
//	broken    500
//	missing   404 (the function's own answer)
//	slow      blocks until release is closed (or the request ends), 200
//	<unknown> 404, as the gateway answers for a function it does not know
type fakeGateway struct {
	fns     *fakeFunctions
	release chan struct{}

	mu       sync.Mutex
	requests []seen
	tries    map[string]int // per call id

	running, peak atomic.Int64
}

func newFakeGateway(fns *fakeFunctions) *fakeGateway {
	return &fakeGateway{fns: fns, release: make(chan struct{}), tries: map[string]int{}}
}

func (g *fakeGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/invoke/")
	if !ok {
		http.Error(w, "not an invoke path", http.StatusNotFound)
		return
	}
	name, path, _ := strings.Cut(rest, "/")
	body, _ := io.ReadAll(r.Body)
	id := r.Header.Get(CallIDHeader)
	g.mu.Lock()
	g.requests = append(g.requests, seen{method: r.Method, path: "/" + path, query: r.URL.RawQuery, host: r.Host,
		remote: r.RemoteAddr, body: string(body), header: r.Header.Clone()})
	g.tries[id]++
	tries := g.tries[id]
	g.mu.Unlock()
	if _, err := g.fns.Get(r.Context(), name); err != nil {
		http.Error(w, `{"error":"function not found"}`, http.StatusNotFound)
		return
	}
	switch name {
	case "echo":
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write(body)
	case "flaky":
		if tries <= 2 {
			http.Error(w, "try again", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "third time lucky")
	case "always":
		http.Error(w, "never works", http.StatusServiceUnavailable)
	case "broken":
		http.Error(w, "handler raised", http.StatusInternalServerError)
	case "missing":
		http.Error(w, "no such page", http.StatusNotFound)
	case "slow":
		n := g.running.Add(1)
		for p := g.peak.Load(); n > p && !g.peak.CompareAndSwap(p, n); p = g.peak.Load() {
		}
		defer g.running.Add(-1)
		select {
		case <-g.release:
			_, _ = io.WriteString(w, "slept")
		case <-r.Context().Done():
		}
	default:
		http.Error(w, "unexpected function", http.StatusTeapot)
	}
}

func (g *fakeGateway) requestsFor(id string) []seen {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []seen
	for _, s := range g.requests {
		if s.header.Get(CallIDHeader) == id {
			out = append(out, s)
		}
	}
	return out
}

// fakeRecorder counts what the queue reports.
type fakeRecorder struct {
	mu                                    sync.Mutex
	submitted, processed, retried, deadLt map[string]int
}

func newFakeRecorder() *fakeRecorder {
	return &fakeRecorder{submitted: map[string]int{}, processed: map[string]int{}, retried: map[string]int{}, deadLt: map[string]int{}}
}

func (r *fakeRecorder) inc(m map[string]int, fn string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m[fn]++
}
func (r *fakeRecorder) AsyncSubmitted(fn string)    { r.inc(r.submitted, fn) }
func (r *fakeRecorder) AsyncProcessed(fn string)    { r.inc(r.processed, fn) }
func (r *fakeRecorder) AsyncRetried(fn string)      { r.inc(r.retried, fn) }
func (r *fakeRecorder) AsyncDeadLettered(fn string) { r.inc(r.deadLt, fn) }
func (r *fakeRecorder) AsyncQueue(string, int, int) {}
func (r *fakeRecorder) get(m map[string]int, fn string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return m[fn]
}

// testOptions are fast settings for tests, with an embedded server in a
// fresh directory.
func testOptions(t *testing.T) Options {
	return Options{
		StoreDir:      t.TempDir(),
		MaxRetries:    2,
		RetryBackoff:  10 * time.Millisecond,
		AckWait:       3 * time.Second,
		StatsInterval: 50 * time.Millisecond,
		DrainTimeout:  time.Second,
	}
}

// openQueue opens a queue and closes it at the end of the test.
func openQueue(t *testing.T, opts Options) *Queue {
	t.Helper()
	q, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := q.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return q
}

func startQueue(t *testing.T, q *Queue, h http.Handler, fns Functions) {
	t.Helper()
	if err := q.Start(context.Background(), h, fns); err != nil {
		t.Fatalf("Start: %v", err)
	}
}

func enqueue(t *testing.T, q *Queue, c Call) string {
	t.Helper()
	if c.Method == "" {
		c.Method = http.MethodPost
	}
	if c.Path == "" {
		c.Path = "/"
	}
	id, err := q.Enqueue(context.Background(), c)
	if err != nil {
		t.Fatalf("Enqueue(%s): %v", c.Function, err)
	}
	return id
}

// waitResult polls the call's result until cond holds, bounded.
func waitResult(t *testing.T, q *Queue, id string, what string, cond func(Result) bool) Result {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, err := q.Result(context.Background(), id)
		if err == nil && cond(r) {
			return r
		}
		if err != nil && !errors.Is(err, ErrCallNotFound) {
			t.Fatalf("Result(%s): %v", id, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("call %s: not %s within 20s; last %+v (err %v)", id, what, r, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func final(r Result) bool {
	return r.State == StateDone || r.State == StateFailed || r.State == StateDeadLettered
}
