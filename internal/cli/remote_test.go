package cli

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/faasvm/appliance/internal/appliance"
	"github.com/faasvm/appliance/internal/config"
	"github.com/faasvm/appliance/internal/function"
)

// TestNew: every template is a folder the appliance accepts, in the mode
// asked for; new never overwrites.
func TestNew(t *testing.T) {
	cfg, err := config.Load([]string{"--config", filepath.Join(repoRoot, "config", "appliance.yaml")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		runtime  string
		http     bool
		wantMode string
	}{
		{"python3", false, "exec"}, {"python3", true, "http"},
		{"node", false, "exec"}, {"node", true, "http"},
		{"bash", false, "exec"},
	}
	for _, tt := range tests {
		t.Run(tt.runtime+"/"+tt.wantMode, func(t *testing.T) {
			dir := t.TempDir()
			args := []string{"new", "my-fn", "--runtime", tt.runtime, "--dir", dir}
			if tt.http {
				args = append(args, "--http")
			}
			if code, out, errOut := run(t, nil, args...); code != 0 {
				t.Fatalf("exit %d: %s %s", code, out, errOut)
			}
			d := appliance.FunctionDefaults(cfg)
			d.SnapshotDir = t.TempDir()
			spec, err := function.Load(filepath.Join(dir, "my-fn"), d, nil, function.EngineQEMU)
			if err != nil {
				t.Fatalf("the appliance refuses the scaffold: %v", err)
			}
			if spec.Runtime != tt.runtime || spec.Mode != tt.wantMode || len(spec.Warnings) != 0 {
				t.Errorf("got runtime %s mode %s warnings %q, want %s %s and none", spec.Runtime, spec.Mode, spec.Warnings, tt.runtime, tt.wantMode)
			}
			_ = spec.RemoveSnapshot()
			// A second run refuses and leaves the folder alone.
			handler := filepath.Join(dir, "my-fn", "function.yaml")
			if err := os.WriteFile(handler, []byte("mine\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			code, _, errOut := run(t, nil, args...)
			if code != 1 || !strings.Contains(errOut, "refusing to overwrite") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
				t.Errorf("second new: exit %d, stderr %q; want 1 and one line refusing to overwrite", code, errOut)
			}
			if b, _ := os.ReadFile(handler); string(b) != "mine\n" {
				t.Errorf("function.yaml was overwritten: %q", b)
			}
		})
	}
	for _, bad := range []struct {
		name string
		args []string
		want string
	}{
		{"no runtime", []string{"new", "x"}, "--runtime is required"},
		{"unknown runtime", []string{"new", "x", "--runtime", "cobol"}, "want python3, node or bash"},
		{"bash http", []string{"new", "x", "--runtime", "bash", "--http"}, "exec mode only"},
		{"bad name", []string{"new", "../x", "--runtime", "bash"}, "not a valid function name"},
		{"no name", []string{"new", "--runtime", "bash"}, "want one function name"},
	} {
		t.Run(bad.name, func(t *testing.T) {
			args := append(bad.args, "--dir", t.TempDir())
			code, _, errOut := run(t, nil, args...)
			if code != 2 || !strings.Contains(errOut, bad.want) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, errOut, bad.want)
			}
		})
	}
}

// TestRemoteCommands drives ls, status, invoke and logs against a stand-in
// for the gateway: URL and token from the environment or flags, the
// appliance's error as one line, --json passing the answer through.
func TestRemoteCommands(t *testing.T) {
	var got struct {
		auth, method, path, body, header string
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.auth, got.method, got.path = r.Header.Get("Authorization"), r.Method, r.URL.RequestURI()
		b, _ := io.ReadAll(r.Body)
		got.body, got.header = string(b), r.Header.Get("X-Test")
		w.Header().Set("X-Request-Id", "rid-1")
		switch {
		case strings.HasPrefix(r.URL.Path, "/api/") && r.Header.Get("Authorization") != "Bearer tok":
			w.WriteHeader(401)
			_, _ = io.WriteString(w, `{"error":"missing or invalid API token"}`)
		case r.URL.Path == "/api/functions":
			_, _ = io.WriteString(w, `{"functions":[{"name":"echo","state":"ready","runtime":"python3","mode":"http","version":"abc","replicas":{"ready":1,"desired":1},"invocations":{"total":3}}]}`)
		case r.URL.Path == "/api/functions/echo":
			_, _ = io.WriteString(w, `{"name":"echo","state":"ready","runtime":"python3","mode":"http","handler":"handler.py","version":"abc"}`)
		case r.URL.Path == "/api/functions/broken":
			_, _ = io.WriteString(w, `{"name":"broken","state":"invalid","lastError":"invalid function: secret \"db\" not found"}`)
		case r.URL.Path == "/api/functions/echo/logs":
			_, _ = io.WriteString(w, `{"time":"2026-12-02T12:00:00Z","instance":"vm-1","stream":"stderr","requestId":"rid-0","line":"hi \u001b[2Jthere"}`+"\n")
		case r.URL.Path == "/invoke/echo/sub":
			_, _ = io.WriteString(w, "answer:"+string(b))
		case r.URL.Path == "/invoke/missing":
			w.WriteHeader(404)
			_, _ = io.WriteString(w, `{"error":"function not found","function":"missing"}`)
		default:
			w.WriteHeader(500)
		}
	}))
	t.Cleanup(srv.Close)
	env := map[string]string{"FAAS_URL": srv.URL, "FAAS_API_TOKEN": "tok"}
	payload := filepath.Join(t.TempDir(), "p.json")
	if err := os.WriteFile(payload, []byte(`{"a":1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		env        map[string]string
		args       []string
		wantCode   int
		wantOut    string // part of stdout
		wantErr    string // part of stderr
		wantPath   string
		wantMethod string
	}{
		{name: "ls", env: env, args: []string{"ls"}, wantOut: "echo  ready  python3  http  1/1", wantPath: "/api/functions"},
		{name: "ls json", env: env, args: []string{"ls", "--json"}, wantOut: `{"functions":[{"name":"echo"`},
		{name: "ls flags beat env", env: map[string]string{"FAAS_URL": "http://127.0.0.1:1"}, args: []string{"ls", "--url", srv.URL, "--token", "tok"}, wantOut: "echo"},
		{name: "ls no token", env: map[string]string{"FAAS_URL": srv.URL}, args: []string{"ls"}, wantCode: 1, wantErr: "401 Unauthorized: missing or invalid API token (set --token or FAAS_API_TOKEN)"},
		{name: "ls unreachable", env: map[string]string{"FAAS_URL": "http://127.0.0.1:1"}, args: []string{"ls"}, wantCode: 1, wantErr: "reaching the appliance at http://127.0.0.1:1"},
		{name: "bad url", env: map[string]string{"FAAS_URL": "ftp://x"}, args: []string{"ls"}, wantCode: 2, wantErr: "not an http(s) URL"},
		{name: "status", env: env, args: []string{"status", "echo"}, wantOut: "state:       ready", wantPath: "/api/functions/echo"},
		{name: "status invalid exits 1", env: env, args: []string{"status", "broken"}, wantCode: 1, wantOut: `reason:      invalid function: secret "db" not found`, wantErr: "function broken is invalid"},
		{name: "invoke file and header", env: env, args: []string{"invoke", "echo/sub", "-d", "@" + payload, "-H", "X-Test: yes"}, wantOut: `answer:{"a":1}`, wantErr: "request id: rid-1", wantPath: "/invoke/echo/sub", wantMethod: "POST"},
		{name: "invoke get", env: env, args: []string{"invoke", "echo/sub"}, wantOut: "answer:", wantMethod: "GET"},
		{name: "invoke 404", env: env, args: []string{"invoke", "missing"}, wantCode: 1, wantErr: "404 Not Found: function not found"},
		{name: "invoke bad header", env: env, args: []string{"invoke", "echo", "-H", "nocolon"}, wantCode: 2, wantErr: "want Name:value"},
		{name: "invoke missing file", env: env, args: []string{"invoke", "echo", "-d", "@/nonexistent"}, wantCode: 1, wantErr: "reading -d @/nonexistent"},
		{name: "logs", env: env, args: []string{"logs", "echo", "-n", "5"}, wantOut: "2026-12-02T12:00:00Z vm-1 stderr [rid-0] hi ?[2Jthere", wantPath: "/api/functions/echo/logs?format=json&lines=5"},
		{name: "logs follow", env: env, args: []string{"logs", "-f", "echo"}, wantOut: "[rid-0]", wantPath: "/api/functions/echo/logs?follow=1&format=json&lines=200"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got.path, got.method = "", ""
			code, out, errOut := run(t, tt.env, tt.args...)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d (stdout %q, stderr %q)", code, tt.wantCode, out, errOut)
			}
			if !strings.Contains(out, tt.wantOut) {
				t.Errorf("stdout %q, want it to contain %q", out, tt.wantOut)
			}
			if !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("stderr %q, want it to contain %q", errOut, tt.wantErr)
			}
			if tt.wantCode != 0 && strings.Count(strings.TrimSpace(errOut), "\n") > 1 {
				t.Errorf("stderr %q is more than a line (plus the usage hint)", errOut)
			}
			if tt.wantPath != "" && got.path != tt.wantPath {
				t.Errorf("request %q, want %q", got.path, tt.wantPath)
			}
			if tt.wantMethod != "" && got.method != tt.wantMethod {
				t.Errorf("method %q, want %q", got.method, tt.wantMethod)
			}
		})
	}
}

func TestCompletion(t *testing.T) {
	code, out, _ := run(t, nil, "completion", "bash")
	if code != 0 || !strings.Contains(out, "complete -o default -F _faasvm faasvm") || !strings.Contains(out, "new ls status invoke logs") {
		t.Errorf("exit %d, script %q", code, out)
	}
	if code, _, _ := run(t, nil, "completion", "fish"); code != 2 {
		t.Errorf("fish: exit %d, want 2", code)
	}
}
