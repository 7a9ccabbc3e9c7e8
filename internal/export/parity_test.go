package export

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/faasvm/appliance/guest/protocol"
	"github.com/faasvm/appliance/internal/appliance"
	"github.com/faasvm/appliance/internal/config"
	"github.com/faasvm/appliance/internal/controller"
	"github.com/faasvm/appliance/internal/function"
	"github.com/faasvm/appliance/internal/image"
	"github.com/faasvm/appliance/internal/vmtest"
)

// parityRequest is one request sent to a function in both places.
type parityRequest struct {
	method, path, body string
	header             map[string]string
}

// parityFunctions are the folders compared: every shipped example, the
// seed demo's folder, and one whose handler fails (the agent's own error
// answer), each with the requests sent to it.
func parityFunctions() map[string][]parityRequest {
	json := map[string]string{"Content-Type": "application/json", "X-Request-Id": "parity-1"}
	return map[string][]parityRequest{
		"hello": {
			{method: "GET", path: "/"},
			{method: "POST", path: "/orders/42?x=1", body: "ignored"},
		},
		"echo": {
			{method: "GET", path: "/?a=1&b=two&b=three"},
			{method: "POST", path: "/orders", body: `{"id": 42}`, header: json},
			{method: "PUT", path: "/bin", body: "\x00\x01\xffbytes", header: map[string]string{"Content-Type": "application/octet-stream"}},
			{method: "DELETE", path: "/items/7"},
			// A function may serve any path: the agent's own live on the
			// control port, in a VM and in a container alike.
			{method: "GET", path: "/health"},
			{method: "GET", path: "/metrics"},
			{method: "POST", path: "/poweroff"},
			{method: "GET", path: "/_/health"},
			{method: "POST", path: "/_/poweroff"},
		},
		"node-hello": {
			{method: "GET", path: "/"},
			{method: "GET", path: "/?name=Ada"},
			{method: "POST", path: "/x?name=Grace", body: "{}", header: json},
		},
		"bash-hello": {
			{method: "GET", path: "/?q=1"},
			{method: "POST", path: "/", body: "hi there"},
		},
		"seed": {
			{method: "GET", path: "/"},
			{method: "GET", path: "/index.html"},
		},
		"fails": {
			{method: "POST", path: "/", body: "x"},
		},
	}
}

// parityConfig is the appliance's configuration from the environment `make
// test` prepares (FAAS_KERNEL_DIR, FAAS_AGENT_BIN, ...) and the shipped
// config file, with this test's functions folder and VM state.
func parityConfig(t *testing.T, assets *vmtest.Assets, functionsDir string) *config.Config {
	t.Helper()
	getenv := func(k string) string {
		switch k {
		case "FAAS_CONFIG":
			return filepath.Join(repoRoot, "config", "appliance.yaml")
		case "FAAS_ACCEL":
			if v := os.Getenv(k); v != "" {
				return v
			}
			return "tcg" // as the appliance's end-to-end tests: KVM here is unusable
		}
		return os.Getenv(k)
	}
	cfg, err := config.Load(nil, getenv)
	if err != nil {
		t.Fatalf("appliance config: %v", err)
	}
	state := vmtest.ShortDir(t)
	if err := os.Symlink(image.CacheDir(assets.StateDir), image.CacheDir(state)); err != nil {
		t.Fatal(err)
	}
	cfg.StateDir, cfg.FunctionsDir, cfg.BootWait = state, functionsDir, 3*time.Minute
	cfg.VMTemplate = filepath.Join(repoRoot, cfg.VMTemplate)
	return cfg
}

// TestParityWithVM runs each function twice, in a microVM of a running
// appliance and as its exported image in a container (Docker, runc, no
// privileges), sends both the same requests, and compares status,
// Content-Type, whether the agent answered itself, and body. It also checks
// that export --all skips an invalid folder with the reason the appliance
// gives it.
func TestParityWithVM(t *testing.T) {
	assets := vmtest.Load(t)
	cli := dialDocker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()

	fnDir := t.TempDir()
	for _, n := range []string{"hello", "echo", "node-hello", "bash-hello"} {
		copyTree(t, filepath.Join(repoRoot, "functions", n), filepath.Join(fnDir, n))
	}
	copyTree(t, seed(t), filepath.Join(fnDir, "seed"))
	fails := writeFolder(t, "fails", map[string]string{"handler.sh": "echo partial output\necho something broke >&2\nexit 3\n"})
	copyTree(t, fails, filepath.Join(fnDir, "fails"))
	broken := writeFolder(t, "broken", map[string]string{"handler.py": "print(1)", "function.yaml": "mode: http\nconcurency: 2\n"})
	copyTree(t, broken, filepath.Join(fnDir, "broken"))

	cfg := parityConfig(t, assets, fnDir)
	log := vmtest.Logger(t)
	app, err := appliance.New(ctx, cfg, log)
	if err != nil {
		t.Fatalf("appliance: %v", err)
	}
	t.Cleanup(func() {
		if err := app.Close(); err != nil {
			t.Errorf("stopping the appliance: %v", err)
		}
		if pids := vmtest.ProcessesWith(cfg.StateDir); len(pids) != 0 {
			t.Errorf("processes left behind: %v", pids)
		}
	})
	names, _ := os.ReadDir(fnDir)
	for _, e := range names {
		app.Controller.Sync(e.Name())
	}

	// Export while the VMs boot, with the appliance's own settings.
	template, err := function.LoadTemplate(cfg.VMTemplate)
	if err != nil {
		t.Fatal(err)
	}
	ex, err := New(Options{
		Manifest: ManifestOptions{RuntimeClass: DefaultRuntimeClass},
		AgentBin: cfg.AgentBin, RuntimesDir: cfg.RuntimesDir, MaxBody: int64(cfg.MaxBody),
		Defaults: appliance.FunctionDefaults(cfg), Template: template,
	}, cli, log)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	results, skipped, err := ex.ExportAll(ctx, fnDir)
	if err != nil {
		t.Fatalf("ExportAll: %v (skipped %+v)", err, skipped)
	}
	t.Logf("exported %d functions in %s", len(results), time.Since(start).Round(time.Millisecond))
	images := map[string]*Result{}
	for _, r := range results {
		images[r.Name] = r
		removeImage(t, cli, r.Tag)
	}

	t.Run("invalid folder skipped with the appliance's reason", func(t *testing.T) {
		if len(skipped) != 1 || skipped[0].Name != "broken" || !skipped[0].Invalid {
			t.Fatalf("skipped: got %+v, want only broken, as invalid", skipped)
		}
		st := waitStatus(t, app.Controller, "broken", func(s controller.Status) bool { return s.State == controller.StateInvalid })
		if skipped[0].Reason != st.LastError {
			t.Errorf("reason: export says %q, the appliance says %q", skipped[0].Reason, st.LastError)
		}
	})

	// Containers first (they start in well under a second), then each
	// function's VM.
	containers := map[string]*running{}
	for name := range parityFunctions() {
		r := images[name]
		if r == nil {
			t.Fatalf("%s was not exported (results %v)", name, results)
		}
		if v := deployedVersion(t, app.Controller, name); r.Version != v {
			t.Errorf("%s: exported version %s, the appliance deployed %s", name, r.Version, v)
		}
		containers[name] = runImage(t, cli, r.Tag)
	}
	for _, c := range containers {
		waitHealthy(t, c, time.Minute)
	}
	for name, reqs := range parityFunctions() {
		t.Run(name, func(t *testing.T) {
			inst, err := app.Controller.Acquire(ctx, name)
			if err != nil {
				t.Fatalf("no VM of %s: %v", name, err)
			}
			defer inst.Release(200)
			vm := "http://" + inst.Endpoint
			for _, rq := range reqs {
				label := rq.method + " " + rq.path
				inVM := send(t, vm, rq, map[string]string{protocol.SecretHeader: inst.Secret})
				inContainer := send(t, containers[name].data, rq, nil)
				if inVM.String() != inContainer.String() {
					t.Errorf("%s: differs\n  microVM:   %s\n  container: %s", label, inVM, inContainer)
				} else {
					t.Logf("%s: both %s", label, inVM.short())
				}
				if inVM.status == 0 || (inVM.status >= 500 && name != "fails") {
					t.Errorf("%s: the VM answered %s; the comparison wants a working function", label, inVM.short())
				}
			}
		})
	}
}

// answer is what is compared of a response.
type answer struct {
	status      int
	contentType string
	agentError  bool
	body        string
}

func (a answer) String() string {
	return fmt.Sprintf("%d type=%q agent-error=%v body=%q", a.status, a.contentType, a.agentError, a.body)
}

func (a answer) short() string {
	b := a.body
	if len(b) > 60 {
		b = b[:60] + "..."
	}
	return fmt.Sprintf("%d %q", a.status, b)
}

// send sends rq to base with the same Host and User-Agent whatever the
// address, so that a handler that echoes them sees the same request.
func send(t *testing.T, base string, rq parityRequest, extra map[string]string) answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, rq.method, base+rq.path, strings.NewReader(rq.body))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "fn.example.com"
	req.Header.Set("User-Agent", "faasvm-parity-test")
	for k, v := range rq.header {
		req.Header.Set(k, v)
	}
	for k, v := range extra {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("%s %s%s: %v", rq.method, base, rq.path, err)
		return answer{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{
		status:      resp.StatusCode,
		contentType: resp.Header.Get("Content-Type"),
		agentError:  resp.Header.Get(protocol.AgentErrorHeader) != "",
		body:        string(b),
	}
}

// waitStatus polls the controller until cond holds for name's status.
func waitStatus(t *testing.T, c *controller.Controller, name string, cond func(controller.Status) bool) controller.Status {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st, err := c.Get(context.Background(), name)
		if err == nil && cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("status of %s: condition not met within 2m; last %+v (%v)", name, st, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// deployedVersion is the version of name the appliance deploys.
func deployedVersion(t *testing.T, c *controller.Controller, name string) string {
	t.Helper()
	return waitStatus(t, c, name, func(s controller.Status) bool { return s.Version != "" }).Version
}
