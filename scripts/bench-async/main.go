// Command bench-async measures asynchronous calls on loopback, in two
// bounded phases against one warm http-mode function (functions/echo):
//
//  1. accepted: -c clients POST /async-function/<name> as fast as they can
//     (up to -n calls or -duration), with the workers not yet started, so
//     the figure is the gateway's: validation, body read, and the call
//     stored durably in the embedded JetStream (record + message) before
//     its 202.
//  2. completed: the workers start and deliver the backlog through the
//     gateway's /invoke path to the VM (maxReplicas 1 × concurrency -fc);
//     completions per second are read from
//     queue_worker_messages_processed_total over -window (or until the
//     backlog is drained), after the first completion.
//
// Like scripts/loadtest it builds the appliance in-process (a temporary
// state dir sharing the configured image cache, the gateway on
// 127.0.0.1:0) and stops by itself. Assets come from the environment
// (FAAS_KERNEL_DIR, FAAS_AGENT_BIN, FAAS_STATE_DIR, FAAS_RUNTIMES_DIR);
// scripts/bench-async.sh sets them. It boots a VM: run it under
// `flock /tmp/faas-vm.lock`.
//
//	go run ./scripts/bench-async -n 20000 -c 32 -duration 20s -window 30s
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/faasvm/appliance/internal/appliance"
	"github.com/faasvm/appliance/internal/config"
	"github.com/faasvm/appliance/internal/controller"
	"github.com/faasvm/appliance/internal/image"
)

type flags struct {
	n, c, fc   int
	duration   time.Duration
	window     time.Duration
	function   string
	deployWait time.Duration
}

func main() {
	var f flags
	flag.IntVar(&f.n, "n", 20000, "most calls submitted in the accept phase")
	flag.IntVar(&f.c, "c", 32, "concurrent submitting clients")
	flag.IntVar(&f.fc, "fc", 8, "the function's concurrency (one replica)")
	flag.DurationVar(&f.duration, "duration", 20*time.Second, "longest the accept phase may last")
	flag.DurationVar(&f.window, "window", 30*time.Second, "longest the completion phase is measured")
	flag.StringVar(&f.function, "function", "functions/echo", "function folder to copy and deploy (an http-mode one)")
	flag.DurationVar(&f.deployWait, "deploy-wait", 5*time.Minute, "longest the deploy may take")
	flag.Parse()
	if f.n < 1 || f.c < 1 || f.fc < 1 || f.duration <= 0 || f.window <= 0 {
		fmt.Fprintln(os.Stderr, "bench-async: -n, -c, -fc, -duration and -window must be positive")
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), f.deployWait+f.duration+f.window+2*time.Minute)
	defer cancel()
	if err := run(ctx, f, log); err != nil {
		fmt.Fprintf(os.Stderr, "bench-async: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, f flags, log *slog.Logger) error {
	cfg, err := config.Load(nil, os.Getenv)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	work, err := os.MkdirTemp("", "fvmasync")
	if err != nil {
		return fmt.Errorf("making a work directory: %w", err)
	}
	defer os.RemoveAll(work)
	fnDir := filepath.Join(work, "functions")
	name := filepath.Base(filepath.Clean(f.function))
	if err := copyFunction(f.function, fnDir, name, f.fc); err != nil {
		return err
	}
	if err := os.Symlink(image.CacheDir(cfg.StateDir), image.CacheDir(work)); err != nil {
		return fmt.Errorf("sharing the image cache: %w", err)
	}
	// An embedded queue of its own, big enough for the accept phase.
	cfg.StateDir, cfg.FunctionsDir, cfg.BootWait = work, fnDir, f.deployWait
	cfg.NATSURL, cfg.NATSListen = "", ""
	cfg.AsyncMaxBytes = 4 * config.GiB
	app, err := appliance.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer func() {
		if err := app.Close(); err != nil {
			log.Warn("shutting down", "err", err)
		}
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listening on loopback: %w", err)
	}
	serveCtx, stopServing := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- app.Gateway.Serve(serveCtx, ln) }()
	defer func() {
		stopServing()
		if err := <-served; err != nil {
			log.Warn("gateway", "err", err)
		}
	}()
	base := "http://" + ln.Addr().String()

	fmt.Printf("deploying %s ...\n", name)
	app.Controller.Sync(name)
	if err := waitReady(ctx, app.Controller, name, f.deployWait); err != nil {
		return err
	}
	client := &http.Client{Transport: &http.Transport{
		Proxy: nil, MaxIdleConns: f.c * 2, MaxIdleConnsPerHost: f.c * 2, IdleConnTimeout: 30 * time.Second,
	}}
	defer client.CloseIdleConnections()

	// Phase 1: accepted per second, nothing consuming.
	acc := submit(ctx, client, base+"/async-function/"+name+"/bench?x=1", f.n, f.c, f.duration)
	if acc.accepted == 0 {
		return fmt.Errorf("no call was accepted; first error: %s", acc.firstErr)
	}
	fmt.Printf("\naccepted: %d calls from %d clients in %s: %.0f calls/s accepted (202), p50 %s, p99 %s, %d errors\n",
		acc.accepted, f.c, acc.elapsed.Round(time.Millisecond), float64(acc.accepted)/acc.elapsed.Seconds(),
		ms(percentile(acc.lat, 50)), ms(percentile(acc.lat, 99)), acc.errors)
	if acc.firstErr != "" {
		fmt.Printf("first error: %s\n", acc.firstErr)
	}

	// Phase 2: the workers drain the backlog through the sync path.
	if err := app.StartQueue(ctx); err != nil {
		return err
	}
	series := `queue_worker_messages_processed_total{function_name="` + name + `",queue_name="faas-calls"}`
	var first float64
	var t0 time.Time
	for {
		v, err := metric(ctx, client, base, series)
		if err != nil {
			return err
		}
		if v > 0 {
			first, t0 = v, time.Now()
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("no call completed: %w", ctx.Err())
		}
		time.Sleep(50 * time.Millisecond)
	}
	deadline := t0.Add(f.window)
	last, tl := first, t0
	for time.Now().Before(deadline) && last < float64(acc.accepted) {
		time.Sleep(250 * time.Millisecond)
		v, err := metric(ctx, client, base, series)
		if err != nil {
			return err
		}
		last, tl = v, time.Now()
	}
	done := last - first
	fmt.Printf("completed: %.0f calls in %s through /invoke to one warm VM (concurrency %d): %.1f calls/s end to end (%.0f of %d done)\n",
		done, tl.Sub(t0).Round(time.Millisecond), f.fc, done/tl.Sub(t0).Seconds(), last, acc.accepted)
	return nil
}

// submitted is the accept phase's outcome.
type submitted struct {
	accepted, errors int
	firstErr         string
	elapsed          time.Duration
	lat              []time.Duration
}

// submit POSTs up to n calls to url from c clients, bounded by limit.
func submit(ctx context.Context, client *http.Client, url string, n, c int, limit time.Duration) submitted {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var (
		next atomic.Int64
		mu   sync.Mutex
		res  submitted
		wg   sync.WaitGroup
		once sync.Once
	)
	body := `{"job":"resize","image":"cat.png","width":640}`
	start := time.Now()
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			errs := 0
			for next.Add(1) <= int64(n) && ctx.Err() == nil {
				t0 := time.Now()
				err := post(ctx, client, url, body)
				if err != nil {
					if ctx.Err() != nil {
						break
					}
					errs++
					once.Do(func() { mu.Lock(); res.firstErr = err.Error(); mu.Unlock() })
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			res.lat = append(res.lat, lat...)
			res.errors += errs
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.accepted = len(res.lat)
	slices.Sort(res.lat)
	return res
}

func post(ctx context.Context, client *http.Client, url, body string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusAccepted || res.Header.Get("X-Call-Id") == "" {
		return fmt.Errorf("status %d: %s", res.StatusCode, b)
	}
	return nil
}

// metric reads one series from /metrics (0 when absent).
func metric(ctx context.Context, client *http.Client, base, series string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	res, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("reading /metrics: %w", err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, sc.Err()
}

// copyFunction copies src to dir/name with one replica taking c requests.
func copyFunction(src, dir, name string, c int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("making the functions directory: %w", err)
	}
	dst := filepath.Join(dir, name)
	if out, err := exec.Command("cp", "-r", src, dst).CombinedOutput(); err != nil {
		return fmt.Errorf("copying %s: %v: %s", src, err, out)
	}
	manifest := filepath.Join(dst, "function.yaml")
	old, err := os.ReadFile(manifest)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("reading %s: %w", manifest, err)
	}
	add := fmt.Sprintf("\nminReplicas: 1\nmaxReplicas: 1\nconcurrency: %d\n", c)
	return os.WriteFile(manifest, append(old, add...), 0o644)
}

// waitReady polls the function's status until it serves, bounded.
func waitReady(ctx context.Context, ctrl *controller.Controller, name string, bound time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	for {
		s, err := ctrl.Get(ctx, name)
		if err == nil && s.State == controller.StateReady && s.Replicas.Ready > 0 {
			return nil
		}
		if err == nil && (s.State == controller.StateFailed || s.State == controller.StateInvalid) {
			return fmt.Errorf("deploying %s: %s: %s", name, s.State, s.LastError)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("deploying %s: not ready within %s (last state %q)", name, bound, s.State)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func percentile(s []time.Duration, p int) time.Duration {
	if len(s) == 0 {
		return 0
	}
	rank := (p*len(s) + 99) / 100
	return s[max(rank, 1)-1]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }
