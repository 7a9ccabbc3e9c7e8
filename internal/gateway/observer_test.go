package gateway

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/faasvm/appliance/internal/controller"
)

// fakeObserver records what the gateway reports.
type fakeObserver struct {
	mu      sync.Mutex
	started []string
	done    []observed
}

type observed struct {
	function string
	status   int
	took     time.Duration
}

var _ Observer = (*fakeObserver)(nil)

func (o *fakeObserver) InvocationStarted(function string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.started = append(o.started, function)
}

func (o *fakeObserver) InvocationDone(function string, status int, took time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.done = append(o.done, observed{function, status, took})
}

func TestObserverSeesEveryInvocation(t *testing.T) {
	slow := func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond) // the duration must cover the upstream's time
		io.WriteString(w, "ok")
	}
	tests := []struct {
		name       string
		acquire    func(ctx context.Context, name string) (controller.Instance, error)
		path       string
		wantName   string
		wantStatus int
		minTook    time.Duration
	}{
		{name: "answered", path: "/invoke/fn/x", wantName: "fn", wantStatus: 200, minTook: 20 * time.Millisecond},
		{name: "queue full", path: "/invoke/busy",
			acquire: func(context.Context, string) (controller.Instance, error) {
				return controller.Instance{}, fmt.Errorf("busy: %w", controller.ErrOverloaded)
			},
			wantName: "busy", wantStatus: 429},
		{name: "unknown name is reported too", path: "/invoke/nope",
			acquire: func(context.Context, string) (controller.Instance, error) {
				return controller.Instance{}, fmt.Errorf("nope: %w", controller.ErrNotFound)
			},
			wantName: "nope", wantStatus: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obs := &fakeObserver{}
			h := newHarness(t, Options{Observer: obs}, http.HandlerFunc(slow), &fakeFunctions{acquire: tt.acquire})
			status, _, body := h.do(t, h.newRequest(t, "GET", tt.path, nil))
			if status != tt.wantStatus {
				t.Fatalf("status: got %d (%s), want %d", status, body, tt.wantStatus)
			}
			obs.mu.Lock()
			defer obs.mu.Unlock()
			if len(obs.started) != 1 || obs.started[0] != tt.wantName {
				t.Errorf("started: got %v, want [%s]", obs.started, tt.wantName)
			}
			if len(obs.done) != 1 {
				t.Fatalf("done: got %d records, want 1", len(obs.done))
			}
			d := obs.done[0]
			if d.function != tt.wantName || d.status != tt.wantStatus || d.took < tt.minTook {
				t.Errorf("done: got %+v, want function %s status %d took >= %s", d, tt.wantName, tt.wantStatus, tt.minTook)
			}
		})
	}
}

func TestMountAPI(t *testing.T) {
	metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "faas_up 1\n") })
	tests := []struct {
		name       string
		token      string // the gateway's
		auth       string // the request's Authorization
		wantStatus int
	}{
		{name: "no token set: open", wantStatus: 200},
		{name: "token set, none sent", token: "tok", wantStatus: 401},
		{name: "token set, wrong one", token: "tok", auth: "Bearer nope", wantStatus: 401},
		{name: "token set, right one", token: "tok", auth: "Bearer tok", wantStatus: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Options{APIToken: tt.token}, nil, &fakeFunctions{})
			h.gw.MountAPI("/metrics", metrics)
			req := h.newRequest(t, "GET", "/metrics", nil)
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			status, _, body := h.do(t, req)
			if status != tt.wantStatus {
				t.Errorf("GET /metrics: got %d %q, want %d", status, body, tt.wantStatus)
			}
			if status == 200 && body != "faas_up 1\n" {
				t.Errorf("GET /metrics body: got %q, want the mounted handler's", body)
			}
		})
	}
}
