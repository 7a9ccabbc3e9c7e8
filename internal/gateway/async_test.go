package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/faasvm/appliance/guest/protocol"
	"github.com/faasvm/appliance/internal/async"
	"github.com/faasvm/appliance/internal/controller"
)

// fakeQueue stands in for internal/async.
type fakeQueue struct {
	err     error // Enqueue's answer
	results map[string]async.Result

	mu    sync.Mutex
	calls []async.Call
}

var _ Queue = (*fakeQueue)(nil)

func (q *fakeQueue) Enqueue(_ context.Context, c async.Call) (string, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return "", q.err
	}
	q.calls = append(q.calls, c)
	return fmt.Sprintf("00000000-0000-4000-8000-%012d", len(q.calls)), nil
}

func (q *fakeQueue) Result(_ context.Context, id string) (async.Result, error) {
	r, ok := q.results[id]
	if !ok {
		return async.Result{}, fmt.Errorf("%w: %s", async.ErrCallNotFound, id)
	}
	return r, nil
}

func (q *fakeQueue) Stats(context.Context) []async.FunctionStats {
	return []async.FunctionStats{{Function: "echo", Queued: 3, InFlight: 1}}
}

func (q *fakeQueue) got() []async.Call {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]async.Call(nil), q.calls...)
}

func asyncFunctions() *fakeFunctions {
	return &fakeFunctions{statuses: []controller.Status{
		{Name: "echo", State: controller.StateReady, Scale: controller.Scale{MaxReplicas: 1, Concurrency: 4}},
		{Name: "bad", State: controller.StateInvalid, LastError: "function.yaml: unknown field"},
	}}
}

func TestAsyncSubmit(t *testing.T) {
	q := &fakeQueue{}
	fns := asyncFunctions()
	h := newHarness(t, Options{Queue: q}, nil, fns)

	req := h.newRequest(t, http.MethodPut, "/async-function/echo/sub/a%2Fb?x=1&y=2", strings.NewReader("payload"))
	req.Header.Set("X-Custom", "yes")
	req.Header.Set("X-Callback-Url", "http://127.0.0.1:9/cb")
	req.Header.Set("X-Call-Id", "spoofed")
	code, hdr, body := h.do(t, req)
	if code != http.StatusAccepted {
		t.Fatalf("got %d %q, want 202", code, body)
	}
	var accepted callAccepted
	if err := json.Unmarshal([]byte(body), &accepted); err != nil {
		t.Fatalf("202 body %q: %v", body, err)
	}
	id := hdr.Get("X-Call-Id")
	if id == "" || accepted.ID != id || hdr.Get("Location") != "/api/calls/"+id || accepted.Result != "/api/calls/"+id || accepted.State != "queued" {
		t.Errorf("202: got X-Call-Id %q Location %q body %+v", id, hdr.Get("Location"), accepted)
	}
	calls := q.got()
	if len(calls) != 1 {
		t.Fatalf("queued calls: got %d, want 1", len(calls))
	}
	c := calls[0]
	checks := []struct{ what, got, want string }{
		{"function", c.Function, "echo"},
		{"method", c.Method, http.MethodPut},
		{"path", c.Path, "/sub/a%2Fb"},
		{"query", c.Query, "x=1&y=2"},
		{"body", string(c.Body), "payload"},
		{"callback", c.CallbackURL, "http://127.0.0.1:9/cb"},
		{"X-Custom", c.Header.Get("X-Custom"), "yes"},
		{"X-Callback-Url kept", c.Header.Get("X-Callback-Url"), ""},
		{"X-Call-Id kept", c.Header.Get("X-Call-Id"), ""},
		{"host", c.Host, h.host},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s: got %q, want %q", ck.what, ck.got, ck.want)
		}
	}
	if !strings.HasPrefix(c.RemoteAddr, "127.0.0.1:") {
		t.Errorf("remote addr: got %q, want the client's", c.RemoteAddr)
	}
	if len(fns.acquires()) != 0 {
		t.Errorf("an async submit acquired an instance: %v", fns.acquires())
	}
}

func TestPreferRespondAsync(t *testing.T) {
	tests := []struct {
		prefer    []string
		wantQueue bool
	}{
		{prefer: []string{"respond-async"}, wantQueue: true},
		{prefer: []string{"wait=10, Respond-Async"}, wantQueue: true},
		{prefer: []string{"return=minimal", "respond-async; x=1"}, wantQueue: true},
		{prefer: nil, wantQueue: false},
		{prefer: []string{"return=minimal"}, wantQueue: false},
		{prefer: []string{"respond-asynchronously"}, wantQueue: false},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.prefer, "|"), func(t *testing.T) {
			q := &fakeQueue{}
			fns := asyncFunctions()
			h := newHarness(t, Options{Queue: q}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.WriteString(w, "sync")
			}), fns)
			req := h.newRequest(t, http.MethodPost, "/invoke/echo/p", strings.NewReader("b"))
			for _, p := range tt.prefer {
				req.Header.Add("Prefer", p)
			}
			code, hdr, body := h.do(t, req)
			queued := len(q.got()) == 1
			if queued != tt.wantQueue {
				t.Fatalf("queued: got %v (%d %q), want %v", queued, code, body, tt.wantQueue)
			}
			if tt.wantQueue && (code != 202 || hdr.Get("Preference-Applied") != "respond-async" || q.got()[0].Path != "/p" || q.got()[0].Header.Get("Prefer") != "") {
				t.Errorf("async: got %d %v, call %+v", code, hdr, q.got()[0])
			}
			if !tt.wantQueue && (code != 200 || body != "sync") {
				t.Errorf("sync: got %d %q, want 200 sync", code, body)
			}
		})
	}
}

func TestAsyncSubmitErrors(t *testing.T) {
	tests := []struct {
		name       string
		path       string
		body       string
		chunked    bool
		queueErr   error
		noQueue    bool
		wantStatus int
		wantErr    string
	}{
		{name: "unknown function", path: "/async-function/nope", wantStatus: 404, wantErr: "not found"},
		{name: "no name", path: "/async-function/", wantStatus: 404},
		{name: "invalid function", path: "/async-function/bad", wantStatus: 503, wantErr: "unknown field"},
		{name: "body over the limit", path: "/async-function/echo", body: strings.Repeat("x", 100), wantStatus: 413, wantErr: "64B limit"},
		{name: "chunked body over the limit", path: "/async-function/echo", body: strings.Repeat("x", 100), chunked: true, wantStatus: 413},
		{name: "callback refused", path: "/async-function/echo", queueErr: fmt.Errorf("%w: host %q is not in callback_hosts", async.ErrCallbackRefused, "x"), wantStatus: 400, wantErr: "callback_hosts"},
		{name: "queue full", path: "/async-function/echo", queueErr: fmt.Errorf("%w: limit", async.ErrQueueFull), wantStatus: 429},
		{name: "nats down", path: "/async-function/echo", queueErr: fmt.Errorf("%w: dial tcp 10.9.9.9:4222", async.ErrUnavailable), wantStatus: 503, wantErr: "async queue unavailable"},
		{name: "too large for a message", path: "/async-function/echo", queueErr: &http.MaxBytesError{Limit: 32}, wantStatus: 413},
		{name: "queue disabled", path: "/async-function/echo", noQueue: true, wantStatus: 503, wantErr: "not enabled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := &fakeQueue{err: tt.queueErr}
			opts := Options{Queue: q, MaxBody: 64}
			if tt.noQueue {
				opts.Queue = nil
			}
			h := newHarness(t, opts, nil, asyncFunctions())
			var body io.Reader = strings.NewReader(tt.body)
			if tt.chunked {
				body = io.MultiReader(body) // no length: sent chunked
			}
			code, hdr, got := h.do(t, h.newRequest(t, http.MethodPost, tt.path, body))
			if code != tt.wantStatus {
				t.Fatalf("got %d %q, want %d", code, got, tt.wantStatus)
			}
			e := errorJSON(t, got)
			if !strings.Contains(e.Error, tt.wantErr) || strings.Contains(e.Error, "10.9.9.9") {
				t.Errorf("error: got %q, want it to contain %q (and no server address)", e.Error, tt.wantErr)
			}
			if code == 429 && hdr.Get("Retry-After") == "" {
				t.Errorf("429 without Retry-After")
			}
		})
	}
}

func TestCallsAPI(t *testing.T) {
	id := "00000000-0000-4000-8000-000000000042"
	q := &fakeQueue{results: map[string]async.Result{id: {ID: id, Function: "echo", State: async.StateDone, Attempts: 1, StatusCode: 200, Body: "hi"}}}
	h := newHarness(t, Options{Queue: q, APIToken: "tok"}, nil, asyncFunctions())

	get := func(path string, token bool) (int, string) {
		req := h.newRequest(t, http.MethodGet, path, nil)
		if token {
			req.Header.Set("Authorization", "Bearer tok")
		}
		code, _, body := h.do(t, req)
		return code, body
	}
	if code, _ := get("/api/calls/"+id, false); code != 401 {
		t.Errorf("without the token: got %d, want 401", code)
	}
	code, body := get("/api/calls/"+id, true)
	var r async.Result
	if err := json.Unmarshal([]byte(body), &r); err != nil || code != 200 || r.State != async.StateDone || r.Body != "hi" {
		t.Errorf("GET call: got %d %q (err %v)", code, body, err)
	}
	if code, body := get("/api/calls/00000000-0000-4000-8000-000000000099", true); code != 404 || !strings.Contains(body, "call not found") {
		t.Errorf("unknown call: got %d %q, want 404", code, body)
	}
	code, body = get("/api/queue", true)
	var list queueList
	if err := json.Unmarshal([]byte(body), &list); err != nil || code != 200 || len(list.Functions) != 1 || list.Functions[0].Queued != 3 {
		t.Errorf("GET /api/queue: got %d %q (err %v)", code, body, err)
	}
	if code, _ := get("/api/queue", false); code != 401 {
		t.Errorf("/api/queue without the token: got %d, want 401", code)
	}
}

// TestAsyncThroughTheGateway queues calls on a real (embedded) queue whose
// workers deliver them through the gateway's own handler: the call takes
// the synchronous path to the instance, with the client's address.
func TestAsyncThroughTheGateway(t *testing.T) {
	type got struct {
		path, query, body, forwardedFor, callID, secret string
	}
	seen := make(chan got, 10)
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		seen <- got{r.URL.Path, r.URL.RawQuery, string(b), r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Call-Id"), r.Header.Get(protocol.SecretHeader)}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "done: "+string(b))
	})
	fns := asyncFunctions()
	q, err := async.Open(context.Background(), async.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Close(context.Background()) })
	h := newHarness(t, Options{Queue: q}, upstream, fns)
	if err := q.Start(context.Background(), h.gw.Handler(), fns); err != nil {
		t.Fatal(err)
	}

	code, hdr, body := h.do(t, h.newRequest(t, http.MethodPost, "/async-function/echo/p?x=1", strings.NewReader("work")))
	if code != 202 {
		t.Fatalf("submit: got %d %q", code, body)
	}
	id := hdr.Get("X-Call-Id")
	select {
	case g := <-seen:
		want := got{"/p", "x=1", "work", "127.0.0.1", id, testSecret}
		if g != want {
			t.Errorf("the instance saw %+v, want %+v", g, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call never reached the instance")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := q.Result(context.Background(), id)
		if err == nil && r.State == async.StateDone {
			if r.StatusCode != 200 || r.Body != "done: work" {
				t.Errorf("result: got %+v", r)
			}
			break
		}
		if err != nil && !errors.Is(err, async.ErrCallNotFound) || time.Now().After(deadline) {
			t.Fatalf("result: %+v %v", r, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if rel := fns.releases(); len(rel) != 1 || rel[0] != 200 {
		t.Errorf("releases: got %v, want one with 200", rel)
	}
}
