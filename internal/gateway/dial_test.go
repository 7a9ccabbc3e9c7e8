package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestSerialDialer(t *testing.T) {
	var mu sync.Mutex
	perAddr, maxPerAddr, all, maxAll := map[string]int{}, map[string]int{}, 0, 0
	d := newSerialDialer(func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		perAddr[addr]++
		all++
		maxPerAddr[addr] = max(maxPerAddr[addr], perAddr[addr])
		maxAll = max(maxAll, all)
		mu.Unlock()
		time.Sleep(15 * time.Millisecond)
		mu.Lock()
		perAddr[addr]--
		all--
		mu.Unlock()
		return nil, fmt.Errorf("dial %s: %w", addr, syscall.ECONNREFUSED)
	})
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Go(func() {
			addr := []string{"127.0.0.1:1", "127.0.0.1:2"}[i%2]
			if _, err := d.DialContext(t.Context(), "tcp", addr); !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("dial %s: got %v, want the inner dial's error", addr, err)
			}
		})
	}
	wg.Wait()
	for addr, n := range maxPerAddr {
		if n != 1 {
			t.Errorf("%s: got %d dials at once, want 1", addr, n)
		}
	}
	if maxAll != 2 {
		t.Errorf("dials at once over two addresses: got %d, want 2 (addresses do not wait for each other)", maxAll)
	}
	if n := d.pending(); n != 0 {
		t.Errorf("gates left after all dials: got %d, want 0", n)
	}

	t.Run("a dial waiting for its turn ends with its context", func(t *testing.T) {
		release := make(chan struct{})
		started := make(chan struct{})
		d := newSerialDialer(func(ctx context.Context, network, addr string) (net.Conn, error) {
			close(started)
			<-release
			return nil, syscall.ECONNREFUSED
		})
		done := make(chan struct{})
		go func() { defer close(done); _, _ = d.DialContext(context.Background(), "tcp", "127.0.0.1:9") }()
		<-started
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
		defer cancel()
		_, err := d.DialContext(ctx, "tcp", "127.0.0.1:9")
		var op *net.OpError
		if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &op) || op.Op != "dial" {
			t.Errorf("waiting dial: got %v, want a dial error wrapping the deadline", err)
		}
		if dialRefused(err) {
			t.Errorf("a dial that timed out waiting is taken for a refusal: %v", err)
		}
		close(release)
		<-done
		if n := d.pending(); n != 0 {
			t.Errorf("gates left: got %d, want 0", n)
		}
	})
}

// backlogOneListener listens on loopback with a backlog of 1, as slirp's
// hostfwd does, and accepts one connection every acceptEvery.
func backlogOneListener(t *testing.T, acceptEvery time.Duration, h http.Handler) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 1); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "backlog-1")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	t.Cleanup(func() { srv.Close() })
	go func() { _ = srv.Serve(slowListener{Listener: ln, every: acceptEvery}) }()
	return ln.Addr().String()
}

type slowListener struct {
	net.Listener
	every time.Duration
}

func (l slowListener) Accept() (net.Conn, error) {
	time.Sleep(l.every)
	return l.Listener.Accept()
}

// The requests that queued while an instance booted are let go together
// when it becomes ready. On a listener with slirp's backlog of 1 that
// accepts slowly (a TCG guest's QEMU main loop), every one of them must
// get its answer: none reset by the host kernel's SYN-cookie path.
func TestBurstOnBacklogOneEndpoint(t *testing.T) {
	// The handler holds each connection a while, so that no request can
	// reuse another's: each needs its own connection, all at once.
	addr := backlogOneListener(t, 20*time.Millisecond, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(200 * time.Millisecond)
		w.Write([]byte("ok"))
	}))
	fns := &fakeFunctions{endpoint: addr}
	h := newHarness(t, Options{}, nil, fns)
	const n = 32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			req := h.newRequest(t, "POST", "/invoke/fn/p", nil)
			req.Body = http.NoBody
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- fmt.Errorf("request %d: %w", i, err)
				return
			}
			res.Body.Close()
			if res.StatusCode != 200 {
				errs <- fmt.Errorf("request %d: status %d, want 200 (%s)", i, res.StatusCode, res.Header.Get("X-Faas-Error"))
			}
		})
	}
	close(start)
	wg.Wait()
	h.wait(t, n)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, l := range h.logs.requests(t) {
		if l["status"] != float64(200) {
			t.Errorf("access log: %v", l)
		}
	}
}
