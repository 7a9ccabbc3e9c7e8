package server

import (
	"net/http"
	"strings"
	"testing"

	"github.com/faasvm/appliance/guest/protocol"
)

func TestSecret(t *testing.T) {
	t.Parallel()
	a := newAgent(t, protocol.Config{Mode: protocol.ModeExec, Command: []string{"bash", "-c", "printf ran"}}, nil, nil)
	tests := []struct {
		name       string
		method     string
		path       string
		secret     string // "" sends no secret header
		wantStatus int
	}{
		{name: "no secret on health", method: http.MethodGet, path: protocol.HealthPath, wantStatus: http.StatusForbidden},
		{name: "wrong secret on health", method: http.MethodGet, path: protocol.HealthPath, secret: "nope", wantStatus: http.StatusForbidden},
		{name: "secret prefix on health", method: http.MethodGet, path: protocol.HealthPath, secret: testSecret[:4], wantStatus: http.StatusForbidden},
		{name: "no secret on invoke", method: http.MethodPost, path: "/", wantStatus: http.StatusForbidden},
		{name: "wrong secret on poweroff", method: http.MethodPost, path: protocol.PoweroffPath, secret: "nope", wantStatus: http.StatusForbidden},
		{name: "right secret on health", method: http.MethodGet, path: protocol.HealthPath, secret: testSecret, wantStatus: http.StatusOK},
		{name: "right secret on invoke", method: http.MethodPost, path: "/", secret: testSecret, wantStatus: http.StatusOK},
		{name: "health wants GET", method: http.MethodPost, path: protocol.HealthPath, secret: testSecret, wantStatus: http.StatusMethodNotAllowed},
		{name: "poweroff wants POST", method: http.MethodGet, path: protocol.PoweroffPath, secret: testSecret, wantStatus: http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := a.do(t, tt.method, tt.path, "", map[string]string{protocol.SecretHeader: tt.secret})
			if r.status != tt.wantStatus {
				t.Fatalf("status: got %d, want %d (body %s)", r.status, tt.wantStatus, r.body)
			}
			if tt.wantStatus == http.StatusForbidden {
				if e := agentErr(t, r); !strings.Contains(e.Error, protocol.SecretHeader) {
					t.Errorf("error: got %q, want it to name %s", e.Error, protocol.SecretHeader)
				}
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     protocol.Config
		opts    Options
		wantErr string
	}{
		{name: "invalid config", cfg: protocol.Config{Mode: "batch", Secret: "s", Timeout: 1}, opts: Options{CodeDir: "/"}, wantErr: "mode"},
		{name: "no code dir", cfg: protocol.Config{Mode: protocol.ModeExec, Command: []string{"true"}, Secret: "s", Timeout: 1}, wantErr: "code directory"},
		{name: "http mode without run dir", cfg: protocol.Config{Mode: protocol.ModeHTTP, Handler: "h.py", Runtime: "python3", Secret: "s", Timeout: 1}, opts: Options{CodeDir: "/"}, wantErr: "run directory"},
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
