package qemu_test

import (
	"bufio"
	"context"
	"log/slog"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/faasvm/appliance/guest/protocol"
	"github.com/faasvm/appliance/internal/vm/qemu"
)

// BenchmarkBootBreakdown says where a cold start's time goes, per runtime
// and mode (bash exec, python exec, python http), median of
// FAAS_BENCH_STARTS boots (default 3) each, one VM at a time:
//
//	host-<step>      the engine's boot steps (assets ... process: QEMU
//	                 started; endpoint; agent-ready: from the endpoint until
//	                 the agent's health check says ready, which in http
//	                 mode includes the handler's bootstrap)
//	guest-<step>     the agent's own boot steps, from the console log
//	                 (early-mounts ... network)
//	guest-bootstrap  "bootstrap started" to "handler ready" on the guest's
//	                 clock (http mode: the runtime starts and imports the
//	                 handler, then listens)
//	kernel-and-rest  agent-ready minus the guest's steps and bootstrap:
//	                 kernel boot, the agent's start, health-poll slack
//	start            Engine.Start as a whole
//	first-call       the first request after Start returned
//
// Run it alone, under the VM lock: scripts/bench.sh does
// (go test -run '^$' -bench BootBreakdown -benchtime 1x ./internal/vm/qemu).
func BenchmarkBootBreakdown(b *testing.B) {
	starts := 3
	if n, err := strconv.Atoi(os.Getenv("FAAS_BENCH_STARTS")); err == nil && n > 0 {
		starts = n
	}
	rec := &stepRecorder{}
	h := newHarness(b, func(c *qemu.Config) {
		rec.inner = c.Logger.Handler()
		c.Logger = slog.New(rec)
	})
	for _, fc := range []fnCase{cases[3], cases[0], cases[1]} { // bash exec, python exec, python http
		b.Run(fc.name, func(b *testing.B) {
			spec := h.spec(b, fc, false)
			spec.Agent.Timeout = protocol.Duration(60 * time.Second) // a loaded host: python3 per request is slow
			for b.Loop() {
				rows := map[string][]time.Duration{}
				for i := range starts {
					s := cloneSpec(spec, i+1)
					rec.reset()
					begin := time.Now()
					m, err := h.engine.Start(context.Background(), s)
					if err != nil {
						b.Fatalf("boot %d of %s: %v", i+1, fc.name, err)
					}
					rows["start"] = append(rows["start"], time.Since(begin))
					callBegin := time.Now()
					r := call(b, m, s.Agent.Secret, "GET", "/", "", nil)
					rows["first-call"] = append(rows["first-call"], time.Since(callBegin))
					if r.status >= 300 {
						_ = m.Stop(context.Background())
						b.Fatalf("boot %d of %s: first call answered %d %q", i+1, fc.name, r.status, r.body)
					}
					host := rec.steps()
					guest, bootstrap, err := guestBreakdown(m.ConsoleLog())
					if stopErr := m.Stop(context.Background()); stopErr != nil {
						b.Fatal(stopErr)
					}
					if err != nil {
						b.Fatalf("boot %d of %s: console log: %v", i+1, fc.name, err)
					}
					if _, ok := host["agent ready"]; !ok || len(guest) == 0 {
						b.Fatalf("boot %d of %s: steps not found (engine %v, guest %v): is the engine logging at debug?", i+1, fc.name, host, guest)
					}
					rest := host["agent ready"] - bootstrap
					for name, d := range host {
						rows["host-"+name] = append(rows["host-"+name], d)
					}
					for name, d := range guest {
						rows["guest-"+name] = append(rows["guest-"+name], d)
						rest -= d
					}
					if bootstrap > 0 {
						rows["guest-bootstrap"] = append(rows["guest-bootstrap"], bootstrap)
					}
					rows["kernel-and-rest"] = append(rows["kernel-and-rest"], rest)
				}
				names := make([]string, 0, len(rows))
				for name := range rows {
					names = append(names, name)
				}
				sort.Strings(names)
				for _, name := range names {
					b.ReportMetric(float64(median(rows[name]).Microseconds())/1000, "ms-"+unitName(name))
				}
				b.Logf("%s: start %v, first call %v", fc.name, rows["start"], rows["first-call"])
			}
		})
	}
}

// pyImportTime is an exec-mode handler that runs python3 -X importtime on
// the python bootstrap's imports in the guest and prints the slowest ones
// (cumulative microseconds) and the whole run's wall time.
const pyImportTime = `import subprocess, sys, time
mods = "asyncio, base64, http.server, importlib.util, inspect, json, os, random, signal, sys, time, traceback, urllib.parse, uuid"
t = time.monotonic()
r = subprocess.run([sys.executable, "-X", "importtime", "-c", "import " + mods], capture_output=True, text=True)
wall = time.monotonic() - t
rows = []
for line in r.stderr.splitlines():
    parts = line.split("|")
    if len(parts) == 3 and parts[1].strip().isdigit():
        rows.append((int(parts[1]), parts[2].rstrip()))
rows.sort(reverse=True)
print("python3 -X importtime of the bootstrap's imports: %.0f ms wall" % (wall * 1000))
for us, name in rows[:12]:
    print("%8.0f ms cumulative %s" % (us / 1000, name))
t = time.monotonic()
subprocess.run([sys.executable, "-c", "pass"])
print("python3 -c pass: %.0f ms" % ((time.monotonic() - t) * 1000))
`

// BenchmarkPythonImports boots one python exec VM and reports where the
// python http bootstrap's start goes inside the guest: python3 -X importtime
// of its imports (logged) and the wall time of that and of a bare python3.
func BenchmarkPythonImports(b *testing.B) {
	h := newHarness(b)
	fc := fnCase{name: "py-imports", runtime: "python3", mode: protocol.ModeExec, handler: "handler.py",
		code: pyImportTime, command: []string{"python3", "handler.py"}}
	spec := h.spec(b, fc, false)
	spec.Agent.Timeout = protocol.Duration(120 * time.Second)
	m := h.start(b, spec)
	for b.Loop() {
		r := call(b, m, spec.Agent.Secret, "GET", "/", "", nil)
		if r.status != 200 || !strings.Contains(r.body, "importtime") {
			b.Fatalf("importtime handler answered %d %q", r.status, r.body)
		}
		b.Logf("in the guest:\n%s", r.body)
		for _, m := range []struct{ re, unit string }{
			{`importtime of the bootstrap's imports: (\d+) ms wall`, "ms-imports-in-booted-guest"},
			{`python3 -c pass: (\d+) ms`, "ms-python3-bare"},
		} {
			if got := regexp.MustCompile(m.re).FindStringSubmatch(r.body); got != nil {
				v, _ := strconv.Atoi(got[1])
				b.ReportMetric(float64(v), m.unit)
			}
		}
	}

	// The same imports at the http bootstrap's own start, right after boot:
	// PYTHONPROFILEIMPORTTIME=1 makes python3 print them to stderr, which
	// the agent copies to the console log.
	hs := h.spec(b, cases[1], false)
	hs.Agent.Env = map[string]string{"PYTHONPROFILEIMPORTTIME": "1"}
	hm := h.start(b, hs)
	f, err := os.Open(hm.ConsoleLog())
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	type row struct {
		us   int
		line string
	}
	var rows []row
	var marks []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if i := strings.Index(line, "import time:"); i >= 0 {
			parts := strings.Split(line[i:], "|")
			if len(parts) == 3 {
				if us, err := strconv.Atoi(strings.TrimSpace(parts[1])); err == nil {
					rows = append(rows, row{us, strings.TrimRight(parts[2], " ")})
				}
			}
			continue
		}
		for _, m := range []string{`msg="bootstrap started"`, `msg="handler ready"`, "bootstrap: serving", `step=network took`} {
			if strings.Contains(line, m) {
				marks = append(marks, line)
			}
		}
	}
	top := 0 // the top-level imports' cumulative times add up to all of them
	for _, r := range rows {
		if strings.HasPrefix(r.line, " ") && !strings.HasPrefix(r.line, "  ") {
			top += r.us
		}
	}
	b.ReportMetric(float64(top)/1000, "ms-imports-at-bootstrap-start")
	sort.Slice(rows, func(i, j int) bool { return rows[i].us > rows[j].us })
	var sb strings.Builder
	for _, r := range rows[:min(12, len(rows))] {
		sb.WriteString(strconv.Itoa(r.us/1000) + " ms cumulative " + r.line + "\n")
	}
	b.Logf("http bootstrap right after boot: %d imports profiled; slowest:\n%s\nmarks:\n%s", len(rows), sb.String(), strings.Join(marks, "\n"))
}

// unitName makes a step name a benchmark unit (no spaces).
func unitName(s string) string { return strings.ReplaceAll(s, " ", "-") }

var (
	consoleTime = regexp.MustCompile(`^time=(\S+)`)
	consoleStep = regexp.MustCompile(`msg="boot step done" .*step=(\S+) took=(\S+)`)
)

// guestBreakdown reads the agent's boot steps from a console log, and the
// time from "bootstrap started" to "handler ready" (0 without a bootstrap).
func guestBreakdown(path string) (map[string]time.Duration, time.Duration, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	steps := map[string]time.Duration{}
	var started, ready time.Time
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if m := consoleStep.FindStringSubmatch(line); m != nil {
			if d, err := time.ParseDuration(m[2]); err == nil {
				steps[m[1]] = d
			}
		}
		at := func() time.Time {
			m := consoleTime.FindStringSubmatch(line)
			if m == nil {
				return time.Time{}
			}
			t, _ := time.Parse(time.RFC3339Nano, m[1])
			return t
		}
		switch {
		case strings.Contains(line, `msg="bootstrap started"`) && started.IsZero():
			started = at()
		case strings.Contains(line, `msg="handler ready"`) && ready.IsZero():
			ready = at()
		}
	}
	var bootstrap time.Duration
	if !started.IsZero() && !ready.IsZero() {
		bootstrap = ready.Sub(started)
	}
	return steps, bootstrap, sc.Err()
}

// stepRecorder is a slog handler that keeps the took of every "boot step
// done" record (the engine logs them at debug) and passes records on to
// inner at inner's level.
type stepRecorder struct {
	inner slog.Handler
	mu    *sync.Mutex
	got   map[string]time.Duration
	attrs []slog.Attr
}

func (r *stepRecorder) reset() {
	if r.mu == nil {
		r.mu = &sync.Mutex{}
	}
	r.mu.Lock()
	r.got = map[string]time.Duration{}
	r.mu.Unlock()
}

func (r *stepRecorder) steps() map[string]time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]time.Duration, len(r.got))
	for k, v := range r.got {
		out[k] = v
	}
	return out
}

func (r *stepRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *stepRecorder) Handle(ctx context.Context, rec slog.Record) error {
	if rec.Message == "boot step done" && r.mu != nil {
		var step string
		var took time.Duration
		rec.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "step":
				step = a.Value.String()
			case "took":
				took = a.Value.Duration()
			}
			return true
		})
		r.mu.Lock()
		if r.got != nil && step != "" {
			r.got[step] = took
		}
		r.mu.Unlock()
	}
	if r.inner.Enabled(ctx, rec.Level) {
		return r.inner.Handle(ctx, rec)
	}
	return nil
}

func (r *stepRecorder) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &stepShared{r: r, inner: r.inner.WithAttrs(attrs)}
}

func (r *stepRecorder) WithGroup(name string) slog.Handler {
	return &stepShared{r: r, inner: r.inner.WithGroup(name)}
}

// stepShared is a derived handler (With...) recording into its root.
type stepShared struct {
	r     *stepRecorder
	inner slog.Handler
}

func (s *stepShared) Enabled(context.Context, slog.Level) bool { return true }

func (s *stepShared) Handle(ctx context.Context, rec slog.Record) error {
	root := *s.r
	root.inner = s.inner
	return root.Handle(ctx, rec)
}

func (s *stepShared) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &stepShared{r: s.r, inner: s.inner.WithAttrs(attrs)}
}

func (s *stepShared) WithGroup(name string) slog.Handler {
	return &stepShared{r: s.r, inner: s.inner.WithGroup(name)}
}
