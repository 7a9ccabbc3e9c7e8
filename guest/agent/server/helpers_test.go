package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/faasvm/appliance/guest/protocol"
)

const (
	testSecret        = "s3cret-for-tests"
	testControlSecret = "c0ntrol-for-tests"
)

// syncBuffer is a bytes.Buffer safe for the console's concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// agent is a Server under test behind two httptest servers: its data
// handler at url, its control handler at controlURL.
type agent struct {
	srv        *Server
	url        string
	controlURL string
	console    *syncBuffer
	codeDir    string
}

// writeCode writes files into dir; every file is executable.
func writeCode(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// needInterpreter checks that the interpreter cfg runs (python3 or node)
// is on PATH: without it the test fails saying what to install, or, under
// -short (make unit, which promises no set-up), is skipped.
func needInterpreter(t *testing.T, cfg protocol.Config) {
	t.Helper()
	name := cfg.Runtime
	if cfg.Mode != protocol.ModeHTTP && len(cfg.Command) > 0 {
		name = cfg.Command[0]
	}
	if name != "python3" && name != "node" {
		return
	}
	if _, err := exec.LookPath(name); err != nil {
		if testing.Short() {
			t.Skipf("-short: %s is not installed", name)
		}
		t.Fatalf("%s is not on PATH: install it (make test installs python3 and nodejs)", name)
	}
}

// newAgent builds and starts an agent for cfg with files in a fresh code
// directory. Zero fields of cfg get test defaults; tweak adjusts Options.
func newAgent(t *testing.T, cfg protocol.Config, files map[string]string, tweak func(*Options)) *agent {
	t.Helper()
	a := newAgentUnstarted(t, cfg, files, tweak)
	a.srv.Start(t.Context())
	return a
}

func newAgentUnstarted(t *testing.T, cfg protocol.Config, files map[string]string, tweak func(*Options)) *agent {
	t.Helper()
	needInterpreter(t, cfg)
	if cfg.Name == "" {
		cfg.Name = "fn"
	}
	if cfg.Secret == "" {
		cfg.Secret = testSecret
	}
	if cfg.ControlSecret == "" {
		cfg.ControlSecret = testControlSecret
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = protocol.Duration(10 * time.Second)
	}
	code := t.TempDir()
	writeCode(t, code, files)
	con := &syncBuffer{}
	opts := Options{
		CodeDir:    code,
		RunDir:     t.TempDir(),
		Console:    con,
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		StopGrace:  2 * time.Second,
		RestartMin: 300 * time.Millisecond,
		RestartMax: time.Second,
	}
	if tweak != nil {
		tweak(&opts)
	}
	srv, err := New(&cfg, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ts := httptest.NewServer(srv)
	cs := httptest.NewServer(srv.Control())
	t.Cleanup(func() {
		ts.Close()
		cs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return &agent{srv: srv, url: ts.URL, controlURL: cs.URL, console: con, codeDir: code}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends one request to the data handler with the test secret (unless
// headers sets the secret header, even to "").
func (a *agent) do(t *testing.T, method, path, body string, headers map[string]string) response {
	t.Helper()
	r, err := a.send(t.Context(), method, path, body, headers)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

// control sends one request to the control handler with the test control
// secret (unless headers sets the control header, even to "").
func (a *agent) control(t *testing.T, method, path string, headers map[string]string) response {
	t.Helper()
	r, err := a.sendTo(t.Context(), a.controlURL, protocol.ControlHeader, testControlSecret, method, path, "", headers)
	if err != nil {
		t.Fatalf("control %s %s: %v", method, path, err)
	}
	return r
}

// doNoFail is do for goroutines other than the test's: a failed request
// comes back as status 0.
func (a *agent) doNoFail(method, path string) response {
	r, err := a.send(context.Background(), method, path, "", nil)
	if err != nil {
		return response{body: []byte(err.Error())}
	}
	return r
}

func (a *agent) send(ctx context.Context, method, path, body string, headers map[string]string) (response, error) {
	return a.sendTo(ctx, a.url, protocol.SecretHeader, testSecret, method, path, body, headers)
}

func (a *agent) sendTo(ctx context.Context, base, secretHeader, secret, method, path, body string, headers map[string]string) (response, error) {
	req, err := http.NewRequestWithContext(ctx, method, base+path, strings.NewReader(body))
	if err != nil {
		return response{}, err
	}
	req.Header.Set(secretHeader, secret)
	for k, v := range headers {
		if v == "" {
			req.Header.Del(k)
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, fmt.Errorf("reading body: %w", err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

func (a *agent) health(t *testing.T) (int, Status) {
	t.Helper()
	r := a.control(t, http.MethodGet, protocol.HealthPath, nil)
	var st Status
	if err := json.Unmarshal(r.body, &st); err != nil {
		t.Fatalf("health body %q: %v", r.body, err)
	}
	return r.status, st
}

// waitHealth polls the health endpoint until it reports state, failing the
// test after timeout.
func (a *agent) waitHealth(t *testing.T, state string, timeout time.Duration) Status {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last Status
	for time.Now().Before(deadline) {
		_, st := a.health(t)
		if st.State == state {
			return st
		}
		last = st
		time.Sleep(10 * time.Millisecond) // polling a condition nothing signals
	}
	t.Fatalf("health: got %+v after %s, want status %q", last, timeout, state)
	return last
}

// agentErr decodes an agent-generated error response and checks its marks.
func agentErr(t *testing.T, r response) agentError {
	t.Helper()
	if got := r.header.Get(protocol.AgentErrorHeader); got != "1" {
		t.Errorf("%s header: got %q, want \"1\" (body %s)", protocol.AgentErrorHeader, got, r.body)
	}
	if got := r.header.Get("Content-Type"); got != "application/json" {
		t.Errorf("error content type: got %q, want application/json", got)
	}
	var e agentError
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	return e
}

// processGone reports whether pid no longer runs (it is absent, or a zombie
// nobody reaped yet).
func processGone(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z' || s[i+2] == 'X'
}
