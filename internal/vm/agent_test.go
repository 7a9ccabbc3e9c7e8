package vm

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/faasvm/appliance/guest/protocol"
	"github.com/faasvm/appliance/internal/vmtest"
)

const testSecret = "s3cret"

// agentServer answers like the guest agent: 403 JSON on a wrong secret,
// else status and body on every request. It records each request's
// method, path and secret.
type agentServer struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen []string // "METHOD PATH SECRET"
}

func newAgentServer(t *testing.T, handle http.HandlerFunc) *agentServer {
	t.Helper()
	a := &agentServer{}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.seen = append(a.seen, r.Method+" "+r.URL.Path+" "+r.Header.Get(protocol.ControlHeader))
		a.mu.Unlock()
		if r.Header.Get(protocol.ControlHeader) != testSecret {
			http.Error(w, `{"error":"bad secret"}`, http.StatusForbidden)
			return
		}
		handle(w, r)
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *agentServer) endpoint() string { return a.srv.Listener.Addr().String() }

func (a *agentServer) requests() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.seen...)
}

func answer(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(status)
		w.Write([]byte(body))
	}
}

// target returns an agent server answering with handle and its endpoint,
// or, when dead, no server and a loopback endpoint nothing listens on.
func target(t *testing.T, dead bool, handle http.HandlerFunc) (*agentServer, string) {
	t.Helper()
	if dead {
		return nil, deadEndpoint(t)
	}
	srv := newAgentServer(t, handle)
	return srv, srv.endpoint()
}

// deadEndpoint is a loopback address nothing listens on.
func deadEndpoint(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestAgentClientHealth(t *testing.T) {
	tests := []struct {
		name       string
		handle     http.HandlerFunc
		secret     string
		dead       bool
		wantReady  bool
		wantFailed string
		wantErr    string // substring; "" for no error
		wantRefuse bool
	}{
		{name: "ready", handle: answer(http.StatusOK, `{"status":"ready"}`), secret: testSecret, wantReady: true},
		{name: "starting", handle: answer(http.StatusServiceUnavailable, `{"status":"starting"}`), secret: testSecret,
			wantErr: "health check answered 503"},
		{name: "handler failed", handle: answer(http.StatusServiceUnavailable, `{"status":"failed","error":"ImportError: no module x"}`),
			secret: testSecret, wantFailed: "ImportError: no module x", wantErr: "health check answered 503"},
		{name: "handler failed without reason", handle: answer(http.StatusServiceUnavailable, `{"status":"failed"}`),
			secret: testSecret, wantFailed: "no reason given", wantErr: "health check answered 503"},
		{name: "failed status on a 500 is no handler failure", handle: answer(http.StatusInternalServerError, `{"status":"failed"}`),
			secret: testSecret, wantErr: "health check answered 500"},
		{name: "wrong secret", handle: answer(http.StatusOK, ""), secret: "nope",
			wantErr: "refused the secret (403)", wantRefuse: true},
		{name: "nothing listens", dead: true, secret: testSecret, wantErr: "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, endpoint := target(t, tt.dead, tt.handle)
			ready, failed, err := NewAgentClient(nil).Health(context.Background(), endpoint, tt.secret)
			if ready != tt.wantReady {
				t.Errorf("ready: got %v, want %v", ready, tt.wantReady)
			}
			if failed != tt.wantFailed {
				t.Errorf("failed reason: got %q, want %q", failed, tt.wantFailed)
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("error: got %v, want none", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("error: got %v, want one containing %q", err, tt.wantErr)
			}
			if got := errors.Is(err, ErrSecretRefused); got != tt.wantRefuse {
				t.Errorf("errors.Is(err, ErrSecretRefused): got %v, want %v", got, tt.wantRefuse)
			}
			if srv != nil {
				want := []string{"GET " + protocol.HealthPath + " " + tt.secret}
				if got := srv.requests(); strings.Join(got, "|") != strings.Join(want, "|") {
					t.Errorf("requests: got %q, want %q", got, want)
				}
			}
		})
	}
}

func TestAgentClientHealthCancelled(t *testing.T) {
	release := make(chan struct{})
	srv := newAgentServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	t.Cleanup(func() { close(release) })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ready, _, err := NewAgentClient(nil).Health(ctx, srv.endpoint(), testSecret)
	if ready || !errors.Is(err, context.Canceled) {
		t.Errorf("got ready %v, error %v; want not ready and context.Canceled", ready, err)
	}
}

func TestAgentClientPoweroff(t *testing.T) {
	tests := []struct {
		name     string
		handle   http.HandlerFunc
		secret   string
		dead     bool
		wantErr  string // substring; "" for no error
		wantLogs string // substring of the debug log; "" for none
	}{
		{name: "accepted", handle: answer(http.StatusAccepted, ""), secret: testSecret},
		{name: "ok", handle: answer(http.StatusOK, ""), secret: testSecret},
		{name: "refused secret", handle: answer(http.StatusAccepted, ""), secret: "nope", wantErr: "poweroff answered 403"},
		{name: "server error", handle: answer(http.StatusInternalServerError, ""), secret: testSecret,
			wantErr: "poweroff answered 500"},
		{name: "nothing listens", dead: true, secret: testSecret, wantErr: "connection refused"},
		{
			// The guest going down mid-answer: wait for it, do not fail.
			name: "connection dropped mid-answer", secret: testSecret, wantLogs: "poweroff request ended early",
			handle: func(w http.ResponseWriter, _ *http.Request) {
				conn, _, err := w.(http.Hijacker).Hijack()
				if err == nil {
					conn.Close()
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, endpoint := target(t, tt.dead, tt.handle)
			logs := &vmtest.LogBuffer{}
			err := NewAgentClient(nil).Poweroff(context.Background(), vmtest.NewLogger(logs), endpoint, tt.secret)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("error: got %v, want none", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("error: got %v, want one containing %q", err, tt.wantErr)
			}
			if got := logs.String(); tt.wantLogs == "" && got != "" || !strings.Contains(got, tt.wantLogs) {
				t.Errorf("logs: got %q, want %q", got, tt.wantLogs)
			}
			if srv != nil {
				want := "POST " + protocol.PoweroffPath + " " + tt.secret
				if got := srv.requests(); len(got) != 1 || got[0] != want {
					t.Errorf("requests: got %q, want [%q]", got, want)
				}
			}
		})
	}
}

func TestNewAgentClientUsesGivenClient(t *testing.T) {
	srv := newAgentServer(t, answer(http.StatusOK, ""))
	var used bool
	hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		used = true
		return http.DefaultTransport.RoundTrip(r)
	})}
	ready, _, err := NewAgentClient(hc).Health(context.Background(), srv.endpoint(), testSecret)
	if !ready || err != nil || !used {
		t.Errorf("got ready %v, error %v, given client used %v; want true, nil, true", ready, err, used)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
