package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/faasvm/appliance/guest/protocol"
	"github.com/faasvm/appliance/internal/controller"
)

// seenRequest is what the echo upstream received.
type seenRequest struct {
	Method  string      `json:"method"`
	Path    string      `json:"path"`
	RawPath string      `json:"rawPath"`
	Query   string      `json:"query"`
	Host    string      `json:"host"`
	Header  http.Header `json:"header"`
	Body    string      `json:"body"`
}

// echoUpstream answers every request with what it received, as JSON.
func echoUpstream() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(seenRequest{
			Method: r.Method, Path: r.URL.Path, RawPath: r.URL.RawPath, Query: r.URL.RawQuery,
			Host: r.Host, Header: r.Header, Body: string(body),
		})
	})
}

func decodeSeen(t *testing.T, body string) seenRequest {
	t.Helper()
	var s seenRequest
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("upstream answer %q: %v", body, err)
	}
	return s
}

func checkReleased(t *testing.T, fns *fakeFunctions, want ...int) {
	t.Helper()
	if got := fns.releases(); !slices.Equal(got, want) {
		t.Errorf("Release calls: got %v, want %v", got, want)
	}
}

func TestInvokeForwards(t *testing.T) {
	tests := []struct {
		name         string
		method, path string
		body         string
		header       map[string]string
		want         seenRequest // Method, Path, RawPath, Query, Body
		wantFunction string
	}{
		{name: "no suffix is /", method: "GET", path: "/invoke/echo",
			want: seenRequest{Method: "GET", Path: "/"}, wantFunction: "echo"},
		{name: "trailing slash", method: "GET", path: "/invoke/echo/",
			want: seenRequest{Method: "GET", Path: "/"}, wantFunction: "echo"},
		{name: "suffix query and body", method: "POST", path: "/invoke/echo/a/b?x=1&y=%20z&y=2", body: "hello",
			header: map[string]string{"X-Custom": "yes", "Content-Type": "text/plain"},
			want:   seenRequest{Method: "POST", Path: "/a/b", Query: "x=1&y=%20z&y=2", Body: "hello"}, wantFunction: "echo"},
		{name: "escaped slash stays escaped", method: "PUT", path: "/invoke/echo/a%2Fb/c", body: "x",
			want: seenRequest{Method: "PUT", Path: "/a/b/c", RawPath: "/a%2Fb/c", Body: "x"}, wantFunction: "echo"},
		{name: "escaped function name", method: "DELETE", path: "/invoke/ech%6F/item/7",
			want: seenRequest{Method: "DELETE", Path: "/item/7"}, wantFunction: "echo"},
		{name: "query without suffix", method: "PATCH", path: "/invoke/echo?only=query", body: "{}",
			want: seenRequest{Method: "PATCH", Path: "/", Query: "only=query", Body: "{}"}, wantFunction: "echo"},
		{name: "options", method: "OPTIONS", path: "/invoke/echo/x",
			want: seenRequest{Method: "OPTIONS", Path: "/x"}, wantFunction: "echo"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Options{}, echoUpstream(), nil)
			req := h.newRequest(t, tt.method, tt.path, strings.NewReader(tt.body))
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			status, _, body := h.do(t, req)
			if status != http.StatusOK {
				t.Fatalf("%s %s: got status %d (%s), want 200", tt.method, tt.path, status, body)
			}
			got := decodeSeen(t, body)
			if got.Method != tt.want.Method || got.Path != tt.want.Path || got.RawPath != tt.want.RawPath ||
				got.Query != tt.want.Query || got.Body != tt.want.Body {
				t.Errorf("upstream saw %s %q raw %q query %q body %q, want %s %q raw %q query %q body %q",
					got.Method, got.Path, got.RawPath, got.Query, got.Body,
					tt.want.Method, tt.want.Path, tt.want.RawPath, tt.want.Query, tt.want.Body)
			}
			for k, v := range tt.header {
				if g := got.Header.Get(k); g != v {
					t.Errorf("upstream header %s: got %q, want %q", k, g, v)
				}
			}
			if got.Host != h.fns.endpoint {
				t.Errorf("upstream Host: got %q, want the instance endpoint %q", got.Host, h.fns.endpoint)
			}
			if acq := h.fns.acquires(); !slices.Equal(acq, []string{tt.wantFunction}) {
				t.Errorf("Acquire calls: got %q, want [%q]", acq, tt.wantFunction)
			}
			checkReleased(t, h.fns, http.StatusOK)
		})
	}
}

func TestInvokeHeaders(t *testing.T) {
	tests := []struct {
		name   string
		header map[string]string
		// want maps a header to the values the upstream must see (nil: absent).
		want map[string][]string
	}{
		{name: "secret injected", want: map[string][]string{protocol.SecretHeader: {testSecret}}},
		{name: "client secret replaced",
			header: map[string]string{protocol.SecretHeader: "forged"},
			want:   map[string][]string{protocol.SecretHeader: {testSecret}}},
		{name: "client control header dropped",
			header: map[string]string{protocol.ControlHeader: "forged"},
			want:   map[string][]string{protocol.ControlHeader: nil, protocol.SecretHeader: {testSecret}}},
		{name: "the secret cannot be named hop-by-hop away",
			header: map[string]string{"Connection": protocol.SecretHeader},
			want:   map[string][]string{protocol.SecretHeader: {testSecret}}},
		{name: "hop-by-hop dropped",
			header: map[string]string{
				"Connection": "X-Drop-Me", "X-Drop-Me": "1", "Keep-Alive": "timeout=5",
				"Proxy-Authorization": "Basic eDp5", "Upgrade": "websocket", "X-Keep": "kept",
			},
			want: map[string][]string{
				"Connection": nil, "X-Drop-Me": nil, "Keep-Alive": nil, "Proxy-Authorization": nil,
				"Upgrade": nil, "X-Keep": {"kept"},
			}},
		{name: "forwarded headers set, client values not trusted",
			header: map[string]string{"X-Forwarded-For": "10.9.9.9", "X-Forwarded-Host": "evil", "X-Forwarded-Proto": "https"},
			want: map[string][]string{
				"X-Forwarded-For": {"127.0.0.1"}, "X-Forwarded-Host": {"HOST"}, "X-Forwarded-Proto": {"http"},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Options{}, echoUpstream(), nil)
			req := h.newRequest(t, "GET", "/invoke/echo", nil)
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			status, _, body := h.do(t, req)
			if status != http.StatusOK {
				t.Fatalf("got status %d (%s), want 200", status, body)
			}
			got := decodeSeen(t, body)
			for k, want := range tt.want {
				for i := range want {
					if want[i] == "HOST" {
						want[i] = h.host
					}
				}
				if g := got.Header.Values(k); !slices.Equal(g, want) {
					t.Errorf("upstream header %s: got %q, want %q", k, g, want)
				}
			}
			checkReleased(t, h.fns, http.StatusOK)
		})
	}
}

func TestInvokeResponse(t *testing.T) {
	tests := []struct {
		name       string
		upstream   http.HandlerFunc
		wantStatus int
		wantBody   string
		wantHeader map[string]string // "" means absent
		wantAgent  bool              // access log marks agent_error
	}{
		{name: "status headers and body pass through",
			upstream: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Answer", "42")
				w.WriteHeader(http.StatusTeapot)
				io.WriteString(w, "short and stout")
			},
			wantStatus: http.StatusTeapot, wantBody: "short and stout", wantHeader: map[string]string{"X-Answer": "42"}},
		{name: "agent error passes through without its marker",
			upstream: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set(protocol.AgentErrorHeader, "1")
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusBadGateway)
				io.WriteString(w, `{"error":"handler exited with status 1"}`)
			},
			wantStatus: http.StatusBadGateway, wantBody: `{"error":"handler exited with status 1"}`,
			wantHeader: map[string]string{protocol.AgentErrorHeader: "", "Content-Type": "application/json"},
			wantAgent:  true},
		{name: "response hop-by-hop and secret dropped",
			upstream: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Connection", "X-Hop")
				w.Header().Set("X-Hop", "1")
				w.Header().Set(protocol.SecretHeader, testSecret)
				w.Header().Set(protocol.ControlHeader, "leak")
				io.WriteString(w, "ok")
			},
			wantStatus: http.StatusOK, wantBody: "ok", wantHeader: map[string]string{"X-Hop": "", protocol.SecretHeader: "", protocol.ControlHeader: ""}},
		{name: "early hints do not become the status",
			upstream: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Link", "</a.css>; rel=preload")
				w.WriteHeader(http.StatusEarlyHints)
				w.Header().Del("Link")
				w.WriteHeader(http.StatusCreated)
				io.WriteString(w, "made")
			},
			wantStatus: http.StatusCreated, wantBody: "made"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Options{}, tt.upstream, nil)
			status, header, body := h.do(t, h.newRequest(t, "GET", "/invoke/fn/x", nil))
			if status != tt.wantStatus || body != tt.wantBody {
				t.Errorf("got %d %q, want %d %q", status, body, tt.wantStatus, tt.wantBody)
			}
			for k, v := range tt.wantHeader {
				if g := header.Get(k); g != v {
					t.Errorf("header %s: got %q, want %q", k, g, v)
				}
			}
			checkReleased(t, h.fns, tt.wantStatus)
			lines := h.logs.requests(t)
			if len(lines) != 1 {
				t.Fatalf("access log: got %d lines, want 1", len(lines))
			}
			if got := lines[0]["agent_error"] == true; got != tt.wantAgent {
				t.Errorf("access log agent_error: got %v, want %v", got, tt.wantAgent)
			}
		})
	}
}

func TestInvokeStreams(t *testing.T) {
	release := make(chan struct{})
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "second\n")
	})
	h := newHarness(t, Options{}, upstream, nil)

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", h.url+"/invoke/stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	defer res.Body.Close()
	br := bufio.NewReader(res.Body)
	first, err := br.ReadString('\n')
	if err != nil || first != "first\n" {
		t.Fatalf("first chunk before the upstream finished: got %q, %v, want %q", first, err, "first\n")
	}
	close(release)
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "second\n" {
		t.Errorf("rest: got %q, %v, want %q", rest, err, "second\n")
	}
	h.wait(t, 1)
	checkReleased(t, h.fns, http.StatusOK)
}

func TestInvokeErrors(t *testing.T) {
	blockUntilDone := func(ctx context.Context, name string) (controller.Instance, error) {
		<-ctx.Done()
		return controller.Instance{}, ctx.Err()
	}
	failWith := func(err error) func(context.Context, string) (controller.Instance, error) {
		return func(context.Context, string) (controller.Instance, error) { return controller.Instance{}, err }
	}
	tests := []struct {
		name        string
		opts        Options
		acquire     func(ctx context.Context, name string) (controller.Instance, error)
		instTimeout time.Duration    // the instance's own Timeout
		upstream    http.HandlerFunc // nil: a dead endpoint
		body        io.Reader
		bodyLen     int64 // Content-Length; -1 sends the body chunked
		wantStatus  int
		wantError   string // substring of the JSON error
		wantRetry   string
		wantRelease []int
		wantAcquire bool
		wantLevel   string
	}{
		{name: "unknown function", acquire: failWith(fmt.Errorf("function %q: %w", "fn", controller.ErrNotFound)),
			wantStatus: 404, wantError: "function not found", wantAcquire: true, wantLevel: "INFO"},
		{name: "not ready", acquire: failWith(fmt.Errorf("function %q: %w", "fn", controller.ErrNotReady)),
			wantStatus: 503, wantError: "function not ready", wantRetry: "2", wantAcquire: true, wantLevel: "INFO"},
		{name: "boot wait runs out", opts: Options{BootWait: 20 * time.Millisecond}, acquire: blockUntilDone,
			wantStatus: 503, wantError: "no instance ready within 20ms", wantRetry: "2", wantAcquire: true, wantLevel: "INFO"},
		{name: "unavailable with its reason", acquire: failWith(fmt.Errorf("function %q: %w: handler.py is missing", "fn", controller.ErrUnavailable)),
			wantStatus: 503, wantError: "handler.py is missing", wantRetry: "5", wantAcquire: true, wantLevel: "INFO"},
		{name: "overloaded", acquire: failWith(fmt.Errorf("function %q: %w", "fn", controller.ErrOverloaded)),
			wantStatus: 429, wantError: "function overloaded", wantRetry: "1", wantAcquire: true, wantLevel: "INFO"},
		{name: "unexpected acquire error", acquire: failWith(errors.New("disk on fire")),
			wantStatus: 500, wantError: "internal error", wantAcquire: true, wantLevel: "WARN"},
		{name: "dead upstream", wantStatus: 502, wantError: "function instance unreachable",
			wantRelease: []int{502}, wantAcquire: true, wantLevel: "WARN"},
		{name: "invoke timeout", opts: Options{InvokeTimeout: 50 * time.Millisecond},
			upstream:   func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() },
			wantStatus: 504, wantError: "function timed out", wantRelease: []int{504}, wantAcquire: true, wantLevel: "WARN"},
		// The instance's Timeout plus agentMargin overrides Options.InvokeTimeout.
		{name: "instance timeout", opts: Options{InvokeTimeout: time.Hour}, instTimeout: 50 * time.Millisecond,
			upstream:   func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() },
			wantStatus: 504, wantError: "no answer within " + (50*time.Millisecond + agentMargin).String(),
			wantRelease: []int{504}, wantAcquire: true, wantLevel: "WARN"},
		{name: "answer within the instance timeout", opts: Options{InvokeTimeout: 10 * time.Millisecond}, instTimeout: 50 * time.Millisecond,
			upstream: func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-time.After(100 * time.Millisecond): // past InvokeTimeout, within Timeout+agentMargin
					io.WriteString(w, "late but fine")
				case <-r.Context().Done():
				}
			},
			wantStatus: 200, wantRelease: []int{200}, wantAcquire: true, wantLevel: "INFO"},
		{name: "content-length over the limit", opts: Options{MaxBody: 16}, upstream: echoUpstream().ServeHTTP,
			body: strings.NewReader(strings.Repeat("x", 17)), bodyLen: 17,
			wantStatus: 413, wantError: "larger than the 16B limit", wantLevel: "INFO"},
		{name: "chunked body over the limit", opts: Options{MaxBody: 1024}, upstream: echoUpstream().ServeHTTP,
			body: strings.NewReader(strings.Repeat("x", 4096)), bodyLen: -1,
			wantStatus: 413, wantError: "larger than the 1KiB limit", wantRelease: []int{413}, wantAcquire: true, wantLevel: "INFO"},
		{name: "chunked body at the limit", opts: Options{MaxBody: 1024}, upstream: echoUpstream().ServeHTTP,
			body: strings.NewReader(strings.Repeat("x", 1024)), bodyLen: -1,
			wantStatus: 200, wantRelease: []int{200}, wantAcquire: true, wantLevel: "INFO"},
		{name: "content-length at the limit", opts: Options{MaxBody: 16}, upstream: echoUpstream().ServeHTTP,
			body: strings.NewReader(strings.Repeat("x", 16)), bodyLen: 16,
			wantStatus: 200, wantRelease: []int{200}, wantAcquire: true, wantLevel: "INFO"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fns := &fakeFunctions{acquire: tt.acquire}
			if tt.instTimeout > 0 {
				fns.acquire = func(ctx context.Context, name string) (controller.Instance, error) {
					inst := fns.instance(name)
					inst.Timeout = tt.instTimeout
					return inst, nil
				}
			}
			var upstream http.Handler
			if tt.upstream != nil {
				upstream = tt.upstream
			} else {
				fns.endpoint = deadEndpoint(t)
			}
			h := newHarness(t, tt.opts, upstream, fns)
			method := "GET"
			if tt.body != nil {
				method = "POST"
			}
			req := h.newRequest(t, method, "/invoke/fn/path", tt.body)
			if tt.body != nil {
				req.ContentLength = tt.bodyLen
				if tt.bodyLen < 0 {
					req.Body = io.NopCloser(tt.body) // hide the length
				}
			}
			status, header, body := h.do(t, req)
			if status != tt.wantStatus {
				t.Fatalf("got status %d (%s), want %d", status, body, tt.wantStatus)
			}
			if tt.wantError != "" {
				e := errorJSON(t, body)
				if !strings.Contains(e.Error, tt.wantError) || e.Function != "fn" {
					t.Errorf("got error %q for function %q, want one containing %q for %q", e.Error, e.Function, tt.wantError, "fn")
				}
				if ct := header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
					t.Errorf("Content-Type: got %q, want application/json", ct)
				}
			}
			if got := header.Get("Retry-After"); got != tt.wantRetry {
				t.Errorf("Retry-After: got %q, want %q", got, tt.wantRetry)
			}
			checkReleased(t, fns, tt.wantRelease...)
			if got := len(fns.acquires()) > 0; got != tt.wantAcquire {
				t.Errorf("Acquire called: got %v, want %v", got, tt.wantAcquire)
			}
			lines := h.logs.requests(t)
			if len(lines) != 1 {
				t.Fatalf("access log: got %d lines, want 1", len(lines))
			}
			if lines[0]["level"] != tt.wantLevel || lines[0]["status"] != float64(tt.wantStatus) || lines[0]["function"] != "fn" {
				t.Errorf("access log: got %v, want level %s status %d function fn", lines[0], tt.wantLevel, tt.wantStatus)
			}
		})
	}
}

// TestInvokeClientGone cancels the client while the gateway waits for an
// instance and while it waits for the instance's answer.
func TestInvokeClientGone(t *testing.T) {
	tests := []struct {
		name        string
		inAcquire   bool
		wantRelease []int
	}{
		{name: "while acquiring", inAcquire: true},
		{name: "while proxying", wantRelease: []int{StatusClientClosedRequest}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			waiting := make(chan struct{})
			fns := &fakeFunctions{}
			if tt.inAcquire {
				var once sync.Once // the gateway tries without waiting first
				fns.acquire = func(ctx context.Context, name string) (controller.Instance, error) {
					if ctx.Err() == nil {
						once.Do(func() { close(waiting) })
					}
					<-ctx.Done()
					return controller.Instance{}, ctx.Err()
				}
			}
			upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				close(waiting)
				<-r.Context().Done()
			})
			h := newHarness(t, Options{}, upstream, fns)
			ctx, cancel := context.WithCancel(t.Context())
			req, err := http.NewRequestWithContext(ctx, "GET", h.url+"/invoke/fn", nil)
			if err != nil {
				t.Fatal(err)
			}
			errc := make(chan error, 1)
			go func() {
				res, err := http.DefaultClient.Do(req)
				if err == nil {
					res.Body.Close()
				}
				errc <- err
			}()
			<-waiting
			cancel()
			if err := <-errc; !errors.Is(err, context.Canceled) {
				t.Errorf("client: got error %v, want context.Canceled", err)
			}
			h.wait(t, 1)
			checkReleased(t, fns, tt.wantRelease...)
			lines := h.logs.requests(t)
			if len(lines) != 1 {
				t.Fatalf("access log: got %d lines, want 1", len(lines))
			}
			if lines[0]["status"] != float64(StatusClientClosedRequest) || lines[0]["level"] != "INFO" {
				t.Errorf("access log: got %v, want status 499 at INFO", lines[0])
			}
		})
	}
}

// TestInvokeAbortedStream checks Release when the client leaves in the
// middle of a streamed answer: net/http aborts the handler with a panic
// that must pass through the recover middleware.
func TestInvokeAbortedStream(t *testing.T) {
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	h := newHarness(t, Options{}, upstream, nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", h.url+"/invoke/fn", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	if _, err := bufio.NewReader(res.Body).ReadString('\n'); err != nil {
		t.Fatalf("first chunk: %v", err)
	}
	cancel()
	res.Body.Close()
	h.wait(t, 1)
	checkReleased(t, h.fns, http.StatusOK)
	lines := h.logs.requests(t)
	if len(lines) != 1 {
		t.Fatalf("access log: got %d lines, want 1", len(lines))
	}
	if _, ok := lines[0]["panic"]; ok {
		t.Errorf("access log: got %v, want no panic recorded for an aborted stream", lines[0])
	}
}

func TestSplitInvokePath(t *testing.T) {
	tests := []struct {
		in, name, rawPath string
		ok                bool
	}{
		{in: "/invoke/fn", name: "fn", rawPath: "/", ok: true},
		{in: "/invoke/fn/", name: "fn", rawPath: "/", ok: true},
		{in: "/invoke/fn/a/b%2Fc", name: "fn", rawPath: "/a/b%2Fc", ok: true},
		{in: "/invoke/f%6E/x", name: "fn", rawPath: "/x", ok: true},
		{in: "/invoke/", ok: false},
		{in: "/other/fn", ok: false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			name, raw, ok := splitInvokePath(tt.in)
			if ok != tt.ok || (ok && (name != tt.name || raw != tt.rawPath)) {
				t.Errorf("splitInvokePath(%q): got %q, %q, %v, want %q, %q, %v", tt.in, name, raw, ok, tt.name, tt.rawPath, tt.ok)
			}
		})
	}
}

// TestDescribe pins the error to status mapping, wrapped errors included.
func TestDescribe(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantStatus int
		wantRetry  string
	}{
		{"not found", fmt.Errorf("x: %w", controller.ErrNotFound), 404, ""},
		{"not ready", fmt.Errorf("x: %w", controller.ErrNotReady), 503, "2"},
		{"unavailable", fmt.Errorf("x: %w", controller.ErrUnavailable), 503, "5"},
		{"overloaded", fmt.Errorf("x: %w", controller.ErrOverloaded), 429, "1"},
		{"too large", fmt.Errorf("x: %w", &http.MaxBytesError{Limit: 1}), 413, ""},
		{"timeout", fmt.Errorf("x: %w", errInvokeTimeout), 504, ""},
		{"upstream", fmt.Errorf("%w: %w", errUpstream, errors.New("connection refused")), 502, ""},
		{"client gone wins", fmt.Errorf("%w: %w", errClientGone, controller.ErrNotReady), 499, ""},
		{"bad request", fmt.Errorf("%w: lines", errBadRequest), 400, ""},
		{"unauthorized", errUnauthorized, 401, ""},
		{"unknown", errors.New("boom"), 500, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, retry := describe(tt.err)
			if status != tt.wantStatus || retry != tt.wantRetry {
				t.Errorf("describe(%v): got %d, Retry-After %q, want %d, %q", tt.err, status, retry, tt.wantStatus, tt.wantRetry)
			}
		})
	}
}

// The gateway first asks for an instance without waiting (no timer) and
// waits up to BootWait only when none is ready at once.
func TestInvokeWaitsOnlyWhenNoneReady(t *testing.T) {
	tests := []struct {
		name      string
		readyNow  bool          // an instance is ready at the first ask
		bootWait  time.Duration // Options.BootWait
		bootTakes time.Duration // until the waiting ask gets one
		wantCode  int
		wantAsks  int
	}{
		{name: "ready at once", readyNow: true, bootWait: time.Second, wantCode: http.StatusOK, wantAsks: 1},
		{name: "ready after a boot", bootWait: 5 * time.Second, bootTakes: 50 * time.Millisecond, wantCode: http.StatusOK, wantAsks: 2},
		{name: "not ready within BootWait", bootWait: 100 * time.Millisecond, bootTakes: time.Hour, wantCode: http.StatusServiceUnavailable, wantAsks: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fns := &fakeFunctions{}
			fns.acquire = func(ctx context.Context, name string) (controller.Instance, error) {
				if ctx.Err() != nil { // the first ask: done already
					if tt.readyNow {
						return controller.Instance{}, nil
					}
					return controller.Instance{}, fmt.Errorf("%w: %s: no instance ready in time", controller.ErrNotReady, name)
				}
				select {
				case <-time.After(tt.bootTakes):
					return controller.Instance{}, nil
				case <-ctx.Done():
					return controller.Instance{}, fmt.Errorf("%w: %s: no instance ready in time (%v)", controller.ErrNotReady, name, context.Cause(ctx))
				}
			}
			upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
			h := newHarness(t, Options{BootWait: tt.bootWait}, upstream, fns)
			code, hdr, body := h.do(t, h.newRequest(t, "GET", "/invoke/fn", nil))
			if code != tt.wantCode {
				t.Fatalf("got %d %q, want %d", code, body, tt.wantCode)
			}
			if code == http.StatusServiceUnavailable && hdr.Get("Retry-After") == "" {
				t.Errorf("503 without Retry-After")
			}
			fns.mu.Lock()
			asks := len(fns.acquired)
			fns.mu.Unlock()
			if asks != tt.wantAsks {
				t.Errorf("got %d Acquire calls, want %d", asks, tt.wantAsks)
			}
		})
	}
}
