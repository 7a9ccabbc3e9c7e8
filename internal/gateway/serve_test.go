package gateway

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// closeSignal is a listener that says when it has been closed, which
// Shutdown does first.
type closeSignal struct {
	net.Listener
	once   sync.Once
	closed chan struct{}
}

func (l *closeSignal) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

func listen(t *testing.T) *closeSignal {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &closeSignal{Listener: ln, closed: make(chan struct{})}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestServe(t *testing.T) {
	tests := []struct {
		name string
		// finish lets the in-flight request end once draining has begun.
		finish     bool
		wantErr    string // "" for a clean drain
		wantStatus int    // of the in-flight request, 0 when it must fail
	}{
		{name: "drains in-flight requests", finish: true, wantStatus: 200},
		{name: "drain times out", finish: false, wantErr: "draining http requests: context deadline exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			arrived, finish := make(chan struct{}), make(chan struct{})
			upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				close(arrived)
				select {
				case <-finish:
					io.WriteString(w, "done")
				case <-r.Context().Done():
				}
			})
			h := newHarness(t, Options{ShutdownTimeout: 200 * time.Millisecond}, upstream, nil)
			ln := listen(t)
			ctx, stop := context.WithCancel(t.Context())
			defer stop()
			served := make(chan error, 1)
			go func() { served <- h.gw.Serve(ctx, ln) }()

			type answer struct {
				status int
				body   string
				err    error
			}
			answers := make(chan answer, 1)
			go func() {
				res, err := http.Get("http://" + ln.Addr().String() + "/invoke/fn")
				if err != nil {
					answers <- answer{err: err}
					return
				}
				defer res.Body.Close()
				b, err := io.ReadAll(res.Body)
				answers <- answer{status: res.StatusCode, body: string(b), err: err}
			}()
			<-arrived
			stop()
			<-ln.closed
			if tt.finish {
				close(finish)
			}
			err := <-served
			a := <-answers
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("Serve: got error %v, want nil", err)
				}
				if a.err != nil || a.status != tt.wantStatus || a.body != "done" {
					t.Errorf("in-flight request: got %d %q %v, want %d %q", a.status, a.body, a.err, tt.wantStatus, "done")
				}
			} else {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("Serve: got error %v, want one containing %q", err, tt.wantErr)
				}
				if a.err == nil {
					t.Errorf("in-flight request: got %d %q, want a connection error", a.status, a.body)
				}
			}
			if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
				t.Errorf("dialing after Serve returned: got a connection, want refused")
			}
		})
	}
}

func TestServeListenerFails(t *testing.T) {
	ln := listen(t)
	ln.Close()
	g := New(Options{}, &fakeFunctions{}, nil)
	err := g.Serve(t.Context(), ln)
	if err == nil || errors.Is(err, http.ErrServerClosed) || !strings.Contains(err.Error(), "serving http on") {
		t.Errorf("Serve on a closed listener: got %v, want a serving error", err)
	}
}

// TestServeHeaderLimit checks that Serve refuses oversized headers, which
// exec mode would turn into environment variables above Linux's cap.
func TestServeHeaderLimit(t *testing.T) {
	tests := []struct {
		name       string
		header     int // bytes in X-Big
		wantStatus int
	}{
		{name: "100KiB header", header: 100 << 10, wantStatus: http.StatusRequestHeaderFieldsTooLarge},
		{name: "32KiB header", header: 32 << 10, wantStatus: http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
			h := newHarness(t, Options{}, upstream, nil)
			ln := listen(t)
			ctx, stop := context.WithCancel(t.Context())
			served := make(chan error, 1)
			go func() { served <- h.gw.Serve(ctx, ln) }()
			defer func() {
				stop()
				if err := <-served; err != nil {
					t.Errorf("Serve: %v", err)
				}
			}()

			req, err := http.NewRequestWithContext(t.Context(), "GET", "http://"+ln.Addr().String()+"/invoke/fn", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("X-Big", strings.Repeat("x", tt.header))
			client := &http.Client{Transport: &http.Transport{}}
			defer client.CloseIdleConnections()
			res, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != tt.wantStatus {
				t.Errorf("got status %d, want %d", res.StatusCode, tt.wantStatus)
			}
		})
	}
}
