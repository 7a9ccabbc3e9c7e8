package main_test

// End-to-end tests of the real appliance binary with real microVMs (TCG on
// these machines): folders are copied into the functions directory and the
// functions are called through the gateway, as a user would.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/faasvm/appliance/internal/controller"
	"github.com/faasvm/appliance/internal/vmtest"
)

// appliance is one running appliance process.
type appliance struct {
	base      string // http://127.0.0.1:port
	functions string
	stateDir  string
	cmd       *exec.Cmd
	logMu     sync.Mutex
	log       strings.Builder
}

var servingRE = regexp.MustCompile(`msg=serving addr=(\S+)`)

// The appliance binary, built once per test process (a link of the whole
// program takes seconds, and a dozen tests start appliances); TestMain
// removes its directory.
var (
	buildOnce sync.Once
	buildDir  string
	buildBin  string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// applianceBinary builds the appliance from this package's sources on the
// first call and returns the same binary afterwards.
func applianceBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "appliance-bin-")
		if buildErr != nil {
			return
		}
		buildBin = filepath.Join(buildDir, "appliance")
		if out, err := exec.Command("go", "build", "-o", buildBin, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("%w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("building the appliance (go build in cmd/appliance): %v", buildErr)
	}
	return buildBin
}

// startAppliance starts the appliance with a fresh functions folder and its
// own state dir (sharing the image cache of FAAS_STATE_DIR).
//
// In tests VM snapshots are off unless extraEnv turns them on
// ("FAAS_SNAPSHOTS=true"; a later entry wins; benchmarks keep the
// product's default): with them on, every deploy also boots a snapshot
// builder VM in the background, which competes with the test's own boots
// for the concurrent boot limit and the two cores. The tests that are about
// snapshots or scale from zero turn them on.
func startAppliance(t testing.TB, extraEnv ...string) *appliance {
	t.Helper()
	assets := vmtest.Load(t) // fails with instructions when assets are missing
	bin := applianceBinary(t)
	a := &appliance{functions: t.TempDir(), stateDir: vmtest.ShortDir(t)}
	if err := os.Symlink(filepath.Join(assets.StateDir, "images"), filepath.Join(a.stateDir, "images")); err != nil {
		t.Fatal(err)
	}
	repo, _ := filepath.Abs("../..")
	a.cmd = exec.Command(bin)
	a.cmd.Env = append(os.Environ(),
		"FAAS_LISTEN=127.0.0.1:0",
		"FAAS_FUNCTIONS_DIR="+a.functions,
		"FAAS_STATE_DIR="+a.stateDir,
		"FAAS_VM_TEMPLATE="+filepath.Join(repo, "config", "func-handler.yml"),
		"FAAS_CONFIG="+filepath.Join(repo, "config", "appliance.yaml"),
		"FAAS_ACCEL=tcg",
		"FAAS_DEBOUNCE=300ms",
		"FAAS_BOOT_WAIT=90s",
		"FAAS_LOG_LEVEL=debug",
	)
	if _, bench := t.(*testing.B); !bench {
		// Benchmarks measure the product's defaults (snapshots on).
		a.cmd.Env = append(a.cmd.Env, "FAAS_SNAPSHOTS=false")
	}
	a.cmd.Env = append(a.cmd.Env, extraEnv...)
	stderr, err := a.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			a.logMu.Lock()
			a.log.WriteString(line + "\n")
			a.logMu.Unlock()
			if m := servingRE.FindStringSubmatch(line); m != nil {
				addr <- m[1]
			}
		}
	}()
	t.Cleanup(func() {
		a.stop(t)
		if t.Failed() {
			a.logMu.Lock()
			t.Logf("appliance log:\n%s", a.log.String())
			a.logMu.Unlock()
		}
	})
	select {
	case ad := <-addr:
		a.base = "http://" + ad
	case <-time.After(120 * time.Second):
		t.Fatalf("appliance did not start serving")
	}
	return a
}

// stop sends SIGTERM and waits; the appliance must stop every VM.
func (a *appliance) stop(t testing.TB) {
	if a.cmd.ProcessState != nil {
		return
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- a.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("appliance exit: %v", err)
		}
	case <-time.After(60 * time.Second):
		_ = a.cmd.Process.Kill()
		t.Errorf("appliance did not stop within 60s of SIGTERM")
	}
	if pids := vmtest.ProcessesWith(a.stateDir); len(pids) != 0 {
		t.Errorf("processes left after the appliance stopped: %v", pids)
	}
}

func (a *appliance) get(t testing.TB, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(a.base + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitFor polls path until cond holds, bounded.
func (a *appliance) waitFor(t testing.TB, path string, bound time.Duration, cond func(int, string) bool) (int, string) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		code, body := a.get(t, path)
		if cond(code, body) {
			return code, body
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: condition not met within %s; last %d %q", path, bound, code, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (a *appliance) status(t testing.TB, name string) controller.Status {
	t.Helper()
	_, body := a.get(t, "/api/functions/"+name)
	var s controller.Status
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("status of %s: %v (%q)", name, err, body)
	}
	return s
}

// copyDir copies src into dst like `cp -r`.
func copyDir(t testing.TB, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-r", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -r %s %s: %v %s", src, dst, err, out)
	}
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func is200(code int, _ string) bool { return code == http.StatusOK }

func TestAppliance(t *testing.T) {
	a := startAppliance(t)

	if code, _ := a.get(t, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: got %d, want 200", code)
	}

	t.Run("copy a folder in, it answers", func(t *testing.T) {
		start := time.Now()
		copyDir(t, "../../functions/hello", filepath.Join(a.functions, "hello"))
		_, body := a.waitFor(t, "/invoke/hello", 120*time.Second, is200)
		t.Logf("folder copy to first 200: %s", time.Since(start).Round(10*time.Millisecond))
		if !strings.Contains(strings.ToLower(body), "<html") {
			t.Errorf("hello: got %q, want an HTML page", body)
		}
	})

	t.Run("the seed demo folder deploys unchanged", func(t *testing.T) {
		copyDir(t, "../../internal/function/testdata/seed", filepath.Join(a.functions, "seed-demo"))
		_, body := a.waitFor(t, "/invoke/seed-demo", 120*time.Second, is200)
		want, err := exec.Command("python3", "../../internal/function/testdata/seed/hello-world.py").Output()
		if err != nil {
			t.Fatalf("running hello-world.py on the host: %v", err)
		}
		if body != string(want) {
			t.Errorf("seed demo: got %q, want what hello-world.py prints: %q", body, want)
		}
		s := a.status(t, "seed-demo")
		if s.Runtime != "python3" || len(s.Warnings) == 0 {
			t.Errorf("seed demo status: got runtime %q warnings %v, want python3 and the VM fields qemu ignores", s.Runtime, s.Warnings)
		}
	})

	t.Run("http mode passes method, path, query, headers and body", func(t *testing.T) {
		copyDir(t, "../../functions/echo", filepath.Join(a.functions, "echo"))
		a.waitFor(t, "/invoke/echo", 120*time.Second, is200)
		req, _ := http.NewRequest("PUT", a.base+"/invoke/echo/sub/path?a=1&b=two", strings.NewReader(`{"x":1}`))
		req.Header.Set("X-Custom", "yes")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var got struct {
			Method, Path, Query, Body string
			Headers                   map[string]string
		}
		if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
			t.Fatalf("decoding echo: %v", err)
		}
		if resp.StatusCode != 200 || got.Method != "PUT" || got.Path != "/sub/path" || got.Query != "a=1&b=two" ||
			got.Body != `{"x":1}` || got.Headers["x-custom"] != "yes" || got.Headers["x-forwarded-for"] == "" {
			t.Errorf("echo: got %d %+v", resp.StatusCode, got)
		}
		if got.Headers["x-faas-secret"] != "" {
			t.Errorf("the per-VM secret reached the handler")
		}
	})

	t.Run("an edit redeploys with zero downtime", func(t *testing.T) {
		dir := filepath.Join(a.functions, "swap")
		writeFile(t, filepath.Join(dir, "handler.py"), "print('version one')\n")
		a.waitFor(t, "/invoke/swap", 120*time.Second, is200)
		ctx, cancel := context.WithCancel(context.Background())
		var calls, failures atomic.Int64
		var firstFailure atomic.Value
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				resp, err := http.Get(a.base + "/invoke/swap")
				calls.Add(1)
				if err != nil {
					failures.Add(1)
					firstFailure.CompareAndSwap(nil, err.Error())
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failures.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("%d %s", resp.StatusCode, b))
				}
			}
		}()
		writeFile(t, filepath.Join(dir, "handler.py"), "print('version two')\n")
		a.waitFor(t, "/invoke/swap", 120*time.Second, func(c int, b string) bool { return strings.Contains(b, "version two") })
		// Keep calling until the old VM has drained and stopped.
		deadline := time.Now().Add(60 * time.Second)
		for a.status(t, "swap").Replicas.Draining > 0 && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		cancel()
		wg.Wait()
		if failures.Load() != 0 {
			t.Errorf("%d of %d calls through the swap failed; first: %v", failures.Load(), calls.Load(), firstFailure.Load())
		}
		t.Logf("%d calls through the swap, all 200", calls.Load())

		// A broken new version leaves the old one serving, with the reason.
		writeFile(t, filepath.Join(dir, "function.yaml"), "mode: sideways\n")
		deadline = time.Now().Add(30 * time.Second)
		for a.status(t, "swap").LastError == "" && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		s := a.status(t, "swap")
		if !strings.Contains(s.LastError, "mode") || s.State != controller.StateReady {
			t.Errorf("after a broken edit: got state %s error %q, want ready and a reason naming mode", s.State, s.LastError)
		}
		if code, body := a.get(t, "/invoke/swap"); code != 200 || !strings.Contains(body, "version two") {
			t.Errorf("old version should keep serving: got %d %q", code, body)
		}
	})

	t.Run("bad folders get a reason and others keep answering", func(t *testing.T) {
		tests := []struct {
			name      string
			files     map[string]string
			wantState string
			wantErr   string
		}{
			{name: "Bad_Name", files: map[string]string{"handler.py": "print(1)\n"}, wantState: controller.StateInvalid, wantErr: "lowercase letters"},
			{name: "broken-manifest", files: map[string]string{"handler.py": "print(1)\n", "function.yaml": "timeout: [\n"}, wantState: controller.StateInvalid, wantErr: "function.yaml"},
			{name: "crash-at-start", files: map[string]string{
				"handler.py":    "raise RuntimeError('cannot start: missing setting')\n",
				"function.yaml": "mode: http\n",
			}, wantState: controller.StateFailed, wantErr: "cannot start: missing setting"},
		}
		for _, tt := range tests {
			for f, c := range tt.files {
				writeFile(t, filepath.Join(a.functions, tt.name, f), c)
			}
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				deadline := time.Now().Add(120 * time.Second)
				var s controller.Status
				for {
					s = a.status(t, tt.name)
					if s.State == tt.wantState || time.Now().After(deadline) {
						break
					}
					time.Sleep(200 * time.Millisecond)
				}
				if s.State != tt.wantState || !strings.Contains(s.LastError, tt.wantErr) {
					t.Errorf("status: got %s %q, want %s containing %q", s.State, s.LastError, tt.wantState, tt.wantErr)
				}
				code, body := a.get(t, "/invoke/"+tt.name)
				if code != http.StatusServiceUnavailable || !strings.Contains(body, "error") {
					t.Errorf("invoke: got %d %q, want 503 with a JSON error", code, body)
				}
			})
		}
		if code, _ := a.get(t, "/invoke/hello"); code != 200 {
			t.Errorf("hello stopped answering: got %d", code)
		}
	})

	t.Run("a deleted folder stops and answers 404", func(t *testing.T) {
		if err := os.RemoveAll(filepath.Join(a.functions, "hello")); err != nil {
			t.Fatal(err)
		}
		_, body := a.waitFor(t, "/invoke/hello", 60*time.Second, func(c int, _ string) bool { return c == 404 })
		if !strings.Contains(body, "not found") {
			t.Errorf("404 body: got %q", body)
		}
	})

	t.Run("api lists functions", func(t *testing.T) {
		_, body := a.get(t, "/api/functions")
		var list struct{ Functions []controller.Status }
		if err := json.Unmarshal([]byte(body), &list); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, f := range list.Functions {
			names = append(names, f.Name)
		}
		sort.Strings(names)
		for _, want := range []string{"echo", "seed-demo", "swap"} {
			if i := sort.SearchStrings(names, want); i >= len(names) || names[i] != want {
				t.Errorf("/api/functions lacks %s: %v", want, names)
			}
		}
		if code, logs := a.get(t, "/api/functions/echo/console?lines=50"); code != 200 || logs == "" {
			t.Errorf("logs: got %d %q, want the console tail", code, logs)
		}
	})
}

// BenchmarkFolderToFirst200 measures the time from copying a function
// folder into the functions directory to its first 200 through the gateway
// (a cold deploy: snapshot, VM boot, agent ready), median over the runs.
func BenchmarkFolderToFirst200(b *testing.B) {
	a := startAppliance(b)
	var times []time.Duration
	i := 0
	for b.Loop() {
		i++
		name := fmt.Sprintf("bench-%d", i)
		start := time.Now()
		copyDir(b, "../../functions/hello", filepath.Join(a.functions, name))
		a.waitFor(b, "/invoke/"+name, 120*time.Second, is200)
		times = append(times, time.Since(start))
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	b.ReportMetric(float64(times[len(times)/2].Milliseconds()), "ms-copy-to-200-median")
}

// TestRestartAfterCrash kills the appliance with SIGKILL: its VMs must die
// with it, and the next start on the same state dir removes what the dead
// run left and serves again.
func TestRestartAfterCrash(t *testing.T) {
	a := startAppliance(t)
	copyDir(t, "../../functions/hello", filepath.Join(a.functions, "hello"))
	a.waitFor(t, "/invoke/hello", 120*time.Second, is200)
	if pids := vmtest.ProcessesWith(a.stateDir); len(pids) == 0 {
		t.Fatalf("no VM process found under %s while hello serves", a.stateDir)
	}

	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = a.cmd.Wait()
	deadline := time.Now().Add(15 * time.Second)
	for len(vmtest.ProcessesWith(a.stateDir)) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if pids := vmtest.ProcessesWith(a.stateDir); len(pids) != 0 {
		t.Fatalf("VM processes outlived the killed appliance: %v", pids)
	}
	vmsDir := filepath.Join(a.stateDir, "vms")
	left, err := os.ReadDir(vmsDir)
	if err != nil || len(left) == 0 {
		t.Fatalf("expected the killed run's VM dirs in %s (err %v)", vmsDir, err)
	}

	b := startAppliance(t, "FAAS_STATE_DIR="+a.stateDir, "FAAS_FUNCTIONS_DIR="+a.functions)
	b.stateDir, b.functions = a.stateDir, a.functions
	b.waitFor(t, "/invoke/hello", 120*time.Second, is200)
	for _, e := range left {
		if _, err := os.Stat(filepath.Join(vmsDir, e.Name())); !os.IsNotExist(err) {
			t.Errorf("VM dir %s of the killed run is still there (err %v)", e.Name(), err)
		}
	}
}
