package gateway

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/faasvm/appliance/internal/controller"
)

func TestAPIAuth(t *testing.T) {
	tests := []struct {
		name       string
		token      string // configured
		path       string
		auth       string // Authorization header sent
		wantStatus int
		wantChall  string // WWW-Authenticate
	}{
		{name: "no token configured, no header", path: "/api/functions", wantStatus: 200},
		{name: "no token configured, any header", path: "/api/functions", auth: "Bearer whatever", wantStatus: 200},
		{name: "missing", token: "tok", path: "/api/functions", wantStatus: 401, wantChall: `Bearer realm="faas"`},
		{name: "wrong token", token: "tok", path: "/api/functions", auth: "Bearer nope", wantStatus: 401,
			wantChall: `Bearer realm="faas", error="invalid_token"`},
		{name: "token prefix", token: "tok", path: "/api/functions", auth: "Bearer to", wantStatus: 401,
			wantChall: `Bearer realm="faas", error="invalid_token"`},
		{name: "wrong scheme", token: "tok", path: "/api/functions", auth: "Basic dG9rOg==", wantStatus: 401,
			wantChall: `Bearer realm="faas"`},
		{name: "empty bearer", token: "tok", path: "/api/functions", auth: "Bearer ", wantStatus: 401,
			wantChall: `Bearer realm="faas"`},
		{name: "good", token: "tok", path: "/api/functions", auth: "Bearer tok", wantStatus: 200},
		{name: "scheme is case-insensitive", token: "tok", path: "/api/functions", auth: "bearer tok", wantStatus: 200},
		{name: "one function", token: "tok", path: "/api/functions/hello", auth: "Bearer tok", wantStatus: 200},
		{name: "logs", token: "tok", path: "/api/functions/hello/logs", wantStatus: 401, wantChall: `Bearer realm="faas"`},
		{name: "console", token: "tok", path: "/api/functions/hello/console", wantStatus: 401, wantChall: `Bearer realm="faas"`},
		{name: "unknown api route", token: "tok", path: "/api/nope", wantStatus: 404},
		{name: "invoke is never behind the token", token: "tok", path: "/invoke/hello", wantStatus: 200},
		{name: "healthz is never behind the token", token: "tok", path: "/healthz", wantStatus: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fns := &fakeFunctions{statuses: []controller.Status{{Name: "hello", State: controller.StateReady}}}
			upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hi") })
			h := newHarness(t, Options{APIToken: tt.token}, upstream, fns)
			req := h.newRequest(t, "GET", tt.path, nil)
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			status, header, body := h.do(t, req)
			if status != tt.wantStatus {
				t.Fatalf("GET %s: got status %d (%s), want %d", tt.path, status, body, tt.wantStatus)
			}
			if got := header.Get("WWW-Authenticate"); got != tt.wantChall {
				t.Errorf("WWW-Authenticate: got %q, want %q", got, tt.wantChall)
			}
			if status == 401 {
				if e := errorJSON(t, body); e.Error != "missing or invalid API token" {
					t.Errorf("error: got %q, want %q", e.Error, "missing or invalid API token")
				}
			}
		})
	}
}

func TestAPIFunctions(t *testing.T) {
	started := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	// Functions.List returns the functions sorted by name; the gateway keeps that order.
	statuses := []controller.Status{
		{Name: "alpha", State: controller.StateReady, Runtime: "python3", VMID: "vm-1", StartedAt: started,
			Invocations: controller.Counts{Total: 3, Errors: 1}, Replicas: controller.Replicas{Ready: 1}},
		{Name: "zeta", State: controller.StateFailed, LastError: "boot: agent never answered"},
	}
	t.Run("list keeps the order", func(t *testing.T) {
		h := newHarness(t, Options{}, nil, &fakeFunctions{statuses: statuses})
		status, header, body := h.do(t, h.newRequest(t, "GET", "/api/functions", nil))
		if status != 200 || !strings.HasPrefix(header.Get("Content-Type"), "application/json") {
			t.Fatalf("got %d %q, want 200 application/json", status, header.Get("Content-Type"))
		}
		var got functionList
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatalf("body %q: %v", body, err)
		}
		var names []string
		for _, s := range got.Functions {
			names = append(names, s.Name)
		}
		if !slices.Equal(names, []string{"alpha", "zeta"}) {
			t.Errorf("names: got %v, want [alpha zeta]", names)
		}
		if got.Functions[0].VMID != "vm-1" || !got.Functions[0].StartedAt.Equal(started) || got.Functions[0].Invocations.Total != 3 {
			t.Errorf("alpha: got %+v, want the fake's status", got.Functions[0])
		}
	})
	t.Run("empty list is an empty array", func(t *testing.T) {
		h := newHarness(t, Options{}, nil, &fakeFunctions{})
		_, _, body := h.do(t, h.newRequest(t, "GET", "/api/functions", nil))
		if strings.TrimSpace(body) != `{"functions":[]}` {
			t.Errorf("got %s, want {\"functions\":[]}", body)
		}
	})
	tests := []struct {
		name       string
		path       string
		wantStatus int
		wantName   string
		wantError  string
	}{
		{name: "known", path: "/api/functions/zeta", wantStatus: 200, wantName: "zeta"},
		{name: "unknown", path: "/api/functions/nope", wantStatus: 404, wantError: `function "nope": function not found`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Options{}, nil, &fakeFunctions{statuses: statuses})
			status, _, body := h.do(t, h.newRequest(t, "GET", tt.path, nil))
			if status != tt.wantStatus {
				t.Fatalf("GET %s: got %d (%s), want %d", tt.path, status, body, tt.wantStatus)
			}
			if tt.wantError != "" {
				if e := errorJSON(t, body); e.Error != tt.wantError || e.Function != "nope" {
					t.Errorf("got %+v, want error %q for function nope", e, tt.wantError)
				}
				return
			}
			var got controller.Status
			if err := json.Unmarshal([]byte(body), &got); err != nil || got.Name != tt.wantName || got.LastError == "" {
				t.Errorf("got %+v (%v), want %s with its last error", got, err, tt.wantName)
			}
		})
	}
}

func TestAPIConsole(t *testing.T) {
	tests := []struct {
		name       string
		query      string
		wantStatus int
		wantLines  []int // what Logs was asked for
	}{
		{name: "default", query: "", wantStatus: 200, wantLines: []int{200}},
		{name: "explicit", query: "?lines=10", wantStatus: 200, wantLines: []int{10}},
		{name: "one", query: "?lines=1", wantStatus: 200, wantLines: []int{1}},
		{name: "max", query: "?lines=5000", wantStatus: 200, wantLines: []int{5000}},
		{name: "zero", query: "?lines=0", wantStatus: 400},
		{name: "negative", query: "?lines=-3", wantStatus: 400},
		{name: "over max", query: "?lines=5001", wantStatus: 400},
		{name: "not a number", query: "?lines=ten", wantStatus: 400},
		{name: "empty", query: "?lines=", wantStatus: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fns := &fakeFunctions{logs: map[string]string{"hello": "<b>boot</b>\nready\n"}}
			h := newHarness(t, Options{}, nil, fns)
			status, header, body := h.do(t, h.newRequest(t, "GET", "/api/functions/hello/console"+tt.query, nil))
			if status != tt.wantStatus {
				t.Fatalf("got %d (%s), want %d", status, body, tt.wantStatus)
			}
			if status == 400 {
				e := errorJSON(t, body)
				if !strings.Contains(e.Error, "lines must be a whole number from 1 to 5000") || e.Function != "hello" {
					t.Errorf("got %+v, want the lines rule for function hello", e)
				}
			} else {
				if body != "<b>boot</b>\nready\n" {
					t.Errorf("body: got %q, want the console text", body)
				}
				if ct := header.Get("Content-Type"); ct != "text/plain; charset=UTF-8" {
					t.Errorf("Content-Type: got %q, want text/plain; charset=UTF-8", ct)
				}
				if got := header.Get("X-Content-Type-Options"); got != "nosniff" {
					t.Errorf("X-Content-Type-Options: got %q, want nosniff", got)
				}
			}
			fns.mu.Lock()
			got := fns.gotLines
			fns.mu.Unlock()
			if !slices.Equal(got, tt.wantLines) {
				t.Errorf("Logs asked for: got %v, want %v", got, tt.wantLines)
			}
		})
	}
	t.Run("unknown function", func(t *testing.T) {
		h := newHarness(t, Options{}, nil, &fakeFunctions{})
		status, _, body := h.do(t, h.newRequest(t, "GET", "/api/functions/nope/console", nil))
		if e := errorJSON(t, body); status != 404 || e.Function != "nope" {
			t.Errorf("got %d %+v, want 404 for function nope", status, e)
		}
	})
}

func TestRoutes(t *testing.T) {
	tests := []struct {
		name, method, path string
		wantStatus         int
		wantBody           string // exact JSON
	}{
		{name: "healthz", method: "GET", path: "/healthz", wantStatus: 200, wantBody: `{"status":"ok"}`},
		{name: "unknown route", method: "GET", path: "/nope", wantStatus: 404, wantBody: `{"error":"not found"}`},
		{name: "root", method: "GET", path: "/", wantStatus: 404, wantBody: `{"error":"not found"}`},
		{name: "wrong method", method: "POST", path: "/healthz", wantStatus: 405, wantBody: `{"error":"method not allowed"}`},
		{name: "api wrong method", method: "DELETE", path: "/api/functions", wantStatus: 405, wantBody: `{"error":"method not allowed"}`},
		{name: "invoke without a name", method: "GET", path: "/invoke/", wantStatus: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Options{}, nil, &fakeFunctions{})
			status, header, body := h.do(t, h.newRequest(t, tt.method, tt.path, nil))
			if status != tt.wantStatus {
				t.Fatalf("%s %s: got %d (%s), want %d", tt.method, tt.path, status, body, tt.wantStatus)
			}
			if ct := header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type: got %q, want application/json", ct)
			}
			if tt.wantBody != "" && strings.TrimSpace(body) != tt.wantBody {
				t.Errorf("body: got %s, want %s", body, tt.wantBody)
			}
			if len(h.fns.acquires()) != 0 {
				t.Errorf("Acquire calls: got %v, want none", h.fns.acquires())
			}
		})
	}
}

func TestPanicRecovered(t *testing.T) {
	h := newHarness(t, Options{}, nil, &fakeFunctions{panics: true})
	status, _, body := h.do(t, h.newRequest(t, "GET", "/api/functions", nil))
	if status != 500 || strings.TrimSpace(body) != `{"error":"internal error"}` {
		t.Errorf("panicking handler: got %d %s, want 500 {\"error\":\"internal error\"}", status, body)
	}
	status, _, _ = h.do(t, h.newRequest(t, "GET", "/healthz", nil))
	if status != 200 {
		t.Errorf("healthz after a panic: got %d, want 200", status)
	}
	lines := h.logs.requests(t)
	if len(lines) != 2 {
		t.Fatalf("access log: got %d lines, want 2", len(lines))
	}
	if lines[0]["level"] != "ERROR" || lines[0]["panic"] != "list exploded" || !strings.Contains(lines[0]["stack"].(string), "List") {
		t.Errorf("access log of the panic: got %v, want ERROR with the panic and its stack", lines[0])
	}
	if lines[1]["level"] != "DEBUG" {
		t.Errorf("access log of healthz: got level %v, want DEBUG", lines[1]["level"])
	}
}

func TestAccessLogFields(t *testing.T) {
	h := newHarness(t, Options{}, echoUpstream(), nil)
	h.do(t, h.newRequest(t, "POST", "/invoke/fn/a?secret=query", strings.NewReader("x")))
	lines := h.logs.requests(t)
	if len(lines) != 1 {
		t.Fatalf("access log: got %d lines, want 1", len(lines))
	}
	l := lines[0]
	for k, want := range map[string]any{"method": "POST", "path": "/invoke/fn/a", "function": "fn", "vm_id": "vm-1", "status": float64(200), "level": "INFO"} {
		if l[k] != want {
			t.Errorf("access log %s: got %v, want %v", k, l[k], want)
		}
	}
	if d, ok := l["duration"].(float64); !ok || d <= 0 {
		t.Errorf("access log duration: got %v, want a positive number", l["duration"])
	}
}

func TestMount(t *testing.T) {
	h := newHarness(t, Options{APIToken: "tok"}, nil, &fakeFunctions{})
	h.gw.Mount("/metrics", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "faas_up 1\n")
	}))
	h.gw.Mount("/ui/*", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ui "+r.URL.Path)
	}))
	tests := []struct{ path, want string }{
		{"/metrics", "faas_up 1\n"},
		{"/ui/index.html", "ui /ui/index.html"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			status, _, body := h.do(t, h.newRequest(t, "GET", tt.path, nil))
			if status != 200 || body != tt.want {
				t.Errorf("GET %s: got %d %q, want 200 %q", tt.path, status, body, tt.want)
			}
		})
	}
}
