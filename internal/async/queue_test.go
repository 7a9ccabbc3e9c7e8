package async

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/faasvm/appliance/internal/async/natstest"
)

func TestCallKeepsTheRequest(t *testing.T) {
	fns := newFakeFunctions("echo")
	gw := newFakeGateway(fns)
	rec := newFakeRecorder()
	opts := testOptions(t)
	opts.Metrics = rec
	q := openQueue(t, opts)
	startQueue(t, q, gw, fns)

	id := enqueue(t, q, Call{
		Function: "echo", Method: http.MethodPut, Path: "/sub/p%2Fq", Query: "a=1&b=two",
		Header: http.Header{"X-Custom": {"yes"}, "Prefer": {"respond-async"}, "X-Callback-Url": {"http://x"}, CallIDHeader: {"spoofed"}},
		Host:   "example.test", RemoteAddr: "192.0.2.7:5555", Body: []byte("hello\nworld"),
	})
	r := waitResult(t, q, id, "done", final)
	if r.State != StateDone || r.StatusCode != 200 || r.Body != "hello\nworld" || r.Attempts != 1 || r.ContentType != "text/plain" {
		t.Errorf("result: got %+v, want done 200 with the body back after 1 attempt", r)
	}
	reqs := gw.requestsFor(id)
	if len(reqs) != 1 {
		t.Fatalf("requests for %s: got %d, want 1", id, len(reqs))
	}
	got := reqs[0]
	checks := []struct{ what, got, want string }{
		{"method", got.method, http.MethodPut},
		{"path", got.path, "/sub/p/q"},
		{"query", got.query, "a=1&b=two"},
		{"host", got.host, "example.test"},
		{"remote", got.remote, "192.0.2.7:5555"},
		{"body", got.body, "hello\nworld"},
		{"X-Custom", got.header.Get("X-Custom"), "yes"},
		{"Prefer", got.header.Get("Prefer"), ""},
		{"X-Callback-Url", got.header.Get("X-Callback-Url"), ""},
		{CallIDHeader, got.header.Get(CallIDHeader), id},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.what, c.got, c.want)
		}
	}
	// Counted once acknowledged, just after the result is recorded.
	eventually(t, "one call submitted and processed", func() bool {
		return rec.get(rec.submitted, "echo") == 1 && rec.get(rec.processed, "echo") == 1
	})
}

func TestOutcomes(t *testing.T) {
	fns := newFakeFunctions("flaky", "always", "broken", "missing", "gone")
	gw := newFakeGateway(fns)
	rec := newFakeRecorder()
	opts := testOptions(t)
	opts.Metrics = rec
	q := openQueue(t, opts)
	startQueue(t, q, gw, fns)

	tests := []struct {
		function     string
		wantState    string
		wantStatus   int
		wantAttempts int
		wantErr      string
		wantBody     string
	}{
		{function: "flaky", wantState: StateDone, wantStatus: 200, wantAttempts: 3, wantBody: "third time lucky"},
		{function: "always", wantState: StateDeadLettered, wantStatus: 503, wantAttempts: 3, wantErr: "status 503: never works"},
		{function: "broken", wantState: StateFailed, wantStatus: 500, wantAttempts: 1, wantErr: "status 500"},
		{function: "missing", wantState: StateFailed, wantStatus: 404, wantAttempts: 1, wantErr: "no such page"},
		// Removed after the submit: its calls end in the dead letters.
		{function: "gone", wantState: StateDeadLettered, wantStatus: 404, wantAttempts: 3, wantErr: "function not found"},
	}
	ids := map[string]string{}
	for _, tt := range tests {
		ids[tt.function] = enqueue(t, q, Call{Function: tt.function})
	}
	fns.mu.Lock()
	delete(fns.fns, "gone")
	fns.mu.Unlock()
	for _, tt := range tests {
		t.Run(tt.function, func(t *testing.T) {
			r := waitResult(t, q, ids[tt.function], "final", final)
			if r.State != tt.wantState || r.StatusCode != tt.wantStatus || r.Attempts != tt.wantAttempts || r.MaxAttempts != 3 {
				t.Errorf("got %s %d after %d/%d attempts, want %s %d after %d/3", r.State, r.StatusCode, r.Attempts, r.MaxAttempts,
					tt.wantState, tt.wantStatus, tt.wantAttempts)
			}
			if !strings.Contains(r.Error, tt.wantErr) || (tt.wantErr == "" && r.Error != "") {
				t.Errorf("error: got %q, want it to contain %q", r.Error, tt.wantErr)
			}
			if tt.wantBody != "" && r.Body != tt.wantBody {
				t.Errorf("body: got %q, want %q", r.Body, tt.wantBody)
			}
			if n := len(gw.requestsFor(ids[tt.function])); n != tt.wantAttempts {
				t.Errorf("deliveries: got %d, want %d", n, tt.wantAttempts)
			}
		})
	}

	t.Run("dead letters carry the call and its last error", func(t *testing.T) {
		s, err := q.js.Stream(context.Background(), deadStream)
		if err != nil {
			t.Fatal(err)
		}
		m, err := s.GetLastMsgForSubject(context.Background(), deadSubject+"always")
		if err != nil {
			t.Fatalf("dead letter of always: %v", err)
		}
		env, _, err := decodeCall(m.Data)
		if err != nil || env.ID != ids["always"] {
			t.Errorf("dead letter: got id %q (err %v), want %s", env.ID, err, ids["always"])
		}
		if got := m.Header.Get("Faas-Error"); !strings.Contains(got, "503") || m.Header.Get("Faas-Attempts") != "3" {
			t.Errorf("dead letter headers: got error %q attempts %q", got, m.Header.Get("Faas-Attempts"))
		}
	})
	t.Run("counters", func(t *testing.T) {
		eventually(t, "the dead letter counted", func() bool { return rec.get(rec.deadLt, "always") == 1 })
		if got := rec.get(rec.retried, "flaky"); got != 2 {
			t.Errorf("flaky retries: got %d, want 2", got)
		}
		if got := rec.get(rec.deadLt, "always"); got != 1 {
			t.Errorf("always dead letters: got %d, want 1", got)
		}
		var always FunctionStats
		for _, s := range q.Stats(context.Background()) {
			if s.Function == "always" {
				always = s
			}
		}
		if always.DeadLetters != 1 || always.Retries != 2 || always.Queued != 0 || always.InFlight != 0 {
			t.Errorf("stats of always: got %+v, want 2 retries, 1 dead letter, nothing queued", always)
		}
	})
}

func TestCapacityBoundsInFlight(t *testing.T) {
	fns := newFakeFunctions()
	fns.set("slow", 1, 3)
	gw := newFakeGateway(fns)
	q := openQueue(t, testOptions(t))
	startQueue(t, q, gw, fns)

	var ids []string
	for range 12 {
		ids = append(ids, enqueue(t, q, Call{Function: "slow"}))
	}
	eventually(t, "3 calls running", func() bool { return gw.running.Load() == 3 })
	st := q.Stats(context.Background())
	if len(st) != 1 || st[0].InFlight != 3 || st[0].Queued != 9 {
		t.Errorf("stats while 3 run: got %+v, want 3 in flight and 9 queued", st)
	}
	close(gw.release)
	for _, id := range ids {
		waitResult(t, q, id, "done", func(r Result) bool { return r.State == StateDone })
	}
	if p := gw.peak.Load(); p != 3 {
		t.Errorf("peak concurrency: got %d, want 3 (maxReplicas 1 × concurrency 3)", p)
	}
}

func TestQueuedCallsSurviveARestart(t *testing.T) {
	fns := newFakeFunctions()
	fns.set("slow", 1, 2)
	opts := testOptions(t)
	q1, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	gw1 := newFakeGateway(fns)
	startQueue(t, q1, gw1, fns)
	var ids []string
	for range 10 {
		ids = append(ids, enqueue(t, q1, Call{Function: "slow"}))
	}
	eventually(t, "2 calls running", func() bool { return gw1.running.Load() == 2 })
	// Shut down while two run and eight wait: the running ones are
	// interrupted (they never answered) and must run again.
	if err := q1.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}

	q2 := openQueue(t, opts)
	for _, id := range ids {
		if r, err := q2.Result(context.Background(), id); err != nil || r.State != StateQueued {
			t.Errorf("after the restart %s: got %+v (err %v), want queued", id, r, err)
		}
	}
	gw2 := newFakeGateway(fns)
	close(gw2.release)
	startQueue(t, q2, gw2, fns)
	for _, id := range ids {
		r := waitResult(t, q2, id, "done", func(r Result) bool { return r.State == StateDone })
		if n := len(gw2.requestsFor(id)); n != 1 {
			t.Errorf("%s: delivered %d times after the restart, want 1", id, n)
		}
		_ = r
	}
}

func TestEnqueueRefuses(t *testing.T) {
	opts := testOptions(t)
	opts.MaxBody = 1 << 10
	opts.MaxBytes = 256 << 10
	allow, err := ParseAllowlist("hooks.example.com")
	if err != nil {
		t.Fatal(err)
	}
	opts.CallbackHosts = allow
	q := openQueue(t, opts) // not started: nothing is consumed

	t.Run("callback host not allowed", func(t *testing.T) {
		_, err := q.Enqueue(context.Background(), Call{Function: "echo", Method: "POST", Path: "/", CallbackURL: "http://169.254.169.254/latest"})
		if !errors.Is(err, ErrCallbackRefused) {
			t.Errorf("got %v, want ErrCallbackRefused", err)
		}
	})
	t.Run("larger than a message", func(t *testing.T) {
		_, err := q.Enqueue(context.Background(), Call{Function: "echo", Method: "POST", Path: "/", Body: make([]byte, q.payloadLimit)})
		var tooLarge *http.MaxBytesError
		if !errors.As(err, &tooLarge) {
			t.Errorf("got %v, want *http.MaxBytesError", err)
		}
	})
	t.Run("queue full", func(t *testing.T) {
		body := make([]byte, 32<<10)
		for i := range 20 {
			_, err := q.Enqueue(context.Background(), Call{Function: "echo", Method: "POST", Path: "/", Body: body})
			if errors.Is(err, ErrQueueFull) {
				if i < 4 {
					t.Errorf("full after %d calls of 32 KiB, want room for about 8", i)
				}
				return
			}
			if err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
		}
		t.Errorf("20 calls of 32 KiB fit a 256 KiB queue")
	})
}

func TestResultsExpire(t *testing.T) {
	fns := newFakeFunctions("echo")
	opts := testOptions(t)
	opts.ResultTTL = time.Second
	q := openQueue(t, opts)
	startQueue(t, q, newFakeGateway(fns), fns)
	id := enqueue(t, q, Call{Function: "echo", Body: []byte("x")})
	waitResult(t, q, id, "done", func(r Result) bool { return r.State == StateDone })
	eventually(t, "the result expired", func() bool {
		_, err := q.Result(context.Background(), id)
		return errors.Is(err, ErrCallNotFound)
	})
	if _, err := q.Result(context.Background(), "not-a-call-id"); !errors.Is(err, ErrCallNotFound) {
		t.Errorf("a malformed id: got %v, want ErrCallNotFound", err)
	}
}

func TestExternalServer(t *testing.T) {
	url := natstest.Start(t)
	fns := newFakeFunctions("echo")
	opts := testOptions(t)
	opts.URL = url
	opts.StoreDir = ""
	q := openQueue(t, opts)
	startQueue(t, q, newFakeGateway(fns), fns)
	id := enqueue(t, q, Call{Function: "echo", Body: []byte("over the wire")})
	if r := waitResult(t, q, id, "done", final); r.State != StateDone || r.Body != "over the wire" {
		t.Errorf("result: got %+v, want done with the body", r)
	}
	// The queue lives on that server: look at it with a client of our own.
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(context.Background(), callsStream)
	if err != nil {
		t.Fatalf("stream %s on the external server: %v", callsStream, err)
	}
	if _, err := s.Consumer(context.Background(), consumerPref+"echo"); err != nil {
		t.Errorf("consumer of echo on the external server: %v", err)
	}
	kv, err := js.KeyValue(context.Background(), resultsBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(context.Background(), id); err != nil {
		t.Errorf("result %s in the external server's bucket: %v", id, err)
	}
}

// eventually polls cond until it holds, bounded.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkEnqueue measures durable submits per second on the embedded
// server (the gateway's share is measured by scripts/bench-async).
func BenchmarkEnqueue(b *testing.B) {
	q, err := Open(context.Background(), Options{StoreDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close(context.Background())
	body := []byte(`{"hello":"world"}`)
	var mu sync.Mutex
	var firstErr error
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := q.Enqueue(context.Background(), Call{Function: "bench", Method: "POST", Path: "/", Body: body}); err != nil {
				mu.Lock()
				firstErr = cmpErr(firstErr, err)
				mu.Unlock()
			}
		}
	})
	if firstErr != nil {
		b.Fatal(firstErr)
	}
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return fmt.Errorf("enqueue: %w", b)
}
