package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/faasvm/appliance/internal/controller"
)

const testSecret = "s3cret"

// fakeFunctions stands in for the controller.
type fakeFunctions struct {
	// acquire answers Acquire; nil hands out an instance at endpoint.
	acquire  func(ctx context.Context, name string) (controller.Instance, error)
	endpoint string
	statuses []controller.Status
	logs     map[string]string
	panics   bool // List panics

	mu       sync.Mutex
	acquired []string
	released []int
	gotLines []int
}

var _ Functions = (*fakeFunctions)(nil)

func (f *fakeFunctions) instance(name string) controller.Instance {
	return controller.Instance{
		Function: name, VMID: "vm-1", Endpoint: f.endpoint, Secret: testSecret,
		Release: func(status int) {
			f.mu.Lock()
			f.released = append(f.released, status)
			f.mu.Unlock()
		},
	}
}

func (f *fakeFunctions) Acquire(ctx context.Context, name string) (controller.Instance, error) {
	f.mu.Lock()
	f.acquired = append(f.acquired, name)
	f.mu.Unlock()
	if f.acquire != nil {
		inst, err := f.acquire(ctx, name)
		if err == nil && inst.Release == nil {
			inst = f.instance(name)
		}
		return inst, err
	}
	return f.instance(name), nil
}

func (f *fakeFunctions) List(ctx context.Context) []controller.Status {
	if f.panics {
		panic("list exploded")
	}
	return f.statuses
}

func (f *fakeFunctions) Get(ctx context.Context, name string) (controller.Status, error) {
	for _, s := range f.statuses {
		if s.Name == name {
			return s, nil
		}
	}
	return controller.Status{}, fmt.Errorf("function %q: %w", name, controller.ErrNotFound)
}

func (f *fakeFunctions) Logs(ctx context.Context, name string, lines int) (string, error) {
	f.mu.Lock()
	f.gotLines = append(f.gotLines, lines)
	f.mu.Unlock()
	text, ok := f.logs[name]
	if !ok {
		return "", fmt.Errorf("function %q: %w", name, controller.ErrNotFound)
	}
	return text, nil
}

func (f *fakeFunctions) releases() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int(nil), f.released...)
}

func (f *fakeFunctions) acquires() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.acquired...)
}

// logBuffer collects the gateway's JSON log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// requests returns the access log lines.
func (b *logBuffer) requests(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["msg"] == "http request" {
			out = append(out, m)
		}
	}
	return out
}

// harness is a gateway in front of an upstream standing in for the agent.
type harness struct {
	gw   *Gateway
	fns  *fakeFunctions
	url  string        // the gateway's base URL
	host string        // the gateway's host:port
	done chan struct{} // one value per request the gateway finished
	logs *logBuffer
}

// newHarness starts upstream (nil: none) and a gateway whose instances
// point at it.
func newHarness(t *testing.T, opts Options, upstream http.Handler, fns *fakeFunctions) *harness {
	t.Helper()
	if fns == nil {
		fns = &fakeFunctions{}
	}
	if upstream != nil {
		up := httptest.NewServer(upstream)
		t.Cleanup(up.Close)
		fns.endpoint = up.Listener.Addr().String()
	}
	h := &harness{fns: fns, done: make(chan struct{}, 100), logs: &logBuffer{}}
	logger := slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h.gw = New(opts, fns, logger)
	handler := h.gw.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { h.done <- struct{}{} }()
		handler.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	h.url, h.host = srv.URL, srv.Listener.Addr().String()
	return h
}

// wait blocks until the gateway finished n requests (their deferred
// Release calls and log lines included).
func (h *harness) wait(t *testing.T, n int) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for range n {
		select {
		case <-h.done:
		case <-timeout:
			t.Fatalf("gateway did not finish %d request(s) within 10s", n)
		}
	}
}

// do sends a request and returns the status, headers and body.
func (h *harness) do(t *testing.T, req *http.Request) (int, http.Header, string) {
	t.Helper()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL, err)
	}
	h.wait(t, 1)
	return res.StatusCode, res.Header, string(body)
}

func (h *harness) newRequest(t *testing.T, method, path string, body io.Reader) *http.Request {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, method, h.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// deadEndpoint is an address nothing listens on.
func deadEndpoint(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// errorJSON decodes an error answer.
func errorJSON(t *testing.T, body string) errorBody {
	t.Helper()
	var e errorBody
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("error body %q is not JSON: %v", body, err)
	}
	return e
}
