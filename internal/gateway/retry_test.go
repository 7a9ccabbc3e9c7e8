package gateway

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/faasvm/appliance/internal/controller"
)

// resettingEndpoint accepts connections, reads the request head and a few
// bytes of its body, then resets the connection (RST, not FIN).
func resettingEndpoint(t *testing.T) string { t.Helper(); return resetting(t, true) }

// resetAfterHead resets the connection as soon as the request head is read.
func resetAfterHead(t *testing.T) string { t.Helper(); return resetting(t, false) }

func resetting(t *testing.T, readBody bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				br := bufio.NewReader(conn)
				for {
					line, err := br.ReadString('\n')
					if err != nil || line == "\r\n" {
						break
					}
				}
				if readBody {
					_, _ = br.Read(make([]byte, 4)) // some of the body
				}
				conn.(*net.TCPConn).SetLinger(0)
				conn.Close()
			}()
		}
	}()
	return ln.Addr().String()
}

// Passive health: an instance that refuses or resets the connection is
// reported as suspect at once; the request goes once to another instance
// only when no byte of its body was read. After a refusal (nothing was
// sent) it may wait for a replacement within the boot wait; after a reset
// it takes only one ready at once.
func TestInvokeRetriesUnreachable(t *testing.T) {
	live := httptest.NewServer(echoUpstream())
	t.Cleanup(live.Close)
	tests := []struct {
		name        string
		first       func(t *testing.T) string // the first instance's endpoint
		body        string
		noOther     bool // no other ready instance
		readyAt     int  // the Acquire call that first returns another instance (0: the second)
		wantStatus  int
		wantSuspect int
		wantAcquire int
		wantRelease []int
	}{
		{name: "refused GET goes to another instance", first: deadEndpoint,
			wantStatus: 200, wantSuspect: 1, wantAcquire: 2, wantRelease: []int{0, 200}},
		{name: "refused POST goes to another instance (nothing of the body was sent)", first: deadEndpoint, body: "payload",
			wantStatus: 200, wantSuspect: 1, wantAcquire: 2, wantRelease: []int{0, 200}},
		{name: "reset after the body was read is not retried", first: resettingEndpoint, body: strings.Repeat("x", 64),
			wantStatus: 502, wantSuspect: 1, wantAcquire: 1, wantRelease: []int{502}},
		{name: "refused, no other ready: waits for the replacement", first: deadEndpoint, body: "payload", readyAt: 3,
			wantStatus: 200, wantSuspect: 1, wantAcquire: 3, wantRelease: []int{0, 200}},
		{name: "refused, no replacement in time: 503", first: deadEndpoint, noOther: true,
			wantStatus: 503, wantSuspect: 1, wantAcquire: 3, wantRelease: []int{503}},
		{name: "reset before the body was read, no other ready: no wait", first: resetAfterHead, noOther: true,
			wantStatus: 502, wantSuspect: 1, wantAcquire: 2, wantRelease: []int{502}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first := tt.first(t)
			var mu sync.Mutex
			suspects := 0
			fns := &fakeFunctions{}
			calls := 0
			fns.acquire = func(ctx context.Context, name string) (controller.Instance, error) {
				mu.Lock()
				calls++
				n := calls
				mu.Unlock()
				inst := fns.instance(name)
				inst.Endpoint, inst.VMID = first, "vm-1"
				if n > 1 {
					if tt.noOther || n < tt.readyAt {
						if ctx.Err() == nil {
							<-ctx.Done() // a waiting Acquire waits its whole bound
						}
						return controller.Instance{}, fmt.Errorf("%w: %v", controller.ErrNotReady, context.Cause(ctx))
					}
					inst.Endpoint, inst.VMID = live.Listener.Addr().String(), "vm-2"
				}
				inst.Suspect = func() { mu.Lock(); suspects++; mu.Unlock() }
				return inst, nil
			}
			h := newHarness(t, Options{BootWait: 300 * time.Millisecond}, nil, fns)
			method := "GET"
			var body io.Reader
			if tt.body != "" {
				method, body = "POST", strings.NewReader(tt.body)
			}
			status, _, got := h.do(t, h.newRequest(t, method, "/invoke/fn/p", body))
			if status != tt.wantStatus {
				t.Fatalf("status: got %d (%s), want %d", status, got, tt.wantStatus)
			}
			if tt.wantStatus == 200 {
				if seen := decodeSeen(t, got); seen.Body != tt.body {
					t.Errorf("retried body: got %q, want %q", seen.Body, tt.body)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if suspects != tt.wantSuspect {
				t.Errorf("Suspect calls: got %d, want %d", suspects, tt.wantSuspect)
			}
			if len(fns.acquires()) != tt.wantAcquire {
				t.Errorf("Acquire calls: got %d, want %d", len(fns.acquires()), tt.wantAcquire)
			}
			checkReleased(t, fns, tt.wantRelease...)
			lines := h.logs.requests(t)
			if len(lines) != 1 || lines[0]["status"] != float64(tt.wantStatus) {
				t.Errorf("access log: got %v, want one line with status %d", lines, tt.wantStatus)
			}
		})
	}
}

// A response of unknown length (streaming) is flushed as it comes; one
// of known length is not flushed before its end, so it keeps its
// Content-Length.
func TestInvokeKnownLengthKeepsContentLength(t *testing.T) {
	h := newHarness(t, Options{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		io.WriteString(w, "he")
		w.(http.Flusher).Flush()
		io.WriteString(w, "llo")
	}), nil)
	res, err := http.DefaultClient.Do(h.newRequest(t, "GET", "/invoke/fn", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	h.wait(t, 1)
	if string(b) != "hello" || res.ContentLength != 5 || len(res.TransferEncoding) != 0 {
		t.Errorf("got %q length %d encoding %v, want %q with Content-Length 5, not chunked", b, res.ContentLength, res.TransferEncoding, "hello")
	}
}
