// Command loadtest measures a warm http-mode function on loopback: the same
// requests go through the gateway, then straight to the VM's forwarded
// port, and a table compares throughput, latency and errors.
//
// It builds the appliance in one process (internal/appliance, the gateway
// on 127.0.0.1:0), deploys a temporary copy of
// a function folder (functions/echo unless -function says otherwise) with
// one replica whose concurrency is -c, so the gateway never queues, and
// stops by itself: each run ends after -n requests or -duration, whichever
// comes first.
//
// Assets come from the same environment as the tests (FAAS_KERNEL_DIR,
// FAAS_AGENT_BIN, FAAS_STATE_DIR, FAAS_RUNTIMES_DIR); scripts/loadtest.sh
// sets them and prepares what is missing.
//
//	go run ./scripts/loadtest -n 2000 -c 16 -duration 60s
package main

import (
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
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/faasvm/appliance/guest/protocol"
	"github.com/faasvm/appliance/internal/appliance"
	"github.com/faasvm/appliance/internal/config"
	"github.com/faasvm/appliance/internal/controller"
	"github.com/faasvm/appliance/internal/image"
)

// flags are the command line.
type flags struct {
	n          int
	c          int
	duration   time.Duration
	function   string
	accel      string
	deployWait time.Duration
}

func main() {
	var f flags
	flag.IntVar(&f.n, "n", 2000, "requests per run (gateway, then direct)")
	flag.IntVar(&f.c, "c", 16, "concurrent clients")
	flag.DurationVar(&f.duration, "duration", 60*time.Second, "longest a run may last")
	flag.StringVar(&f.function, "function", "functions/echo", "function folder to copy and deploy (an http-mode one)")
	flag.StringVar(&f.accel, "accel", "", "qemu accelerator: auto, kvm or tcg (default: FAAS_ACCEL or the config file's)")
	flag.DurationVar(&f.deployWait, "deploy-wait", 5*time.Minute, "longest the deploy may take (the first one builds the runtime image)")
	flag.Parse()
	if f.n < 1 || f.c < 1 || f.duration <= 0 {
		fmt.Fprintln(os.Stderr, "loadtest: -n, -c and -duration must be positive")
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// Bounded as a whole: deploy, two runs, shutdown.
	ctx, cancel := context.WithTimeout(context.Background(), f.deployWait+2*f.duration+2*time.Minute)
	defer cancel()
	if err := run(ctx, f, log); err != nil {
		fmt.Fprintf(os.Stderr, "loadtest: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, f flags, log *slog.Logger) error {
	cfg, err := config.Load(nil, os.Getenv)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	if f.accel != "" {
		cfg.Accel = f.accel
	}
	work, err := os.MkdirTemp("", "fvmload")
	if err != nil {
		return fmt.Errorf("making a work directory: %w", err)
	}
	defer os.RemoveAll(work)

	// The function: a copy with one replica taking -c requests at once.
	fnDir := filepath.Join(work, "functions")
	name := filepath.Base(filepath.Clean(f.function))
	if err := copyFunction(f.function, fnDir, name, f.c); err != nil {
		return err
	}
	// The appliance, in-process: VM files in the work directory, so that
	// nothing else's VMs are touched, with the image cache of the
	// configured state dir.
	if err := os.Symlink(image.CacheDir(cfg.StateDir), image.CacheDir(work)); err != nil {
		return fmt.Errorf("sharing the image cache: %w", err)
	}
	cfg.StateDir, cfg.FunctionsDir, cfg.BootWait = work, fnDir, f.deployWait
	app, err := appliance.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer func() {
		if err := app.Close(); err != nil {
			log.Warn("shutting down", "err", err)
		}
	}()
	ctrl := app.Controller

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

	fmt.Printf("deploying %s (accel setting %s) ...\n", name, cfg.Accel)
	start := time.Now()
	ctrl.Sync(name)
	if err := waitReady(ctx, ctrl, name, f.deployWait); err != nil {
		return err
	}
	fmt.Printf("ready in %s\n", time.Since(start).Round(10*time.Millisecond))

	client := &http.Client{Transport: &http.Transport{
		Proxy:               nil, // loopback only
		MaxIdleConns:        f.c * 2,
		MaxIdleConnsPerHost: f.c * 2,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
	}}
	defer client.CloseIdleConnections()

	viaGateway := "http://" + ln.Addr().String() + "/invoke/" + name + "/load?x=1"
	// Warm up: the interpreter, the connection pools.
	warm := load(ctx, client, viaGateway, nil, min(f.n, 4*f.c), f.c, f.duration)
	if warm.errors > 0 {
		return fmt.Errorf("warm-up through the gateway: %d of %d failed, first: %s", warm.errors, warm.requests, warm.firstErr)
	}
	gwRes := load(ctx, client, viaGateway, nil, f.n, f.c, f.duration)

	// Direct: the instance's forwarded port with its secret, held by a
	// lease for the whole run.
	inst, err := ctrl.Acquire(ctx, name)
	if err != nil {
		return fmt.Errorf("getting the instance's endpoint: %w", err)
	}
	direct := "http://" + inst.Endpoint + "/load?x=1"
	hdr := http.Header{protocol.SecretHeader: []string{inst.Secret}}
	dirRes := load(ctx, client, direct, hdr, f.n, f.c, f.duration)
	inst.Release(http.StatusOK)

	report(os.Stdout, f, []result{gwRes, dirRes}, []string{"gateway", "direct to VM"})
	return nil
}

// copyFunction copies src to dir/name and makes it one replica taking c
// requests at once.
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
	if err := os.WriteFile(manifest, append(old, add...), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", manifest, err)
	}
	return nil
}

// waitReady polls the function's status until it serves, bounded.
func waitReady(ctx context.Context, ctrl *controller.Controller, name string, bound time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
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
		case <-t.C:
		}
	}
}

// result is one run's outcome.
type result struct {
	requests int
	errors   int
	firstErr string
	elapsed  time.Duration
	lat      []time.Duration // of the successful requests, sorted
}

// load sends up to n GET requests to url from c clients, stopping after
// limit, and measures them. A request counts as an error unless it gets a
// 200 and its whole body.
func load(ctx context.Context, client *http.Client, url string, hdr http.Header, n, c int, limit time.Duration) result {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var (
		next     atomic.Int64
		mu       sync.Mutex
		res      result
		wg       sync.WaitGroup
		firstErr sync.Once
	)
	start := time.Now()
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			errs := 0
			for next.Add(1) <= int64(n) && ctx.Err() == nil {
				t0 := time.Now()
				err := get(ctx, client, url, hdr)
				if err != nil {
					if ctx.Err() != nil {
						break // the time limit, not the target
					}
					errs++
					firstErr.Do(func() { mu.Lock(); res.firstErr = err.Error(); mu.Unlock() })
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
	res.requests = len(res.lat) + res.errors
	slices.Sort(res.lat)
	return res
}

func get(ctx context.Context, client *http.Client, url string, hdr http.Header) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	res, err := client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if _, err := io.Copy(io.Discard, res.Body); err != nil {
		return fmt.Errorf("reading the body: %w", err)
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", res.StatusCode)
	}
	return nil
}

// percentile is the nearest-rank p-th percentile of sorted s (0 if empty).
func percentile(s []time.Duration, p int) time.Duration {
	if len(s) == 0 {
		return 0
	}
	rank := (p*len(s) + 99) / 100
	return s[max(rank, 1)-1]
}

func mean(s []time.Duration) time.Duration {
	if len(s) == 0 {
		return 0
	}
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return sum / time.Duration(len(s))
}

func report(w io.Writer, f flags, rs []result, names []string) {
	fmt.Fprintf(w, "\n%d clients, up to %d requests or %s per run, loopback\n\n", f.c, f.n, f.duration)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\trequests\terrors\telapsed\treq/s\tp50\tp99\tmean\t")
	for i, r := range rs {
		rps := float64(len(r.lat)) / r.elapsed.Seconds()
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%.1f\t%s\t%s\t%s\t\n", names[i], r.requests, r.errors,
			r.elapsed.Round(10*time.Millisecond), rps, ms(percentile(r.lat, 50)), ms(percentile(r.lat, 99)), ms(mean(r.lat)))
	}
	tw.Flush()
	for i, r := range rs {
		if r.firstErr != "" {
			fmt.Fprintf(w, "%s: first error: %s\n", names[i], r.firstErr)
		}
	}
	if len(rs) == 2 && len(rs[0].lat) > 0 && len(rs[1].lat) > 0 {
		fmt.Fprintf(w, "\ngateway overhead: p50 %+.2fms, p99 %+.2fms\n",
			msf(percentile(rs[0].lat, 50)-percentile(rs[1].lat, 50)), msf(percentile(rs[0].lat, 99)-percentile(rs[1].lat, 99)))
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", msf(d)) }

func msf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
