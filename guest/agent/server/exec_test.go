package server

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/faasvm/appliance/guest/protocol"
)

func TestExecMode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		command     []string
		files       map[string]string
		env         map[string]string
		contentType string
		maxOutput   int64

		method, path, body string
		headers            map[string]string

		wantStatus      int
		wantBody        string // exact, for 200
		wantContentType string
		wantError       string // substring of the agent error, for non-200
		wantStderr      string // suffix of the stderr tail in the error
	}{
		{
			name:    "python3 reads stdin and writes stdout",
			command: []string{"python3", "handler.py"},
			files: map[string]string{"handler.py": `import sys
sys.stdout.write(sys.stdin.read().upper())
`},
			method: http.MethodPost, path: "/", body: "hello",
			wantStatus: http.StatusOK, wantBody: "HELLO", wantContentType: "text/plain; charset=utf-8",
		},
		{
			name:    "bash sees the request and the config env",
			command: []string{"./env.sh"},
			files: map[string]string{"env.sh": `#!/bin/bash
printf '%s|%s|%s|%s|%s|%s|%s|%s' "$Http_Method" "$Http_Path" "$Http_Query" "$Http_X_Request_Id" \
  "$Http_Content_Type" "$Http_ContentLength" "$GREETING" "${Http_X_Faas_Secret:-no secret}"
`},
			env:    map[string]string{"GREETING": "hi"},
			method: http.MethodPut, path: "/some/path?a=1&b=two", body: "xyz",
			headers:    map[string]string{"X-Request-Id": "req-42", "Content-Type": "text/csv"},
			wantStatus: http.StatusOK, wantBody: "PUT|/some/path|a=1&b=two|req-42|text/csv|3|hi|no secret",
			wantContentType: "text/plain; charset=utf-8",
		},
		{
			name:    "bash runs in the code directory",
			command: []string{"bash", "-c", "cat marker.txt"},
			files:   map[string]string{"marker.txt": "found me"},
			method:  http.MethodGet, path: "/",
			wantStatus: http.StatusOK, wantBody: "found me", wantContentType: "text/plain; charset=utf-8",
		},
		{
			name:    "content type is sniffed",
			command: []string{"./page.sh"},
			files:   map[string]string{"page.sh": "#!/bin/sh\necho '<!DOCTYPE html><html><body>hi</body></html>'\n"},
			method:  http.MethodGet, path: "/",
			wantStatus: http.StatusOK, wantBody: "<!DOCTYPE html><html><body>hi</body></html>\n",
			wantContentType: "text/html; charset=utf-8",
		},
		{
			name:        "content type from the config wins",
			command:     []string{"./page.sh"},
			contentType: "application/json",
			files:       map[string]string{"page.sh": "#!/bin/sh\nprintf '{\"a\":1}'\n"},
			method:      http.MethodGet, path: "/",
			wantStatus: http.StatusOK, wantBody: `{"a":1}`, wantContentType: "application/json",
		},
		{
			name:    "non-zero exit is a 500 with the stderr tail",
			command: []string{"./fail.sh"},
			files: map[string]string{"fail.sh": `#!/bin/bash
head -c 6000 /dev/zero | tr '\0' x >&2
echo >&2
echo "the last words" >&2
exit 3
`},
			method: http.MethodPost, path: "/",
			wantStatus: http.StatusInternalServerError, wantError: "handler exited with status 3",
			wantStderr: "x\nthe last words\n",
		},
		{
			name:      "stdout past the limit is a 500",
			command:   []string{"bash", "-c", "head -c 5000 /dev/zero"},
			maxOutput: 1024,
			method:    http.MethodGet, path: "/",
			wantStatus: http.StatusInternalServerError, wantError: "more than 1024 bytes",
		},
		{
			name:    "a command that does not resolve is a 502",
			command: []string{"no-such-command-faas-test"},
			method:  http.MethodGet, path: "/",
			wantStatus: http.StatusBadGateway, wantError: "not found in PATH",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := protocol.Config{Mode: protocol.ModeExec, Command: tt.command, Env: tt.env, ContentType: tt.contentType}
			a := newAgent(t, cfg, tt.files, func(o *Options) { o.MaxOutput = tt.maxOutput })
			r := a.do(t, tt.method, tt.path, tt.body, tt.headers)
			if r.status != tt.wantStatus {
				t.Fatalf("status: got %d, want %d (body %s)", r.status, tt.wantStatus, r.body)
			}
			if tt.wantStatus == http.StatusOK {
				if string(r.body) != tt.wantBody {
					t.Errorf("body: got %q, want %q", r.body, tt.wantBody)
				}
				if got := r.header.Get("Content-Type"); got != tt.wantContentType {
					t.Errorf("content type: got %q, want %q", got, tt.wantContentType)
				}
				if got := r.header.Get(protocol.AgentErrorHeader); got != "" {
					t.Errorf("%s on handler output: got %q, want none", protocol.AgentErrorHeader, got)
				}
				return
			}
			e := agentErr(t, r)
			if !strings.Contains(e.Error, tt.wantError) {
				t.Errorf("error: got %q, want it to contain %q", e.Error, tt.wantError)
			}
			if tt.wantStderr != "" {
				if e.Stderr == nil {
					t.Fatalf("stderr: got none, want a tail ending in %q", tt.wantStderr)
				}
				if !strings.HasSuffix(*e.Stderr, tt.wantStderr) {
					t.Errorf("stderr tail: got %q, want suffix %q", *e.Stderr, tt.wantStderr)
				}
				if len(*e.Stderr) != stderrTailSize {
					t.Errorf("stderr tail length: got %d, want %d", len(*e.Stderr), stderrTailSize)
				}
				if !strings.Contains(a.console.String(), "[fn] the last words\n") {
					t.Errorf("console: got %q, want the stderr line behind the function name", a.console.String())
				}
			}
		})
	}
}

func TestExecModeTimeoutKillsProcessGroup(t *testing.T) {
	t.Parallel()
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	cfg := protocol.Config{
		Mode:    protocol.ModeExec,
		Command: []string{"./slow.sh"},
		Env:     map[string]string{"PID_FILE": pidFile},
		Timeout: protocol.Duration(time.Second),
	}
	a := newAgent(t, cfg, map[string]string{"slow.sh": `#!/bin/bash
sleep 300 &
echo $! > "$PID_FILE"
wait
`}, nil)

	began := time.Now()
	r := a.do(t, http.MethodPost, "/", "", nil)
	if r.status != http.StatusGatewayTimeout {
		t.Fatalf("status: got %d, want %d (body %s)", r.status, http.StatusGatewayTimeout, r.body)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("504 took %s, want about the 1s timeout", took)
	}
	if e := agentErr(t, r); !strings.Contains(e.Error, "within 1s") {
		t.Errorf("error: got %q, want it to name the 1s timeout", e.Error)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("the handler did not record its child: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("child pid %q: %v", b, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !processGone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("child %d of the timed-out handler still runs, want it killed with the group", pid)
		}
		time.Sleep(10 * time.Millisecond) // the kill is asynchronous; nothing signals its end to us
	}
}

func TestExecModeHealth(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		command    []string
		wantStatus int
		want       string
		wantError  string
	}{
		{name: "resolvable command is ready", command: []string{"bash", "-c", "true"}, wantStatus: http.StatusOK, want: StateReady},
		{name: "code dir script is ready", command: []string{"./run.sh"}, wantStatus: http.StatusOK, want: StateReady},
		{name: "missing script has failed", command: []string{"./missing.sh"}, wantStatus: http.StatusServiceUnavailable, want: StateFailed, wantError: "missing.sh"},
		{name: "not executable has failed", command: []string{"./data.txt"}, wantStatus: http.StatusServiceUnavailable, want: StateFailed, wantError: "not executable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAgent(t, protocol.Config{Mode: protocol.ModeExec, Command: tt.command},
				map[string]string{"run.sh": "#!/bin/sh\n"}, nil)
			if err := os.WriteFile(filepath.Join(a.codeDir, "data.txt"), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			code, st := a.health(t)
			if code != tt.wantStatus || st.State != tt.want {
				t.Fatalf("health: got %d %+v, want %d %q", code, st, tt.wantStatus, tt.want)
			}
			if !strings.Contains(st.Error, tt.wantError) {
				t.Errorf("health error: got %q, want it to contain %q", st.Error, tt.wantError)
			}
		})
	}
}

func TestExecModePoweroffStopsRunningHandlers(t *testing.T) {
	t.Parallel()
	powered := make(chan struct{})
	cfg := protocol.Config{Mode: protocol.ModeExec, Command: []string{"./wait.sh"}}
	started := filepath.Join(t.TempDir(), "started")
	cfg.Env = map[string]string{"STARTED": started}
	a := newAgent(t, cfg, map[string]string{"wait.sh": "#!/bin/bash\ntouch \"$STARTED\"\nexec sleep 300\n"}, func(o *Options) {
		o.StopGrace = 200 * time.Millisecond
		o.Poweroff = func(ctx context.Context) error { close(powered); return nil }
	})
	inflight := make(chan response, 1)
	go func() { inflight <- a.doNoFail(http.MethodPost, "/") }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(started); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the handler never started")
		}
		time.Sleep(10 * time.Millisecond) // nothing signals the handler's start
	}

	r := a.control(t, http.MethodPost, protocol.PoweroffPath, nil)
	if r.status != http.StatusAccepted {
		t.Fatalf("poweroff status: got %d, want %d (body %s)", r.status, http.StatusAccepted, r.body)
	}
	select {
	case <-powered:
	case <-time.After(10 * time.Second):
		t.Fatal("poweroff func was not called")
	}
	select {
	case r := <-inflight:
		if r.status != http.StatusInternalServerError {
			t.Errorf("in-flight invocation: got %d, want %d (body %s)", r.status, http.StatusInternalServerError, r.body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the in-flight invocation did not end after poweroff")
	}
	if r := a.do(t, http.MethodPost, "/", "", nil); r.status != http.StatusInternalServerError {
		t.Errorf("invocation after poweroff: got %d, want %d (body %s)", r.status, http.StatusInternalServerError, r.body)
	}
	if code, st := a.health(t); code != http.StatusServiceUnavailable || st.State != StateFailed {
		t.Errorf("health after poweroff: got %d %+v, want 503 failed", code, st)
	}
}

// TestExecModeStalledBody: a client that sends part of its body and stalls
// gets a 408 within the timeout and the connection is closed, instead of a
// server goroutine waiting on it for ever.
func TestExecModeStalledBody(t *testing.T) {
	t.Parallel()
	cfg := protocol.Config{
		Mode:    protocol.ModeExec,
		Command: []string{"./h.sh"},
		Timeout: protocol.Duration(500 * time.Millisecond),
	}
	a := newAgent(t, cfg, map[string]string{"h.sh": "#!/bin/bash\ncat\n"}, nil)
	conn, err := net.Dial("tcp", strings.TrimPrefix(a.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: x\r\n%s: %s\r\nContent-Length: 10\r\n\r\nab", protocol.SecretHeader, testSecret)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout || !resp.Close {
		t.Errorf("got %d (close %v), want 408 and the connection closed", resp.StatusCode, resp.Close)
	}
}
