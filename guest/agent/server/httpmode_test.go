package server

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/faasvm/appliance/guest/protocol"
)

// bootTimeout bounds an interpreter's start on a loaded test machine.
const bootTimeout = 20 * time.Second

const pythonHandler = `import json, os, time

def handle(req):
    if req.path == "/echo":
        return {"method": req.method, "path": req.path, "query": req.query,
                "header": req.headers.get("x-test"), "secret": req.headers.get("x-faas-secret"),
                "text": req.text, "pid": os.getpid()}
    if req.path == "/status":
        return {"statusCode": 201, "headers": {"X-Custom": "yes"}, "body": "created"}
    if req.path == "/tuple":
        return (202, {"X-Custom": "tuple"}, "from a tuple")
    if req.path == "/text":
        return "plain text"
    if req.path == "/bytes":
        return req.body
    if req.path == "/list":
        return [1, "two"]
    if req.path == "/spoof":
        return {"statusCode": 200, "headers": {"X-Faas-Agent-Error": "1"}, "body": "handler output"}
    if req.path == "/boom":
        raise ValueError("boom")
    if req.path == "/slow":
        time.sleep(30)
    if req.path == "/crash":
        os._exit(3)
    return {"statusCode": 404, "body": "no route"}
`

const nodeHandler = `module.exports = async (req) => {
  switch (req.path) {
    case '/echo':
      return { method: req.method, path: req.path, query: req.query,
               header: req.headers['x-test'] ?? null, secret: req.headers['x-faas-secret'] ?? null,
               text: req.text, pid: process.pid };
    case '/status': return { statusCode: 201, headers: { 'X-Custom': 'yes' }, body: 'created' };
    case '/text': return 'plain text';
    case '/bytes': return req.body;
    case '/list': return [1, 'two'];
    case '/spoof': return { statusCode: 200, headers: { 'X-Faas-Agent-Error': '1' }, body: 'handler output' };
    case '/boom': throw new Error('boom');
    case '/slow': await new Promise((r) => setTimeout(r, 30000)); return 'late';
    case '/crash': process.exit(3);
  }
  return { statusCode: 404, body: 'no route' };
};
`

type runtimeCase struct {
	runtime   string
	handler   string
	source    string
	boomError string
}

func runtimeCases() []runtimeCase {
	return []runtimeCase{
		{runtime: "python3", handler: "handler.py", source: pythonHandler, boomError: "ValueError: boom"},
		{runtime: "node", handler: "handler.js", source: nodeHandler, boomError: "Error: boom"},
	}
}

func newHTTPAgent(t *testing.T, rc runtimeCase, timeout time.Duration, tweak func(*Options)) *agent {
	t.Helper()
	cfg := protocol.Config{Mode: protocol.ModeHTTP, Runtime: rc.runtime, Handler: rc.handler, Timeout: protocol.Duration(timeout)}
	a := newAgent(t, cfg, map[string]string{rc.handler: rc.source}, tweak)
	a.waitHealth(t, StateReady, bootTimeout)
	return a
}

type echo struct {
	Method, Path, Query, Text string
	Header, Secret            *string
	PID                       int
}

func (a *agent) echo(t *testing.T) echo {
	t.Helper()
	r := a.do(t, http.MethodPost, "/echo?a=1&b=2", "hello", map[string]string{"X-Test": "yes"})
	if r.status != http.StatusOK {
		t.Fatalf("echo status: got %d, want 200 (body %s)", r.status, r.body)
	}
	var e echo
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("echo body %q: %v", r.body, err)
	}
	return e
}

func TestHTTPMode(t *testing.T) {
	t.Parallel()
	for _, rc := range runtimeCases() {
		t.Run(rc.runtime, func(t *testing.T) {
			t.Parallel()
			a := newHTTPAgent(t, rc, 2*time.Second, nil)

			t.Run("echo sees the request", func(t *testing.T) {
				e := a.echo(t)
				if e.Method != http.MethodPost || e.Path != "/echo" || e.Query != "a=1&b=2" || e.Text != "hello" {
					t.Errorf("echo: got %+v, want POST /echo a=1&b=2 hello", e)
				}
				if e.Header == nil || *e.Header != "yes" {
					t.Errorf("x-test header: got %v, want yes", e.Header)
				}
				if e.Secret != nil {
					t.Errorf("secret header reached the handler: got %q, want nothing", *e.Secret)
				}
			})

			t.Run("warm requests reuse one interpreter", func(t *testing.T) {
				first, second := a.echo(t), a.echo(t)
				if first.PID == 0 || first.PID != second.PID {
					t.Errorf("handler pids: got %d then %d, want one process", first.PID, second.PID)
				}
			})

			tests := []struct {
				name            string
				path            string
				body            string
				wantStatus      int
				wantBody        string
				wantContentType string
				wantHeader      [2]string
				wantAgentError  string
			}{
				{name: "status code response", path: "/status", wantStatus: 201, wantBody: "created",
					wantContentType: "text/plain; charset=utf-8", wantHeader: [2]string{"X-Custom", "yes"}},
				{name: "string is a 200", path: "/text", wantStatus: 200, wantBody: "plain text", wantContentType: "text/plain; charset=utf-8"},
				{name: "bytes round trip", path: "/bytes", body: "\x00\x01\xfe\xff", wantStatus: 200, wantBody: "\x00\x01\xfe\xff",
					wantContentType: "application/octet-stream"},
				{name: "list is JSON", path: "/list", wantStatus: 200, wantBody: `[1, "two"]`, wantContentType: "application/json"},
				{name: "handler cannot claim an agent error", path: "/spoof", wantStatus: 200, wantBody: "handler output"},
				{name: "exception is a 500", path: "/boom", wantStatus: 500, wantContentType: "application/json",
					wantBody: `{"error": "` + rc.boomError + `"}`},
				{name: "timeout is a 504", path: "/slow", wantStatus: 504, wantAgentError: "within 2s"},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					r := a.do(t, http.MethodPost, tt.path, tt.body, nil)
					if r.status != tt.wantStatus {
						t.Fatalf("status: got %d, want %d (body %s)", r.status, tt.wantStatus, r.body)
					}
					if tt.wantAgentError != "" {
						if e := agentErr(t, r); !strings.Contains(e.Error, tt.wantAgentError) {
							t.Errorf("error: got %q, want it to contain %q", e.Error, tt.wantAgentError)
						}
						return
					}
					if got := r.header.Get(protocol.AgentErrorHeader); got != "" {
						t.Errorf("%s: got %q on handler output, want none", protocol.AgentErrorHeader, got)
					}
					if !jsonOrBytesEqual(r.body, []byte(tt.wantBody)) {
						t.Errorf("body: got %q, want %q", r.body, tt.wantBody)
					}
					if tt.wantContentType != "" && r.header.Get("Content-Type") != tt.wantContentType {
						t.Errorf("content type: got %q, want %q", r.header.Get("Content-Type"), tt.wantContentType)
					}
					if k, v := tt.wantHeader[0], tt.wantHeader[1]; k != "" && r.header.Get(k) != v {
						t.Errorf("header %s: got %q, want %q", k, r.header.Get(k), v)
					}
				})
			}
		})
	}
}

// jsonOrBytesEqual compares JSON documents by value and anything else byte
// for byte (Python and Node space their JSON differently).
func jsonOrBytesEqual(got, want []byte) bool {
	var g, w any
	if json.Unmarshal(got, &g) == nil && json.Unmarshal(want, &w) == nil {
		gb, _ := json.Marshal(g)
		wb, _ := json.Marshal(w)
		return bytes.Equal(gb, wb)
	}
	return bytes.Equal(got, want)
}

func TestHTTPModePythonTuple(t *testing.T) {
	t.Parallel()
	a := newHTTPAgent(t, runtimeCases()[0], 5*time.Second, nil)
	r := a.do(t, http.MethodGet, "/tuple", "", nil)
	if r.status != 202 || string(r.body) != "from a tuple" || r.header.Get("X-Custom") != "tuple" {
		t.Errorf("tuple response: got %d %q X-Custom=%q, want 202 \"from a tuple\" X-Custom=tuple",
			r.status, r.body, r.header.Get("X-Custom"))
	}
}

func TestHTTPModeBootstrapCrashRecovers(t *testing.T) {
	t.Parallel()
	for _, rc := range runtimeCases() {
		t.Run(rc.runtime, func(t *testing.T) {
			t.Parallel()
			a := newHTTPAgent(t, rc, 5*time.Second, func(o *Options) { o.RestartMin = 500 * time.Millisecond })
			before := a.echo(t)

			r := a.do(t, http.MethodPost, "/crash", "", nil)
			if r.status != http.StatusBadGateway {
				t.Fatalf("crashing request: got %d, want %d (body %s)", r.status, http.StatusBadGateway, r.body)
			}
			agentErr(t, r)
			st := a.waitHealth(t, StateFailed, 5*time.Second)
			if !strings.Contains(st.Error, "exit status 3") {
				t.Errorf("failed health: got %q, want it to say exit status 3", st.Error)
			}
			a.waitHealth(t, StateReady, bootTimeout)
			after := a.echo(t)
			if after.PID == before.PID {
				t.Errorf("bootstrap pid after restart: got %d, the crashed one's; want a new process", after.PID)
			}
		})
	}
}

func TestHTTPModeHealth(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		runtime   string
		handler   string
		source    string
		wantError string
	}{
		{name: "unknown runtime", runtime: "cobol", handler: "h.cbl", wantError: `runtime "cobol" has no http-mode bootstrap`},
		{name: "python handler without handle", runtime: "python3", handler: "handler.py", source: "x = 1\n", wantError: "defines no function handle(req)"},
		{name: "python handler that does not import", runtime: "python3", handler: "handler.py", source: "import no_such_module_faas\n", wantError: "ModuleNotFoundError"},
		{name: "missing node handler", runtime: "node", handler: "missing.js", wantError: "Cannot find module"},
		{name: "node handler exporting no function", runtime: "node", handler: "handler.js", source: "module.exports = { x: 1 };\n", wantError: "exports no function"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := map[string]string{}
			if tt.source != "" {
				files[tt.handler] = tt.source
			}
			cfg := protocol.Config{Mode: protocol.ModeHTTP, Runtime: tt.runtime, Handler: tt.handler}
			a := newAgent(t, cfg, files, nil)
			st := a.waitHealth(t, StateFailed, bootTimeout)
			if !strings.Contains(st.Error, tt.wantError) {
				t.Errorf("health error: got %q, want it to contain %q", st.Error, tt.wantError)
			}
			r := a.do(t, http.MethodPost, "/", "", nil)
			if r.status != http.StatusBadGateway {
				t.Errorf("invocation: got %d, want %d (body %s)", r.status, http.StatusBadGateway, r.body)
			}
		})
	}
}

func TestHTTPModeStartingUntilStarted(t *testing.T) {
	t.Parallel()
	rc := runtimeCases()[0]
	cfg := protocol.Config{Mode: protocol.ModeHTTP, Runtime: rc.runtime, Handler: rc.handler}
	a := newAgentUnstarted(t, cfg, map[string]string{rc.handler: rc.source}, nil)
	code, st := a.health(t)
	if code != http.StatusServiceUnavailable || st.State != StateStarting {
		t.Fatalf("health before start: got %d %+v, want 503 starting", code, st)
	}
	if r := a.do(t, http.MethodGet, "/text", "", nil); r.status != http.StatusServiceUnavailable {
		t.Errorf("invocation before start: got %d, want 503 (body %s)", r.status, r.body)
	}
	a.srv.Start(t.Context())
	a.waitHealth(t, StateReady, bootTimeout)
	if r := a.do(t, http.MethodGet, "/text", "", nil); r.status != http.StatusOK {
		t.Errorf("invocation once ready: got %d, want 200 (body %s)", r.status, r.body)
	}
}

func TestHTTPModePoweroff(t *testing.T) {
	t.Parallel()
	for _, rc := range runtimeCases() {
		t.Run(rc.runtime, func(t *testing.T) {
			t.Parallel()
			powered := make(chan struct{})
			a := newHTTPAgent(t, rc, 5*time.Second, func(o *Options) {
				o.Poweroff = func(context.Context) error { close(powered); return nil }
			})
			pid := a.echo(t).PID

			r := a.control(t, http.MethodPost, protocol.PoweroffPath, nil)
			if r.status != http.StatusAccepted {
				t.Fatalf("poweroff: got %d, want %d (body %s)", r.status, http.StatusAccepted, r.body)
			}
			select {
			case <-powered:
			case <-time.After(10 * time.Second):
				t.Fatal("poweroff func was not called")
			}
			if !processGone(pid) {
				t.Errorf("bootstrap %d still runs after poweroff", pid)
			}
			if code, st := a.health(t); code != http.StatusServiceUnavailable || st.State != StateFailed {
				t.Errorf("health after poweroff: got %d %+v, want 503 failed", code, st)
			}
		})
	}
}
