// Command soak runs the real appliance binary under bounded mixed traffic
// and reports whether it stays healthy: requests, errors, p50/p99 latency,
// and the appliance's resident memory and open file descriptors at the
// start and at the end.
//
// Traffic, from -c clients on loopback: synchronous calls of an exec-mode
// function (bash) and of an http-mode one (python3), and asynchronous
// calls (POST /async-function/..., their results checked at the end).
// Every -redeploy one of the two functions gets a new version; every -kill
// a random VM's QEMU is killed. Errors a kill explains (a 502 for a request
// in flight on the killed VM, answered within a few seconds of the kill)
// are counted apart; any other error fails the run.
//
// It builds ./cmd/appliance and runs it with a state directory of its own
// that shares the image cache of FAAS_STATE_DIR (as the tests do), the
// assets from FAAS_KERNEL_DIR, FAAS_AGENT_BIN and FAAS_RUNTIMES_DIR.
//
//	go run ./scripts/soak -duration 30m
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type flags struct {
	duration time.Duration
	clients  int
	redeploy time.Duration
	kill     time.Duration
	accel    string
	keep     bool
}

func main() {
	var f flags
	flag.DurationVar(&f.duration, "duration", 30*time.Minute, "how long the traffic runs")
	flag.IntVar(&f.clients, "c", 4, "concurrent clients")
	flag.DurationVar(&f.redeploy, "redeploy", 3*time.Minute, "a new version of one function every (0: never)")
	flag.DurationVar(&f.kill, "kill", 4*time.Minute, "a random VM killed every (0: never)")
	flag.StringVar(&f.accel, "accel", "", "qemu accelerator (default: FAAS_ACCEL or auto)")
	flag.BoolVar(&f.keep, "keep", false, "keep the work directory (logs) afterwards")
	flag.Parse()
	if f.duration <= 0 || f.clients < 1 {
		fmt.Fprintln(os.Stderr, "soak: -duration and -c must be positive")
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ok, err := run(ctx, f, log)
	if err != nil {
		fmt.Fprintf(os.Stderr, "soak: %v\n", err)
		os.Exit(1)
	}
	if !ok {
		os.Exit(1)
	}
}

// proc is the running appliance.
type proc struct {
	cmd     *exec.Cmd
	base    string
	state   string
	logPath string
}

var servingRE = regexp.MustCompile(`msg=serving addr=(\S+)`)

func env(name string) (string, error) {
	v := os.Getenv(name)
	if v == "" {
		return "", fmt.Errorf("%s is not set (scripts/soak.sh sets it, as make test does)", name)
	}
	return v, nil
}

// start builds and starts the appliance in work.
func start(ctx context.Context, f flags, work string, log *slog.Logger) (*proc, error) {
	shared, err := env("FAAS_STATE_DIR")
	if err != nil {
		return nil, err
	}
	for _, n := range []string{"FAAS_KERNEL_DIR", "FAAS_AGENT_BIN", "FAAS_RUNTIMES_DIR"} {
		if _, err := env(n); err != nil {
			return nil, err
		}
	}
	bin := filepath.Join(work, "appliance")
	log.Info("building the appliance")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/appliance").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building the appliance: %w\n%s", err, out)
	}
	p := &proc{state: filepath.Join(work, "state"), logPath: filepath.Join(work, "appliance.log")}
	if err := os.MkdirAll(p.state, 0o755); err != nil {
		return nil, err
	}
	if err := os.Symlink(filepath.Join(shared, "images"), filepath.Join(p.state, "images")); err != nil {
		return nil, err
	}
	repo, _ := os.Getwd()
	p.cmd = exec.Command(bin)
	p.cmd.Env = append(os.Environ(),
		"FAAS_LISTEN=127.0.0.1:0",
		"FAAS_FUNCTIONS_DIR="+filepath.Join(work, "functions"),
		"FAAS_STATE_DIR="+p.state,
		"FAAS_VM_TEMPLATE="+filepath.Join(repo, "config", "func-handler.yml"),
		"FAAS_CONFIG="+filepath.Join(repo, "config", "appliance.yaml"),
		"FAAS_DEBOUNCE=300ms",
		"FAAS_BOOT_WAIT=90s",
		"FAAS_LOG_LEVEL=info",
	)
	if f.accel != "" {
		p.cmd.Env = append(p.cmd.Env, "FAAS_ACCEL="+f.accel)
	}
	logFile, err := os.Create(p.logPath)
	if err != nil {
		return nil, err
	}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the appliance: %w", err)
	}
	addr := make(chan string, 1)
	go func() {
		defer logFile.Close()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			fmt.Fprintln(logFile, sc.Text())
			if m := servingRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
	}()
	select {
	case a := <-addr:
		p.base = "http://" + a
	case <-time.After(2 * time.Minute):
		p.stop(log)
		return nil, fmt.Errorf("the appliance did not serve within 2m (log: %s)", p.logPath)
	}
	return p, nil
}

func (p *proc) stop(log *slog.Logger) {
	if p.cmd.Process == nil || p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			log.Warn("appliance exit", "err", err)
		}
	case <-time.After(90 * time.Second):
		_ = p.cmd.Process.Kill()
		log.Warn("the appliance did not stop within 90s of SIGTERM: killed")
	}
}

// usage is the appliance's resident memory (KiB) and open descriptors.
func (p *proc) usage() (rssKiB, fds int) {
	pid := strconv.Itoa(p.cmd.Process.Pid)
	if b, err := os.ReadFile(filepath.Join("/proc", pid, "status")); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				rssKiB, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			}
		}
	}
	if ents, err := os.ReadDir(filepath.Join("/proc", pid, "fd")); err == nil {
		fds = len(ents)
	}
	return rssKiB, fds
}

// fdKinds counts the appliance's open descriptors by kind (socket, pipe,
// anon_inode, file), to tell a leak from connections to running VMs.
func (p *proc) fdKinds() string {
	dir := filepath.Join("/proc", strconv.Itoa(p.cmd.Process.Pid), "fd")
	ents, _ := os.ReadDir(dir)
	kinds := map[string]int{}
	for _, e := range ents {
		t, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		k := "file"
		if i := strings.Index(t, ":"); i > 0 && !strings.HasPrefix(t, "/") {
			k = t[:i]
		}
		kinds[k]++
	}
	keys := make([]string, 0, len(kinds))
	for k := range kinds {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s %d ", k, kinds[k])
	}
	return strings.TrimSpace(b.String())
}

// qemus are the pids of the appliance's VMs.
func (p *proc) qemus() []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), "qemu") && strings.Contains(string(b), p.state) {
			pids = append(pids, pid)
		}
	}
	return pids
}

const (
	kindExec  = "sync exec"
	kindHTTP  = "sync http"
	kindAsync = "async"
)

// sample is one request's outcome.
type sample struct {
	kind     string
	started  time.Time
	took     time.Duration
	code     int
	err      string
	callID   string
	finished time.Time
}

func writeFunctions(dir string, version int) error {
	if err := os.MkdirAll(filepath.Join(dir, "soakexec"), 0o755); err != nil {
		return err
	}
	h := fmt.Sprintf("#!/bin/bash\nbody=$(cat)\necho \"exec v%d ${#body}\"\n", version)
	if err := os.WriteFile(filepath.Join(dir, "soakexec", "handler.sh"), []byte(h), 0o755); err != nil {
		return err
	}
	return writeHTTP(dir, version)
}

func writeHTTP(dir string, version int) error {
	if err := os.MkdirAll(filepath.Join(dir, "soakhttp"), 0o755); err != nil {
		return err
	}
	py := fmt.Sprintf("def handle(req):\n    return {'statusCode': 200, 'body': 'http v%d %%d' %% len(req.get('body') or b'')}\n", version)
	if err := os.WriteFile(filepath.Join(dir, "soakhttp", "handler.py"), []byte(py), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "soakhttp", "function.yaml"), []byte("mode: http\ntimeout: 10s\n"), 0o644)
}

func run(ctx context.Context, f flags, log *slog.Logger) (bool, error) {
	work, err := os.MkdirTemp("", "soak")
	if err != nil {
		return false, err
	}
	if !f.keep {
		defer os.RemoveAll(work)
	}
	functions := filepath.Join(work, "functions")
	if err := writeFunctions(functions, 0); err != nil {
		return false, err
	}
	p, err := start(ctx, f, work, log)
	if err != nil {
		return false, err
	}
	defer p.stop(log)
	client := &http.Client{Timeout: 2 * time.Minute}
	for _, fn := range []string{"soakexec", "soakhttp"} {
		deadline := time.Now().Add(5 * time.Minute)
		for {
			code, _, _ := call(ctx, client, http.MethodPost, p.base+"/invoke/"+fn, "warm")
			if code == http.StatusOK {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return false, fmt.Errorf("%s did not answer 200 within 5m (last %d; log %s)", fn, code, p.logPath)
			}
			time.Sleep(time.Second)
		}
	}
	rss0, fds0 := p.usage()
	kinds0, vms0 := p.fdKinds(), len(p.qemus())
	log.Info("soaking", "duration", f.duration, "clients", f.clients, "redeploy", f.redeploy, "kill", f.kill, "rss_kib", rss0, "fds", fds0)

	tctx, cancel := context.WithTimeout(ctx, f.duration)
	defer cancel()
	var (
		mu      sync.Mutex
		samples []sample
		kills   []time.Time
		wg      sync.WaitGroup
	)
	for i := range f.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
			for tctx.Err() == nil {
				s := sample{started: time.Now()}
				body := strings.Repeat("x", r.IntN(2048))
				switch n := r.IntN(10); {
				case n < 4:
					s.kind = kindExec
					s.code, _, s.err = call(tctx, client, http.MethodPost, p.base+"/invoke/soakexec", body)
				case n < 8:
					s.kind = kindHTTP
					s.code, _, s.err = call(tctx, client, http.MethodPost, p.base+"/invoke/soakhttp", body)
				default:
					s.kind = kindAsync
					s.code, s.callID, s.err = call(tctx, client, http.MethodPost, p.base+"/async-function/soakexec", body)
				}
				s.finished = time.Now()
				s.took = s.finished.Sub(s.started)
				if tctx.Err() != nil && s.code == 0 {
					return // cut by the end of the run, not an answer
				}
				mu.Lock()
				samples = append(samples, s)
				mu.Unlock()
			}
		}()
	}
	// Redeploys and kills.
	wg.Add(1)
	go func() {
		defer wg.Done()
		redeploy, kill := ticker(f.redeploy), ticker(f.kill)
		version := 0
		for {
			select {
			case <-tctx.Done():
				return
			case <-redeploy:
				version++
				var err error
				if version%2 == 1 {
					err = writeFunctions(functions, version) // both
				} else {
					err = writeHTTP(functions, version)
				}
				log.Info("redeploying", "version", version, "err", err)
			case <-kill:
				pids := p.qemus()
				if len(pids) == 0 {
					continue
				}
				pid := pids[rand.IntN(len(pids))]
				mu.Lock()
				kills = append(kills, time.Now())
				mu.Unlock()
				log.Info("killing a VM", "pid", pid, "err", syscall.Kill(pid, syscall.SIGKILL))
			}
		}
	}()
	var trend []usagePoint // one a minute, for the flat-or-not question
	progress := time.NewTicker(time.Minute)
	defer progress.Stop()
	for tctx.Err() == nil {
		select {
		case <-tctx.Done():
		case <-progress.C:
			mu.Lock()
			n := len(samples)
			mu.Unlock()
			rss, fds := p.usage()
			vms := len(p.qemus())
			trend = append(trend, usagePoint{rss: rss, fds: fds, vms: vms})
			log.Info("progress", "requests", n, "rss_kib", rss, "fds", fds, "vms", vms)
		}
	}
	wg.Wait()
	// Let the appliance settle (drains, GC) before the last measure.
	time.Sleep(5 * time.Second)
	rss1, fds1 := p.usage()
	kinds1, vms1 := p.fdKinds(), len(p.qemus())

	// Async results: every call must have succeeded by now (or soon).
	asyncFailed, asyncPending := 0, 0
	deadline := time.Now().Add(2 * time.Minute)
	for _, s := range samples {
		if s.kind != kindAsync || s.code != http.StatusAccepted || s.callID == "" {
			continue
		}
		for {
			state := callState(ctx, client, p.base, s.callID)
			if state == "done" {
				break
			}
			if state == "failed" || state == "dead-lettered" {
				asyncFailed++
				break
			}
			if time.Now().After(deadline) {
				asyncPending++
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	ok := report(os.Stdout, f, samples, kills, asyncFailed, asyncPending, rss0, fds0, rss1, fds1, p.logPath)
	fmt.Printf("open fds by kind: start (%d VMs) %s; end (%d VMs) %s\n", vms0, kinds0, vms1, kinds1)
	printTrend(os.Stdout, trend)
	return ok, nil
}

// usagePoint is the appliance's RSS and fds, and the VMs running, at one
// minute of the soak.
type usagePoint struct{ rss, fds, vms int }

// printTrend prints the per-minute series and compares the two halves of
// the run: a leak shows as growth from the first half's minimum to the
// second half's; fds move with the VMs running (sockets to them), so the
// VM count is printed alongside.
func printTrend(w io.Writer, t []usagePoint) {
	if len(t) == 0 {
		fmt.Fprintln(w, "trend: run shorter than a minute, no per-minute samples")
		return
	}
	var rss, fds, vms []string
	for _, u := range t {
		rss = append(rss, strconv.Itoa(u.rss))
		fds = append(fds, strconv.Itoa(u.fds))
		vms = append(vms, strconv.Itoa(u.vms))
	}
	fmt.Fprintf(w, "per minute: RSS KiB [%s]; fds [%s]; VMs [%s]\n", strings.Join(rss, " "), strings.Join(fds, " "), strings.Join(vms, " "))
	if len(t) < 4 {
		fmt.Fprintln(w, "trend: fewer than 4 minutes, too short to call")
		return
	}
	half := len(t) / 2
	minOf := func(us []usagePoint, f func(usagePoint) int) int {
		m := f(us[0])
		for _, u := range us[1:] {
			m = min(m, f(u))
		}
		return m
	}
	r1, r2 := minOf(t[:half], func(u usagePoint) int { return u.rss }), minOf(t[half:], func(u usagePoint) int { return u.rss })
	f1, f2 := minOf(t[:half], func(u usagePoint) int { return u.fds }), minOf(t[half:], func(u usagePoint) int { return u.fds })
	fmt.Fprintf(w, "trend: RSS minimum %d KiB in the first half, %d KiB in the second (%+d KiB); fds minimum %d then %d (%+d)\n",
		r1, r2, r2-r1, f1, f2, f2-f1)
}

func ticker(every time.Duration) <-chan time.Time {
	if every <= 0 {
		return nil
	}
	return time.NewTicker(every).C
}

// call sends one request and returns its status, call id and error.
func call(ctx context.Context, c *http.Client, method, url, body string) (int, string, string) {
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		return 0, "", err.Error()
	}
	req.Header.Set("Content-Type", "text/plain")
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, "", "reading the answer: " + err.Error()
	}
	msg := ""
	if resp.StatusCode >= 400 {
		msg = strings.TrimSpace(string(b))
		if len(msg) > 200 {
			msg = msg[:200]
		}
	}
	return resp.StatusCode, resp.Header.Get("X-Call-Id"), msg
}

func callState(ctx context.Context, c *http.Client, base, id string) string {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/calls/"+id, nil)
	resp, err := c.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var r struct {
		State string `json:"state"`
	}
	if json.NewDecoder(resp.Body).Decode(&r) != nil {
		return ""
	}
	return r.State
}

// excused reports whether s failed because of a VM kill: a 502 answered
// within killGrace of a kill, for a request sent before it.
func excused(s sample, kills []time.Time) bool {
	const killGrace = 10 * time.Second
	if s.code != http.StatusBadGateway {
		return false
	}
	return slices.ContainsFunc(kills, func(k time.Time) bool {
		return !s.started.After(k) && s.finished.Sub(k) < killGrace
	})
}

func report(w io.Writer, f flags, samples []sample, kills []time.Time, asyncFailed, asyncPending, rss0, fds0, rss1, fds1 int, logPath string) bool {
	byKind := map[string][]time.Duration{}
	errs := map[string]int{}
	excusedN := 0
	var all []time.Duration
	for _, s := range samples {
		okCode := s.code == http.StatusOK || (s.kind == kindAsync && s.code == http.StatusAccepted)
		switch {
		case okCode:
			byKind[s.kind] = append(byKind[s.kind], s.took)
			all = append(all, s.took)
		case excused(s, kills):
			excusedN++
		default:
			errs[fmt.Sprintf("%s %d %s", s.kind, s.code, s.err)]++
		}
	}
	unexcused := 0
	for _, n := range errs {
		unexcused += n
	}
	fmt.Fprintf(w, "soak: %s, %d clients, %d VM kills\n", f.duration, f.clients, len(kills))
	fmt.Fprintf(w, "requests: %d (", len(samples))
	for i, k := range []string{kindExec, kindHTTP, kindAsync} {
		if i > 0 {
			fmt.Fprint(w, ", ")
		}
		fmt.Fprintf(w, "%s %d ok", k, len(byKind[k]))
	}
	fmt.Fprintln(w, ")")
	fmt.Fprintf(w, "latency: p50 %s, p99 %s (all successful requests)\n", pct(all, 50), pct(all, 99))
	for _, k := range []string{kindExec, kindHTTP, kindAsync} {
		fmt.Fprintf(w, "  %-9s p50 %s, p99 %s\n", k, pct(byKind[k], 50), pct(byKind[k], 99))
	}
	fmt.Fprintf(w, "errors: %d other than in-flight requests of killed VMs; %d 502s of killed VMs\n", unexcused, excusedN)
	keys := make([]string, 0, len(errs))
	for k := range errs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %dx %s\n", errs[k], k)
	}
	fmt.Fprintf(w, "async results: %d failed, %d not done 2m after the end\n", asyncFailed, asyncPending)
	fmt.Fprintf(w, "appliance RSS: %d KiB at start, %d KiB at end; open fds: %d at start, %d at end\n", rss0, rss1, fds0, fds1)
	fmt.Fprintf(w, "appliance log: %s\n", logPath)
	return unexcused == 0 && asyncFailed == 0 && asyncPending == 0
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := min(len(s)-1, (len(s)*p+99)/100-1)
	return s[max(i, 0)].Round(time.Millisecond)
}
