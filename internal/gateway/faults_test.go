package gateway

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/faasvm/appliance/internal/controller"
)

// TestEvery503HasRetryAfter walks every way the gateway answers 503 (its
// own errors, and the agent's or the function's 503 passed through) and
// checks each carries Retry-After.
func TestEvery503HasRetryAfter(t *testing.T) {
	fail := func(err error) func(context.Context, string) (controller.Instance, error) {
		return func(context.Context, string) (controller.Instance, error) { return controller.Instance{}, err }
	}
	waitOut := func(ctx context.Context, _ string) (controller.Instance, error) {
		<-ctx.Done()
		return controller.Instance{}, ctx.Err()
	}
	upstream503 := func(retryAfter string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if retryAfter != "" {
				w.Header().Set("Retry-After", retryAfter)
			}
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"error":"handler is starting"}`)
		}
	}
	tests := []struct {
		name     string
		acquire  func(context.Context, string) (controller.Instance, error)
		upstream http.Handler
		path     string
		want     string // the Retry-After wanted ("": any value)
	}{
		{name: "not ready", acquire: fail(fmt.Errorf("%w: f: no instance", controller.ErrNotReady)), path: "/invoke/f", want: "2"},
		{name: "boot wait ran out", acquire: waitOut, path: "/invoke/f", want: "2"},
		{name: "failed function", acquire: fail(fmt.Errorf("%w: f: vm exited", controller.ErrUnavailable)), path: "/invoke/f", want: "5"},
		{name: "no memory for a VM", acquire: fail(fmt.Errorf("%w: f: waiting for memory: a VM of f needs 320 MiB", controller.ErrNoMemory)), path: "/invoke/f", want: "5"},
		{name: "shutting down", acquire: fail(fmt.Errorf("%w: f: the appliance is shutting down", controller.ErrUnavailable)), path: "/invoke/f"},
		{name: "async disabled", path: "/async-function/f"},
		{name: "agent 503 without Retry-After", upstream: upstream503(""), path: "/invoke/f", want: defaultRetryAfter},
		{name: "function's own Retry-After kept", upstream: upstream503("7"), path: "/invoke/f", want: "7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Options{BootWait: 50 * time.Millisecond}, tt.upstream, &fakeFunctions{acquire: tt.acquire})
			status, hdr, body := h.do(t, h.newRequest(t, http.MethodPost, tt.path, strings.NewReader("x")))
			if status != http.StatusServiceUnavailable {
				t.Fatalf("status %d (%s), want 503", status, body)
			}
			got := hdr.Get("Retry-After")
			if got == "" {
				t.Fatalf("503 without Retry-After (body %s)", body)
			}
			if tt.want != "" && got != tt.want {
				t.Errorf("Retry-After %q, want %q", got, tt.want)
			}
		})
	}
}

// TestDescribeEvery503HasRetryAfter: describe never maps an error to 503
// without a retry hint (fail fills one in for any that would lack it).
func TestDescribeEvery503HasRetryAfter(t *testing.T) {
	for _, err := range []error{
		controller.ErrNotReady, controller.ErrUnavailable, controller.ErrNoMemory, errAsyncDisabled,
		fmt.Errorf("%w: %w", controller.ErrUnavailable, errAsyncDisabled),
	} {
		status, _, retry := describe(err)
		if status == http.StatusServiceUnavailable && retry == "" {
			t.Errorf("describe(%v): 503 without Retry-After", err)
		}
	}
}

// TestChunkedWithContentLength sends, on one raw connection, a request with
// both Content-Length and Transfer-Encoding: chunked whose chunked body ends
// early, followed by a second request hidden in what Content-Length would
// count: the gateway must answer the first by its chunked framing and close
// the connection, so the hidden request is never served.
func TestChunkedWithContentLength(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, r.URL.Path+":"+string(b))
		mu.Unlock()
		io.WriteString(w, "ok")
	})
	h := newHarness(t, Options{}, up, nil)
	conn, err := net.Dial("tcp", h.host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	smuggled := "GET /invoke/f/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
	body := "3\r\nabc\r\n0\r\n\r\n" + smuggled
	req := fmt.Sprintf("POST /invoke/f/first HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n%s", len(body), body)
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the first answer: %v", err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || string(b) != "ok" {
		t.Errorf("first answer %d %q, want 200 ok", res.StatusCode, b)
	}
	if !res.Close {
		t.Errorf("first answer keeps the connection open (Connection: %q), want close", res.Header.Get("Connection"))
	}
	if res2, err := http.ReadResponse(br, nil); err == nil {
		res2.Body.Close()
		t.Errorf("a second answer (%d) came on the connection: the hidden request was served", res2.StatusCode)
	}
	h.wait(t, 1)
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 || seen[0] != "/first:abc" {
		t.Errorf("upstream saw %q, want only [/first:abc]", seen)
	}
}

// truncObserver records truncated answers too.
type truncObserver struct {
	fakeObserver
	truncated []int
}

func (o *truncObserver) InvocationTruncated(function string, status int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.truncated = append(o.truncated, status)
}

var _ TruncationObserver = (*truncObserver)(nil)

// TestTruncatedStreamCounted: an answer cut off mid-body is counted as
// truncated (with the status it committed), reported done with status 0,
// and released as no answer.
func TestTruncatedStreamCounted(t *testing.T) {
	up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	obs := &truncObserver{}
	fns := &fakeFunctions{}
	h := newHarness(t, Options{Observer: obs}, up, fns)
	res, err := http.DefaultClient.Do(h.newRequest(t, http.MethodGet, "/invoke/f", nil))
	if err == nil {
		_, err = io.ReadAll(res.Body)
		res.Body.Close()
	}
	if err == nil {
		t.Errorf("the client read a whole answer; want an error (unexpected EOF)")
	}
	h.wait(t, 1)
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if len(obs.truncated) != 1 || obs.truncated[0] != http.StatusOK {
		t.Errorf("truncated %v, want [200]", obs.truncated)
	}
	if len(obs.done) != 1 || obs.done[0].status != 0 {
		t.Errorf("done %+v, want one with status 0", obs.done)
	}
	if got := fns.releases(); len(got) != 1 || got[0] != 0 {
		t.Errorf("released %v, want [0]", got)
	}
}
