package server

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/faasvm/appliance/guest/protocol"
)

// restoreBody is a valid restore request with the given secrets.
func restoreBody(t *testing.T, secret, control string) string {
	t.Helper()
	b, err := json.Marshal(protocol.Restore{
		Secret: secret, ControlSecret: control, Entropy: make([]byte, protocol.RestoreEntropyBytes),
		TimeUnixNano: time.Now().UnixNano(), Name: "fn", VMID: "clone-1",
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRestoreRequests(t *testing.T) {
	t.Parallel()
	a := newAgent(t, protocol.Config{Mode: protocol.ModeExec, Command: []string{"bash", "-c", "printf ran"}}, nil, nil)
	post := func(secret, body string) response {
		t.Helper()
		r, err := a.sendTo(t.Context(), a.controlURL, protocol.ControlHeader, secret, http.MethodPost, protocol.RestorePath, body, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	bad := []struct{ name, body string }{
		{"not json", "{"},
		{"no secrets", `{"entropy":"` + strings.Repeat("A", 88) + `","timeUnixNano":1,"vmId":"x"}`},
		{"short entropy", `{"secret":"a","controlSecret":"b","entropy":"AAAA","timeUnixNano":1,"vmId":"x"}`},
		{"same secrets", `{"secret":"a","controlSecret":"a","entropy":"` + strings.Repeat("A", 88) + `","timeUnixNano":1,"vmId":"x"}`},
		{"no time", `{"secret":"a","controlSecret":"b","entropy":"` + strings.Repeat("A", 88) + `","vmId":"x"}`},
		{"too large", `{"name":"` + strings.Repeat("x", maxRestoreBody) + `"}`},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if r := post(testControlSecret, tt.body); r.status/100 != 4 {
				t.Fatalf("status: got %d, want 4xx (body %s)", r.status, r.body)
			}
		})
	}
	if r := post("wrong", restoreBody(t, "new-data", "new-control")); r.status != http.StatusForbidden {
		t.Fatalf("restore with a wrong secret: got %d, want 403", r.status)
	}
	if r := a.control(t, http.MethodGet, protocol.RestorePath, nil); r.status != http.StatusMethodNotAllowed {
		t.Fatalf("GET restore: got %d, want 405", r.status)
	}
	if r := post(testControlSecret, restoreBody(t, "new-data", "new-control")); r.status != http.StatusOK {
		t.Fatalf("restore: got %d, want 200 (body %s)", r.status, r.body)
	}
	// The old secrets are refused from now on, the new ones taken.
	checks := []struct {
		name, base, header, secret, method, path string
		want                                     int
	}{
		{"old control secret", a.controlURL, protocol.ControlHeader, testControlSecret, http.MethodGet, protocol.HealthPath, http.StatusForbidden},
		{"old data secret", a.url, protocol.SecretHeader, testSecret, http.MethodPost, "/", http.StatusForbidden},
		{"new control secret", a.controlURL, protocol.ControlHeader, "new-control", http.MethodGet, protocol.HealthPath, http.StatusOK},
		{"new data secret", a.url, protocol.SecretHeader, "new-data", http.MethodPost, "/", http.StatusOK},
		{"restore again with the old secret", a.controlURL, protocol.ControlHeader, testControlSecret, http.MethodPost, protocol.RestorePath, http.StatusForbidden},
	}
	for _, c := range checks {
		r, err := a.sendTo(t.Context(), c.base, c.header, c.secret, c.method, c.path, restoreBody(t, "x1", "x2"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.status != c.want {
			t.Errorf("%s: got %d, want %d (body %s)", c.name, r.status, c.want, r.body)
		}
	}
}

// A python handler's on_restore hook runs, Python's random is reseeded,
// and a failing hook is reported without stopping the handler.
func TestRestoreHooks(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, runtime, source, wantHook string
	}{
		{"hook", "python3", `import random
calls = []
def on_restore(info):
    calls.append(info["vmId"])
def handle(req):
    return {"calls": calls, "r": random.random()}
`, ""},
		{"failing hook", "python3", `def on_restore(info):
    raise RuntimeError("cannot reconnect")
def handle(req):
    return "ok"
`, "RuntimeError: cannot reconnect"},
		{"no hook", "python3", `def handle(req):
    return "ok"
`, ""},
		// Node's random state (V8's Math.random, OpenSSL's DRBG) cannot be
		// reseeded: the clone runs a fresh bootstrap instead.
		{"node restarts", "node", `const id = require("node:crypto").randomUUID();
module.exports = async () => ({ statusCode: 200, body: JSON.stringify({ calls: [], id }) });
`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			file := map[string]string{"python3": "handler.py", "node": "handler.js"}[tt.runtime]
			cfg := protocol.Config{Mode: protocol.ModeHTTP, Runtime: tt.runtime, Handler: file}
			needInterpreter(t, cfg)
			a := newAgent(t, cfg, map[string]string{file: tt.source}, nil)
			a.waitHealth(t, StateReady, 20*time.Second)
			before := a.do(t, http.MethodGet, "/", "", nil)
			r, err := a.sendTo(t.Context(), a.controlURL, protocol.ControlHeader, testControlSecret, http.MethodPost, protocol.RestorePath, restoreBody(t, testSecret+"2", testControlSecret+"2"), nil)
			if err != nil {
				t.Fatal(err)
			}
			var res protocol.RestoreResult
			if r.status != http.StatusOK || json.Unmarshal(r.body, &res) != nil {
				t.Fatalf("restore: got %d %s, want 200 with a result", r.status, r.body)
			}
			if !strings.Contains(res.Hook, tt.wantHook) || (tt.wantHook == "") != (res.Hook == "") {
				t.Fatalf("hook: got %q, want %q", res.Hook, tt.wantHook)
			}
			after, err := a.sendTo(t.Context(), a.url, protocol.SecretHeader, testSecret+"2", http.MethodGet, "/", "", nil)
			for deadline := time.Now().Add(20 * time.Second); tt.runtime == "node" && (err != nil || after.status != http.StatusOK) && time.Now().Before(deadline); {
				time.Sleep(50 * time.Millisecond) // the fresh bootstrap is starting
				after, err = a.sendTo(t.Context(), a.url, protocol.SecretHeader, testSecret+"2", http.MethodGet, "/", "", nil)
			}
			if err != nil || after.status != http.StatusOK {
				t.Fatalf("after restore: got %d %s (%v), want 200", after.status, after.body, err)
			}
			if tt.runtime == "node" {
				var b, a2 struct {
					ID string `json:"id"`
				}
				_ = json.Unmarshal(before.body, &b)
				_ = json.Unmarshal(after.body, &a2)
				if b.ID == "" || b.ID == a2.ID {
					t.Fatalf("node bootstrap after restore: before %s, after %s; want a fresh process (another id)", before.body, after.body)
				}
			}
			if tt.name == "hook" {
				var b, a2 struct {
					Calls []string `json:"calls"`
				}
				_ = json.Unmarshal(before.body, &b)
				_ = json.Unmarshal(after.body, &a2)
				if len(b.Calls) != 0 || len(a2.Calls) != 1 || a2.Calls[0] != "clone-1" {
					t.Fatalf("on_restore calls: before %s, after %s; want [] then [clone-1]", before.body, after.body)
				}
			}
		})
	}
}
