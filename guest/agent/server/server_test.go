package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/faasvm/appliance/guest/protocol"
)

func TestSecret(t *testing.T) {
	t.Parallel()
	a := newAgent(t, protocol.Config{Mode: protocol.ModeExec, Command: []string{"bash", "-c", "printf ran"}}, nil, nil)
	tests := []struct {
		name       string
		control    bool // send to the control handler
		method     string
		path       string
		header     string // the secret header to send ("" none)
		secret     string
		wantStatus int
		wantNamed  string // the header a 403 names
	}{
		{name: "data: no secret", method: http.MethodPost, path: "/", wantStatus: http.StatusForbidden, wantNamed: protocol.SecretHeader},
		{name: "data: wrong secret", method: http.MethodPost, path: "/", header: protocol.SecretHeader, secret: "nope", wantStatus: http.StatusForbidden, wantNamed: protocol.SecretHeader},
		{name: "data: secret prefix", method: http.MethodPost, path: "/", header: protocol.SecretHeader, secret: testSecret[:4], wantStatus: http.StatusForbidden, wantNamed: protocol.SecretHeader},
		{name: "data: the control secret is not the data secret", method: http.MethodPost, path: "/", header: protocol.SecretHeader, secret: testControlSecret, wantStatus: http.StatusForbidden, wantNamed: protocol.SecretHeader},
		{name: "data: control header instead of the data secret", method: http.MethodPost, path: "/", header: protocol.ControlHeader, secret: testControlSecret, wantStatus: http.StatusForbidden, wantNamed: protocol.SecretHeader},
		{name: "data: right secret", method: http.MethodPost, path: "/", header: protocol.SecretHeader, secret: testSecret, wantStatus: http.StatusOK},
		{name: "control: no secret on health", control: true, method: http.MethodGet, path: protocol.HealthPath, wantStatus: http.StatusForbidden, wantNamed: protocol.ControlHeader},
		{name: "control: wrong secret on health", control: true, method: http.MethodGet, path: protocol.HealthPath, header: protocol.ControlHeader, secret: "nope", wantStatus: http.StatusForbidden, wantNamed: protocol.ControlHeader},
		{name: "control: the data secret on health", control: true, method: http.MethodGet, path: protocol.HealthPath, header: protocol.ControlHeader, secret: testSecret, wantStatus: http.StatusForbidden, wantNamed: protocol.ControlHeader},
		{name: "control: data header with the control secret", control: true, method: http.MethodGet, path: protocol.HealthPath, header: protocol.SecretHeader, secret: testControlSecret, wantStatus: http.StatusForbidden, wantNamed: protocol.ControlHeader},
		{name: "control: wrong secret on poweroff", control: true, method: http.MethodPost, path: protocol.PoweroffPath, header: protocol.ControlHeader, secret: "nope", wantStatus: http.StatusForbidden, wantNamed: protocol.ControlHeader},
		{name: "control: right secret on health", control: true, method: http.MethodGet, path: protocol.HealthPath, header: protocol.ControlHeader, secret: testControlSecret, wantStatus: http.StatusOK},
		{name: "control: health wants GET", control: true, method: http.MethodPost, path: protocol.HealthPath, header: protocol.ControlHeader, secret: testControlSecret, wantStatus: http.StatusMethodNotAllowed},
		{name: "control: poweroff wants POST", control: true, method: http.MethodGet, path: protocol.PoweroffPath, header: protocol.ControlHeader, secret: testControlSecret, wantStatus: http.StatusMethodNotAllowed},
		{name: "control: no invocation there", control: true, method: http.MethodPost, path: "/", header: protocol.ControlHeader, secret: testControlSecret, wantStatus: http.StatusNotFound},
		{name: "control: exact paths only", control: true, method: http.MethodGet, path: "/x/.." + protocol.HealthPath, header: protocol.ControlHeader, secret: testControlSecret, wantStatus: http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := a.url
			if tt.control {
				base = a.controlURL
			}
			hdr := map[string]string{}
			if tt.header != "" {
				hdr[tt.header] = tt.secret
			}
			r := rawRequest(t, base, tt.method, tt.path, hdr)
			if r.status != tt.wantStatus {
				t.Fatalf("status: got %d, want %d (body %s)", r.status, tt.wantStatus, r.body)
			}
			if tt.wantStatus == http.StatusForbidden {
				if e := agentErr(t, r); !strings.Contains(e.Error, tt.wantNamed) {
					t.Errorf("error: got %q, want it to name %s", e.Error, tt.wantNamed)
				}
			}
		})
	}
}

// TestDataHasNoReservedPaths: every path and method on the data handler,
// the old control paths in every spelling included, reaches the function,
// which sees the path as sent and neither secret header; the agent stays
// up and healthy.
func TestDataHasNoReservedPaths(t *testing.T) {
	t.Parallel()
	powered := make(chan struct{}, 1)
	a := newAgent(t, protocol.Config{Mode: protocol.ModeExec, Command: []string{"./h.sh"}},
		map[string]string{"h.sh": "#!/bin/bash\nprintf 'fn %s %s secret=%s control=%s' \"$Http_Method\" \"$Http_Path\" \"${Http_X_Faas_Secret:-none}\" \"${Http_X_Faas_Control:-none}\"\n"},
		func(o *Options) { o.Poweroff = func(context.Context) error { powered <- struct{}{}; return nil } })
	paths := []string{
		"/_/poweroff", "/_/health", "/%5F/poweroff", "/_%2Fpoweroff", "/x/../_/poweroff", "//_/poweroff",
		"/_/poweroff/", "/poweroff", "/health", "/_//poweroff",
	}
	for _, path := range paths {
		for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
			t.Run(method+" "+path, func(t *testing.T) {
				r := rawRequest(t, a.url, method, path, map[string]string{
					protocol.SecretHeader:  testSecret,
					protocol.ControlHeader: testControlSecret, // forged: means nothing here
				})
				unescaped, err := url.PathUnescape(path) // Http_Path is the decoded path
				if err != nil {
					t.Fatal(err)
				}
				want := "fn " + method + " " + unescaped + " secret=none control=none"
				if r.status != http.StatusOK || string(r.body) != want {
					t.Errorf("got %d %q, want 200 %q (the function answering)", r.status, r.body, want)
				}
			})
		}
	}
	select {
	case <-powered:
		t.Fatal("a data request powered the VM off")
	default:
	}
	if code, st := a.health(t); code != http.StatusOK || st.State != StateReady {
		t.Errorf("health after the data requests: got %d %+v, want 200 ready", code, st)
	}
}

// rawRequest writes one HTTP/1.1 request with the path exactly as given
// (no cleaning or escaping by a client library) and reads the answer.
func rawRequest(t *testing.T, base, method, path string, headers map[string]string) response {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: agent\r\nContent-Length: 0\r\nConnection: close\r\n", method, path)
	for k, v := range headers {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: body}
}

func TestNewRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     protocol.Config
		opts    Options
		wantErr string
	}{
		{name: "invalid config", cfg: protocol.Config{Mode: "batch", Secret: "s", ControlSecret: "c", Timeout: 1}, opts: Options{CodeDir: "/"}, wantErr: "mode"},
		{name: "no code dir", cfg: protocol.Config{Mode: protocol.ModeExec, Command: []string{"true"}, Secret: "s", ControlSecret: "c", Timeout: 1}, wantErr: "code directory"},
		{name: "http mode without run dir", cfg: protocol.Config{Mode: protocol.ModeHTTP, Handler: "h.py", Runtime: "python3", Secret: "s", ControlSecret: "c", Timeout: 1}, opts: Options{CodeDir: "/"}, wantErr: "run directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(&tt.cfg, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New: got error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
