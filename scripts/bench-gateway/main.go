// Command bench-gateway compares the appliance's gateway with nginx as a
// reverse proxy, on loopback, in front of the same tiny Go backend (it
// answers every request with a 2-byte body, standing in for a warm
// instance). wrk (-t1, GET) drives each target at 1 and -conns
// connections; the runs are interleaved (backend, nginx, gateway, repeated
// -reps times) so that a change in the machine's load hits every target
// alike, and each lasts -duration: the whole run is bounded by
// (3 × 2 × reps × duration) plus start-up.
//
// The gateway is internal/gateway with the real Prometheus observer
// (internal/metrics) and a resolver that returns the backend as the
// function's instance; it logs at warn level, nginx has access_log off.
// nginx runs one worker with upstream keepalive. The table gives medians:
// req/s, p50 and p99, the p50 each proxy adds over the backend alone, and
// the ratios gateway/nginx. Needs wrk and nginx (Debian: wrk, nginx-light).
//
//	go run ./scripts/bench-gateway -reps 3 -duration 3s -conns 32
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/faasvm/appliance/internal/controller"
	"github.com/faasvm/appliance/internal/gateway"
	"github.com/faasvm/appliance/internal/metrics"
)

const benchFunction = "bench"

func main() {
	role := flag.String("role", "", "internal: run as the backend or the gateway child")
	addr := flag.String("addr", "", "internal: the backend's address (gateway role)")
	reps := flag.Int("reps", 3, "interleaved repetitions per target and connection count (medians of these)")
	duration := flag.Duration("duration", 3*time.Second, "length of one wrk run")
	conns := flag.Int("conns", 32, "connections of the loaded runs (the other runs use 1)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the gateway (this tree's) to this file, for go tool pprof")
	before := flag.String("before", "", "a bench-gateway binary built from an older tree: its gateway runs as a fourth target, \"before\"")
	flag.Parse()
	var err error
	switch *role {
	case "backend":
		err = serveBackend()
	case "gateway":
		err = serveGateway(*addr, *cpuprofile)
	case "":
		if *reps < 1 || *duration <= 0 || *conns < 1 {
			fmt.Fprintln(os.Stderr, "bench-gateway: -reps, -duration and -conns must be positive")
			os.Exit(2)
		}
		err = run(*reps, *duration, *conns, *before, *cpuprofile)
	default:
		err = fmt.Errorf("unknown role %q", *role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench-gateway: %v\n", err)
		os.Exit(1)
	}
}

// listenAndAnnounce listens on a free loopback port and prints its address
// on stdout for the parent.
func listenAndAnnounce() (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening: %w", err)
	}
	fmt.Println(ln.Addr().String())
	return ln, nil
}

func serveBackend() error {
	ln, err := listenAndAnnounce()
	if err != nil {
		return err
	}
	body := []byte("ok")
	return http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", "2")
		_, _ = w.Write(body)
	}))
}

// fixed resolves every function to the backend, as a warm instance.
type fixed struct{ endpoint string }

func (f fixed) Acquire(ctx context.Context, name string) (controller.Instance, error) {
	if name != benchFunction {
		return controller.Instance{}, fmt.Errorf("%w: %s", controller.ErrNotFound, name)
	}
	return controller.Instance{Function: name, VMID: "bench-vm", Endpoint: f.endpoint, Secret: "s", Release: func(int) {}}, nil
}
func (fixed) List(context.Context) []controller.Status { return nil }
func (fixed) Get(_ context.Context, name string) (controller.Status, error) {
	return controller.Status{}, fmt.Errorf("%w: %s", controller.ErrNotFound, name)
}
func (fixed) Logs(context.Context, string, int) (string, error) { return "", nil }

func serveGateway(backend, cpuprofile string) error {
	if cpuprofile != "" {
		f, err := os.Create(cpuprofile)
		if err != nil {
			return fmt.Errorf("creating the CPU profile: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("starting the CPU profile: %w", err)
		}
		// The parent ends this process with SIGINT once the runs are done.
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt)
		go func() {
			<-sig
			pprof.StopCPUProfile()
			_ = f.Close()
			os.Exit(0)
		}()
	}
	m := metrics.New()
	m.FunctionState(benchFunction, 1, 0) // a known function, as the controller reports it
	log := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	g := gateway.New(gateway.Options{Observer: m}, fixed{backend}, log)
	ln, err := listenAndAnnounce()
	if err != nil {
		return err
	}
	return g.Serve(context.Background(), ln)
}

// child starts this program (or the binary prog, when not empty) in a role
// and reads the address it announces.
func child(prog string, args ...string) (*exec.Cmd, string, error) {
	if prog == "" {
		self, err := os.Executable()
		if err != nil {
			return nil, "", err
		}
		prog = self
	}
	cmd := exec.Command(prog, args...)
	ownGroup(cmd)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("starting %v: %w", args, err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		return nil, "", fmt.Errorf("reading the address of %v: %w", args, err)
	}
	return cmd, strings.TrimSpace(line), nil
}

// ownGroup makes cmd the leader of its own process group, so that
// stopGroup also ends what it starts (nginx's workers): a worker left
// behind would keep the files the bench inherited open, the VM lock among them.
func ownGroup(cmd *exec.Cmd) { cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} }

// stopGroup interrupts cmd's process group (a profiling gateway writes its
// profile on SIGINT, nginx shuts down fast), waits up to 2 s, then kills
// whatever of the group is left.
func stopGroup(cmd *exec.Cmd) {
	pgid := cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGINT)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-done
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

const nginxConf = `worker_processes 1;
daemon off;
master_process on;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  upstream backend { server %[2]s; keepalive 64; }
  server {
    listen %[3]s;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`

func startNginx(dir, backend string) (*exec.Cmd, string, error) {
	addr, err := freePort()
	if err != nil {
		return nil, "", err
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, nginxConf, dir, backend, addr), 0o644); err != nil {
		return nil, "", err
	}
	cmd := exec.Command("nginx", "-p", dir, "-c", conf)
	ownGroup(cmd)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("starting nginx (apt-get install nginx-light): %w", err)
	}
	return cmd, addr, waitListening(addr)
}

func waitListening(addr string) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("nothing listens on %s after 10s", addr)
}

type result struct{ rps, p50, p99 float64 } // p50 and p99 in ms

func wrk(url string, conns int, d time.Duration) (result, error) {
	out, err := exec.Command("wrk", "-t1", "-c"+strconv.Itoa(conns), "-d"+d.String(), "--latency", url).CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("wrk %s (apt-get install wrk): %w: %s", url, err, out)
	}
	var r result
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "Requests/sec:":
			r.rps, _ = strconv.ParseFloat(f[1], 64)
		case len(f) == 2 && f[0] == "50%":
			r.p50 = parseMs(f[1])
		case len(f) == 2 && f[0] == "99%":
			r.p99 = parseMs(f[1])
		case len(f) >= 4 && f[0] == "Non-2xx":
			return r, fmt.Errorf("wrk %s: %s", url, line)
		}
	}
	if r.rps == 0 {
		return r, fmt.Errorf("wrk %s: no figures in %s", url, out)
	}
	return r, nil
}

// parseMs reads wrk's "123.45us", "1.23ms", "1.00s" as milliseconds.
func parseMs(s string) float64 {
	for _, u := range []struct {
		suffix string
		ms     float64
	}{{"us", 1e-3}, {"ms", 1}, {"s", 1e3}, {"m", 60e3}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f * u.ms
		}
	}
	return 0
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func run(reps int, d time.Duration, conns int, before, cpuprofile string) error {
	dir, err := os.MkdirTemp("", "bench-gateway-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var (
		cmdsMu sync.Mutex
		cmds   []*exec.Cmd
	)
	stopAll := func() {
		cmdsMu.Lock()
		defer cmdsMu.Unlock()
		for _, c := range cmds {
			stopGroup(c)
		}
		cmds = nil
	}
	defer stopAll()
	// Interrupted (Ctrl-C, timeout(1)): the children go too.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	go func() {
		if _, ok := <-sig; ok {
			fmt.Fprintln(os.Stderr, "bench-gateway: interrupted, stopping the backend, gateways and nginx")
			stopAll()
			os.Exit(1)
		}
	}()
	started := func(c *exec.Cmd) {
		cmdsMu.Lock()
		cmds = append(cmds, c)
		cmdsMu.Unlock()
	}
	be, backend, err := child("", "-role", "backend")
	if err != nil {
		return err
	}
	started(be)
	gwArgs := []string{"-role", "gateway", "-addr", backend}
	if cpuprofile != "" {
		gwArgs = append(gwArgs, "-cpuprofile", cpuprofile)
	}
	gw, gwAddr, err := child("", gwArgs...)
	if err != nil {
		return err
	}
	started(gw)
	var beforeAddr string
	if before != "" {
		bg, addr, err := child(before, "-role", "gateway", "-addr", backend)
		if err != nil {
			return fmt.Errorf("the -before gateway: %w", err)
		}
		started(bg)
		beforeAddr = addr
	}
	ng, ngAddr, err := startNginx(dir, backend)
	if ng != nil {
		started(ng) // stopped also when it never listened
	}
	if err != nil {
		return err
	}
	targets := []struct{ name, url string }{
		{"backend", "http://" + backend + "/"},
		{"nginx", "http://" + ngAddr + "/"},
		{"gateway", "http://" + gwAddr + "/invoke/" + benchFunction},
	}
	if beforeAddr != "" {
		targets = append(targets, struct{ name, url string }{"before", "http://" + beforeAddr + "/invoke/" + benchFunction})
	}
	levels := []int{1, conns}
	res := map[string]map[int][]result{}
	for _, t := range targets {
		res[t.name] = map[int][]result{}
		// A short warm-up: connections, JIT-free but caches and pools.
		if _, err := wrk(t.url, conns, time.Second); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "bench-gateway: %d reps × %d targets × %v at 1 and %d connections (~%v)\n",
		reps, len(targets), d, conns, time.Duration(reps*len(targets)*len(levels))*d)
	for rep := range reps {
		for _, n := range levels {
			for _, t := range targets {
				r, err := wrk(t.url, n, d)
				if err != nil {
					return err
				}
				res[t.name][n] = append(res[t.name][n], r)
				fmt.Fprintf(os.Stderr, "  rep %d/%d %-7s c=%-3d %9.0f req/s p50 %.3f ms p99 %.3f ms\n", rep+1, reps, t.name, n, r.rps, r.p50, r.p99)
			}
		}
	}
	med := func(name string, n int, get func(result) float64) float64 {
		var xs []float64
		for _, r := range res[name][n] {
			xs = append(xs, get(r))
		}
		return median(xs)
	}
	rps := func(r result) float64 { return r.rps }
	p50 := func(r result) float64 { return r.p50 }
	p99 := func(r result) float64 { return r.p99 }
	var b bytes.Buffer
	fmt.Fprintf(&b, "gateway benchmark (medians of %d interleaved %v wrk runs, loopback, GET, 2-byte answer)\n", reps, d)
	fmt.Fprintf(&b, "| target | req/s c=1 | p50 c=1 (ms) | p99 c=1 (ms) | req/s c=%d | p50 c=%d (ms) | p99 c=%d (ms) | added p50 c=1 (ms) |\n", conns, conns, conns)
	fmt.Fprintln(&b, "|---|---|---|---|---|---|---|---|")
	base := med("backend", 1, p50)
	for _, t := range targets {
		added := "-"
		if t.name != "backend" {
			added = fmt.Sprintf("%.3f", med(t.name, 1, p50)-base)
		}
		fmt.Fprintf(&b, "| %s | %.0f | %.3f | %.3f | %.0f | %.3f | %.3f | %s |\n", t.name,
			med(t.name, 1, rps), med(t.name, 1, p50), med(t.name, 1, p99),
			med(t.name, conns, rps), med(t.name, conns, p50), med(t.name, conns, p99), added)
	}
	addedN := med("nginx", 1, p50) - base
	for _, t := range targets[2:] {
		ratio := med(t.name, conns, rps) / med("nginx", conns, rps)
		added := med(t.name, 1, p50) - base
		fmt.Fprintf(&b, "%s/nginx req/s at %d connections: %.0f%% (target >= 70%%)\n", t.name, conns, ratio*100)
		fmt.Fprintf(&b, "%s/nginx added p50 at 1 connection: %.2fx (target <= 1.5x)\n", t.name, added/max(addedN, 1e-3))
	}
	_, err = os.Stdout.Write(b.Bytes())
	return err
}
