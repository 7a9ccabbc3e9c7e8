package controller_test

// Real VMs (TCG here) serving handlers written to the OpenFaaS and Lambda
// contracts, with dependencies installed from requirements.txt (a wheel
// from a local folder: no index is reachable here) and package.json (the
// npm registry).

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
	"github.com/faasvm/appliance/internal/controller"
	"github.com/faasvm/appliance/internal/function"
	"github.com/faasvm/appliance/internal/image"
	"github.com/faasvm/appliance/internal/vm"
	"github.com/faasvm/appliance/internal/vm/qemu"
	"github.com/faasvm/appliance/internal/vmtest"
	"github.com/faasvm/appliance/internal/vmtest/pywheel"
)

const contractDir = "../../guest/agent/bootstrap/testdata"

func copyContract(t *testing.T, dst, src string, extra map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	if src != "" {
		entries, err := os.ReadDir(filepath.Join(contractDir, src))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			b, err := os.ReadFile(filepath.Join(contractDir, src, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name, content := range extra {
		if err := os.WriteFile(filepath.Join(dst, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestContractsRealVM(t *testing.T) {
	assets := vmtest.Load(t)
	ctx := context.Background()
	docker, err := image.DialDocker(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { docker.Close() })
	house := pywheel.Wheelhouse(t, "tinypkg", "1.0", "VALUE = 'from a wheel'\n")
	cache, err := image.New(image.Config{
		Dir: image.CacheDir(assets.StateDir), Docker: docker, Logger: vmtest.Logger(t),
		Deps: image.DepsConfig{PipIndexURL: "file://" + house, Timeout: 5 * time.Minute, CABundle: caBundle()},
	})
	if err != nil {
		t.Fatal(err)
	}
	nonce := fmt.Sprint(time.Now().UnixNano()) // a cold install every run
	functions := t.TempDir()
	copyContract(t, filepath.Join(functions, "pyhttp"), "py-http", nil)
	copyContract(t, filepath.Join(functions, "nodelambda"), "node-lambda", nil)
	copyContract(t, filepath.Join(functions, "pyclassic"), "py-classic", nil)
	copyContract(t, filepath.Join(functions, "nodedeps"), "", map[string]string{
		"handler.js": "'use strict';\nconst leftPad = require('left-pad');\n" +
			"module.exports = async (event, context) => context.status(200).succeed(leftPad(event.body, 5, '*'));\n",
		"package.json": `{"name": "nodedeps", "version": "1.0.0", "description": "` + nonce + `", "dependencies": {"left-pad": "1.3.0"}}`,
	})
	pyLambda := "import tinypkg\n\ndef lambda_handler(event, context):\n" +
		"    return {'statusCode': 200, 'body': tinypkg.VALUE + ' ' + str(context.memory_limit_in_mb)}\n"
	copyContract(t, filepath.Join(functions, "pylambda"), "", map[string]string{
		"lambda_function.py": pyLambda,
		"requirements.txt":   "# " + nonce + "\ntinypkg==1.0\n",
	})

	engine, err := qemu.New(qemu.Config{Accel: qemu.AccelTCG, StateDir: vmtest.ShortDir(t), Logger: vmtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	c := controller.New(controller.Options{
		FunctionsDir: functions, Kernel: assets.Kernel, Initrd: assets.Initrd, Template: vm.NewVM("template"),
		Defaults: function.Defaults{
			Timeout: 20 * time.Second, Memory: "256MB", MinReplicas: 1, MaxReplicas: 1, Concurrency: 4,
			IdleTimeout: time.Hour, TargetUtilization: 0.7, MaxSize: 64 << 20, SnapshotDir: t.TempDir(),
		},
		Logger: vmtest.Logger(t),
	}, engine, image.FunctionDisks{Cache: cache, RuntimesDir: assets.Disks.RuntimesDir})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		c.Close(ctx)
	})
	names := []string{"pyhttp", "nodelambda", "pyclassic", "nodedeps", "pylambda"}
	start := time.Now()
	for _, n := range names {
		c.Sync(n)
	}
	for _, n := range names {
		// Five functions with two cold dependency installs beside them can
		// push one first boot under TCG past the engine's 90-s boot timeout
		// (CI saw node's handler miss it once). The controller does not
		// retry a failed first deploy by itself (only transient prepare
		// failures are retried), so the test deploys again, at most twice,
		// as an operator would: the contract is what is checked here. Any
		// other state than ready, or a third failure, fails the test.
		var failedBoots []string
		st := waitFor(t, c, n, 8*time.Minute, func(s controller.Status) bool {
			if s.State == controller.StateFailed {
				switch {
				case len(failedBoots) > 0 && failedBoots[len(failedBoots)-1] == s.LastError:
					return false // the deploy again has not reported yet
				case len(failedBoots) < 2:
					failedBoots = append(failedBoots, s.LastError)
					t.Logf("%s: deploy failed (%.300s); deploying again", n, s.LastError)
					c.Sync(n)
					return false
				}
				return true
			}
			return s.State == controller.StateReady || s.State == controller.StateInvalid
		})
		if st.State != controller.StateReady {
			t.Fatalf("%s: got %s (%s), want ready (earlier failed deploys: %d)", n, st.State, st.LastError, len(failedBoots))
		}
	}
	t.Logf("five functions ready (two dependency installs, cold) in %s; deps %+v", time.Since(start).Round(time.Millisecond), cache.DepsStats())

	tests := []struct {
		fn, method, path, ctype, body string
		wantStatus                    int
		wantBody                      string // substring
	}{
		{"pyhttp", "POST", "/p?name=x", "text/plain", "hi", 201, `"bodyType":"bytes"`},
		{"pyhttp", "GET", "/teapot", "", "", 418, "short and stout"},
		{"nodelambda", "GET", "/things/1?q=z", "", "", 200, `"version":"2.0"`},
		{"nodelambda", "GET", "/", "", "", 200, `"function":"nodelambda","memory":"256"`},
		{"pyclassic", "POST", "/", "text/plain", "ping", 200, "classic python got: ping"},
		{"nodedeps", "POST", "/", "text/plain", "ab", 200, "***ab"},
		{"pylambda", "GET", "/", "", "", 200, "from a wheel 256"},
	}
	for _, tt := range tests {
		t.Run(tt.fn+tt.path, func(t *testing.T) {
			status, body := invoke(t, c, tt.fn, tt.method, tt.path, tt.ctype, tt.body)
			if status != tt.wantStatus || !strings.Contains(body, tt.wantBody) {
				t.Errorf("got %d %q, want %d and %q", status, body, tt.wantStatus, tt.wantBody)
			}
		})
	}

	t.Run("a bad requirement fails, the previous version serves", func(t *testing.T) {
		before, _ := c.Get(ctx, "pylambda")
		writeFile(t, filepath.Join(functions, "pylambda", "requirements.txt"), "# "+nonce+"\nno-such-package-here==9.9\n")
		c.Sync("pylambda")
		st := waitFor(t, c, "pylambda", 5*time.Minute, func(s controller.Status) bool { return s.LastError != "" })
		if st.State != controller.StateReady || st.Version != before.Version ||
			!strings.Contains(st.LastError, "previous version still serving") || !strings.Contains(st.LastError, "no-such-package-here") {
			t.Fatalf("got %s %s %q, want ready at %s and the installer's reason", st.State, st.Version, st.LastError, before.Version)
		}
		if status, body := invoke(t, c, "pylambda", "GET", "/", "", ""); status != 200 || !strings.Contains(body, "from a wheel") {
			t.Errorf("the previous version: got %d %q, want it serving", status, body)
		}
	})

	t.Run("a code-only edit reuses the dependency disk", func(t *testing.T) {
		writeFile(t, filepath.Join(functions, "pylambda", "requirements.txt"), "# "+nonce+"\ntinypkg==1.0\n")
		writeFile(t, filepath.Join(functions, "pylambda", "lambda_function.py"), strings.Replace(pyLambda, "' '", "' v2 '", 1))
		before := cache.DepsStats()
		began := time.Now()
		c.Sync("pylambda")
		waitFor(t, c, "pylambda", 3*time.Minute, func(s controller.Status) bool { return s.LastError == "" && s.State == controller.StateReady })
		if status, body := invoke(t, c, "pylambda", "GET", "/", "", ""); status != 200 || !strings.Contains(body, "from a wheel v2 256") {
			t.Fatalf("after the edit: got %d %q, want the new code", status, body)
		}
		after := cache.DepsStats()
		t.Logf("cached redeploy (code-only edit) serving in %s; deps %+v", time.Since(began).Round(time.Millisecond), after)
		if after.Installs != before.Installs || after.Cached <= before.Cached {
			t.Errorf("dependency installs: got %+v after %+v, want no install and a cache hit", after, before)
		}
	})
}

// caBundle is the host's CA bundle (npm's registry is reached through a
// TLS-intercepting proxy on some machines), "" when there is none.
func caBundle() string {
	const p = "/etc/ssl/certs/ca-certificates.crt"
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// invoke calls the function the way the gateway does.
func invoke(t *testing.T, c *controller.Controller, name, method, path, ctype, body string) (int, string) {
	t.Helper()
	_, code, b := invokeOn(t, c, time.Minute, name, method, path, ctype, body)
	return code, b
}

// invokeOn is invoke that also says which instance answered; bound limits
// the whole call, the wait for an instance included.
func invokeOn(t *testing.T, c *controller.Controller, bound time.Duration, name, method, path, ctype, body string) (controller.Instance, int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	in, err := c.Acquire(ctx, name)
	if err != nil {
		t.Fatalf("Acquire %s: %v", name, err)
	}
	req, _ := http.NewRequestWithContext(ctx, method, "http://"+in.Endpoint+path, strings.NewReader(body))
	req.Header.Set(protocol.SecretHeader, in.Secret)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		in.Release(0)
		t.Fatalf("invoking %s: %v", name, err)
	}
	defer resp.Body.Close()
	in.Release(resp.StatusCode)
	b, _ := io.ReadAll(resp.Body)
	return in, resp.StatusCode, string(b)
}
