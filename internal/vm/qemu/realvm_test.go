package qemu_test

// Tests and benchmarks that boot real microVMs (TCG on these machines).
// They need the assets `make test` prepares; see internal/vmtest.

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	meta "github.com/weaveworks/ignite/pkg/apis/meta/v1alpha1"

	"github.com/faasvm/appliance/guest/protocol"
	"github.com/faasvm/appliance/internal/vm"
	"github.com/faasvm/appliance/internal/vm/qemu"
	"github.com/faasvm/appliance/internal/vmtest"
)

// Handlers used by the real-VM tests. The python exec handler also probes
// the network from inside the guest when asked (?probe=port,port).
const pyExec = `import os, socket, sys, time
q = os.environ.get("Http_Query", "")
params = dict(p.split("=", 1) for p in q.split("&") if "=" in p)
if params.get("fail") == "1":
    print("boom: the handler failed on purpose", file=sys.stderr)
    sys.exit(3)
if params.get("sleep"):
    time.sleep(float(params["sleep"]))
if params.get("probe"):
    # Each target is a port on the gateway (10.0.2.2) or host:port.
    for target in params["probe"].split(","):
        host, _, port = target.rpartition(":")
        s = socket.socket()
        s.settimeout(3)
        try:
            s.connect((host or "10.0.2.2", int(port)))
            print(f"{target}:open {s.recv(64).decode().strip()}")
        except OSError as e:
            print(f"{target}:closed {e}")
        finally:
            s.close()
    sys.exit(0)
body = sys.stdin.read()
print(f"py-exec method={os.environ['Http_Method']} path={os.environ['Http_Path']} query={q} "
      f"x-test={os.environ.get('Http_X_Test', '')} body={body}")
`

const pyHTTP = `import json
def handle(req):
    return {"statusCode": 201, "headers": {"X-Reply": "py-http"},
            "body": "py-http method=%s path=%s query=%s x-test=%s body=%s" % (
                req["method"], req["path"], req["query"], req["headers"].get("x-test", ""), req["text"])}
`

const nodeHTTP = `module.exports = async (req) => ({
  statusCode: 201,
  headers: { "X-Reply": "node" },
  body: "node method=" + req.method + " path=" + req.path + " query=" + req.query +
        " x-test=" + (req.headers["x-test"] || "") + " body=" + req.text,
});
`

const bashExec = `echo "bash method=$Http_Method path=$Http_Path query=$Http_Query x-test=$Http_X_Test body=$(cat)"
`

type fnCase struct {
	name, runtime, mode, handler, code string
	command                            []string
}

var cases = []fnCase{
	{name: "py-exec", runtime: "python3", mode: protocol.ModeExec, handler: "handler.py", code: pyExec, command: []string{"python3", "handler.py"}},
	{name: "py-http", runtime: "python3", mode: protocol.ModeHTTP, handler: "handler.py", code: pyHTTP},
	{name: "node", runtime: "node", mode: protocol.ModeHTTP, handler: "handler.js", code: nodeHTTP},
	{name: "bash", runtime: "bash", mode: protocol.ModeExec, handler: "handler.sh", code: bashExec, command: []string{"bash", "handler.sh"}},
}

type harness struct {
	assets *vmtest.Assets
	engine *qemu.Engine
	state  string
}

func newHarness(tb testing.TB, tune ...func(*qemu.Config)) *harness {
	tb.Helper()
	a := vmtest.Load(tb)
	state := vmtest.ShortDir(tb)
	cfg := qemu.Config{Accel: qemu.AccelAuto, StateDir: state, Logger: vmtest.Logger(tb)}
	for _, f := range tune {
		f(&cfg)
	}
	e, err := qemu.New(cfg)
	if err != nil {
		tb.Fatalf("qemu.New: %v", err)
	}
	return &harness{assets: a, engine: e, state: state}
}

// spec prepares the disks of fc and returns a VM spec for it.
func (h *harness) spec(tb testing.TB, fc fnCase, egress bool) *vm.Spec {
	tb.Helper()
	ctx := context.Background()
	rootfs, err := h.assets.Disks.RootFS(ctx, fc.runtime, "")
	if err != nil {
		tb.Fatalf("rootfs for %s: %v", fc.runtime, err)
	}
	code, err := h.assets.Disks.CodeDisk(ctx, vmtest.WriteFiles(tb, map[string]string{fc.handler: fc.code}))
	if err != nil {
		tb.Fatalf("code disk: %v", err)
	}
	v := vm.NewVM(fc.name)
	v.Spec.Memory = meta.NewSizeFromBytes(256 << 20)
	return &vm.Spec{
		VM: v, Kernel: h.assets.Kernel, Initrd: h.assets.Initrd, RootFS: rootfs, Code: code, Egress: egress,
		Agent: protocol.Config{
			Name: fc.name, Secret: "s3cret-" + fc.name, ControlSecret: "c0ntrol-" + fc.name,
			Mode: fc.mode, Runtime: fc.runtime, Handler: fc.handler,
			Command: fc.command, Timeout: protocol.Duration(3 * time.Second),
			Network: protocol.Network{Address: protocol.GuestAddress, Gateway: protocol.GuestGateway},
		},
	}
}

func (h *harness) start(tb testing.TB, s *vm.Spec) vm.Machine {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	m, err := h.engine.Start(ctx, s)
	if err != nil {
		tb.Fatalf("starting %s: %v", s.VM.Name, err)
	}
	tb.Cleanup(func() { _ = m.Stop(context.Background()) })
	return m
}

type reply struct {
	status int
	header http.Header
	body   string
}

func call(tb testing.TB, m vm.Machine, secret, method, target, body string, hdr map[string]string) reply {
	tb.Helper()
	return callAt(tb, m.Endpoint(), protocol.SecretHeader, secret, method, target, body, hdr)
}

// callAt sends one request to endpoint with secret in header (none when
// secret is empty).
func callAt(tb testing.TB, endpoint, header, secret, method, target, body string, hdr map[string]string) reply {
	tb.Helper()
	req, err := http.NewRequest(method, "http://"+endpoint+target, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	if secret != "" {
		req.Header.Set(header, secret)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

// TestRealVMs boots one VM per runtime and mode and checks what reaches the
// handler and what comes back, the error paths, isolation, and that stopping
// leaves nothing behind.
func TestRealVMs(t *testing.T) {
	h := newHarness(t)
	machines := make([]vm.Machine, len(cases))
	var wg sync.WaitGroup
	errs := make([]error, len(cases))
	for i, fc := range cases {
		s := h.spec(t, fc, false)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
			defer cancel()
			machines[i], errs[i] = h.engine.Start(ctx, s)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("starting %s: %v", cases[i].name, err)
		}
		m := machines[i]
		t.Cleanup(func() { _ = m.Stop(context.Background()) })
	}
	if accel, why := h.engine.Accel(); accel != "" {
		t.Logf("accelerator: %s (%s)", accel, why)
	}

	t.Run("answers", func(t *testing.T) {
		for i, fc := range cases {
			t.Run(fc.name, func(t *testing.T) {
				r := call(t, machines[i], "s3cret-"+fc.name, "POST", "/some/path?x=1&y=two", "ping",
					map[string]string{"X-Test": "hello"})
				wantStatus := http.StatusOK
				if fc.mode == protocol.ModeHTTP {
					wantStatus = http.StatusCreated
					if got := r.header.Get("X-Reply"); got != fc.name {
						t.Errorf("X-Reply header: got %q, want %q", got, fc.name)
					}
				}
				if r.status != wantStatus {
					t.Errorf("status: got %d, want %d (body %q)", r.status, wantStatus, r.body)
				}
				want := fc.name + " method=POST path=/some/path query=x=1&y=two x-test=hello body=ping"
				if strings.TrimSpace(r.body) != want {
					t.Errorf("body: got %q, want %q", strings.TrimSpace(r.body), want)
				}
			})
		}
	})

	exec := machines[0]
	const secret = "s3cret-py-exec"
	tests := []struct {
		name       string
		secret     string
		target     string
		wantStatus int
		wantBody   string
	}{
		{name: "no secret is refused", secret: "", target: "/", wantStatus: http.StatusForbidden, wantBody: "error"},
		{name: "wrong secret is refused", secret: "s3cret-node", target: "/", wantStatus: http.StatusForbidden, wantBody: "error"},
		{name: "non-zero exit gives 500 with stderr", secret: secret, target: "/?fail=1", wantStatus: http.StatusInternalServerError, wantBody: "boom: the handler failed on purpose"},
		{name: "past the timeout gives 504", secret: secret, target: "/?sleep=20", wantStatus: http.StatusGatewayTimeout, wantBody: "error"},
		{name: "the next request is served", secret: secret, target: "/after?x=1", wantStatus: http.StatusOK, wantBody: "path=/after"},
		{name: "the old health path is the function's", secret: secret, target: "/_/health", wantStatus: http.StatusOK, wantBody: "path=/_/health"},
	}
	t.Run("exec errors", func(t *testing.T) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r := call(t, exec, tt.secret, "GET", tt.target, "", nil)
				if r.status != tt.wantStatus || !strings.Contains(r.body, tt.wantBody) {
					t.Errorf("got %d %q, want %d containing %q", r.status, r.body, tt.wantStatus, tt.wantBody)
				}
			})
		}
	})

	t.Run("control listener", func(t *testing.T) {
		r := callAt(t, exec.ControlEndpoint(), protocol.ControlHeader, "c0ntrol-py-exec", "GET", protocol.HealthPath, "", nil)
		if r.status != http.StatusOK || !strings.Contains(r.body, "ready") {
			t.Errorf("health on the control endpoint: got %d %q, want 200 ready", r.status, r.body)
		}
		for _, c := range []struct{ name, header, secret string }{
			{"the data secret", protocol.ControlHeader, secret},
			{"the data header", protocol.SecretHeader, "c0ntrol-py-exec"},
		} {
			if r := callAt(t, exec.ControlEndpoint(), c.header, c.secret, "GET", protocol.HealthPath, "", nil); r.status != http.StatusForbidden {
				t.Errorf("control endpoint with %s: got %d %q, want 403", c.name, r.status, r.body)
			}
		}
		if r := call(t, exec, secret, "GET", protocol.HealthPath, "", nil); r.status != http.StatusOK || !strings.Contains(r.body, "path=/health") {
			t.Errorf("/health on the data endpoint: got %d %q, want the function's answer", r.status, r.body)
		}
	})

	t.Run("qemu runs deprivileged", func(t *testing.T) {
		pids := vmtest.ProcessesWith(filepath.Dir(exec.ConsoleLog()))
		if len(pids) != 1 {
			t.Fatalf("processes of the vm: got %v, want one QEMU", pids)
		}
		uid, gid, groups, seccomp := vmtest.ProcessCredentials(t, pids[0])
		wantGroups := 0
		if accel, _ := h.engine.Accel(); accel == qemu.AccelKVM {
			wantGroups = len(groups) // under KVM: none, or the device's group
		}
		if uid < qemu.DefaultUIDBase || uid >= qemu.DefaultUIDBase+qemu.DefaultUIDCount || gid != uid || len(groups) != wantGroups || len(groups) > 1 {
			t.Errorf("QEMU's credentials: got uid %d gid %d groups %v, want a VM uid from %d, the same gid, no groups (under KVM at most the device's)", uid, gid, groups, qemu.DefaultUIDBase)
		}
		if seccomp != 2 {
			t.Errorf("QEMU's seccomp mode: got %d, want 2 (filter: -sandbox on)", seccomp)
		}
		seen := map[int]bool{uid: true}
		for _, m := range machines[1:] {
			ps := vmtest.ProcessesWith(filepath.Dir(m.ConsoleLog()))
			if len(ps) != 1 {
				t.Fatalf("processes of vm %s: got %v, want one", m.ID(), ps)
			}
			u, _, _, _ := vmtest.ProcessCredentials(t, ps[0])
			if seen[u] {
				t.Errorf("two running VMs share uid %d", u)
			}
			seen[u] = true
		}
	})

	t.Run("isolation", func(t *testing.T) {
		// A loopback service on the host and another VM's forwarded agent
		// port: neither may be reachable from inside a guest.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		accepted := make(chan struct{}, 1)
		go func() {
			if c, err := ln.Accept(); err == nil {
				accepted <- struct{}{}
				c.Close()
			}
		}()
		_, hostPort, _ := net.SplitHostPort(ln.Addr().String())
		_, otherPort, _ := net.SplitHostPort(machines[1].Endpoint())
		_, otherControl, _ := net.SplitHostPort(machines[1].ControlEndpoint())
		_, ownControl, _ := net.SplitHostPort(exec.ControlEndpoint())
		r := call(t, exec, secret, "GET", "/?probe="+hostPort+","+otherPort+","+otherControl+","+ownControl, "", nil)
		if r.status != http.StatusOK {
			t.Fatalf("probe: got %d %q", r.status, r.body)
		}
		for _, port := range []string{hostPort, otherPort, otherControl, ownControl} {
			if !strings.Contains(r.body, port+":closed") {
				t.Errorf("port %s reachable from the guest: %q", port, r.body)
			}
		}
		select {
		case <-accepted:
			t.Errorf("the host's loopback listener accepted a connection from the guest")
		default:
		}
	})

	t.Run("stop leaves nothing", func(t *testing.T) {
		m := machines[3]
		vmDir := filepath.Dir(m.ConsoleLog())
		if pids := vmtest.ProcessesWith(vmDir); len(pids) == 0 {
			t.Fatalf("no process found for the running vm in %s", vmDir)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := m.Stop(ctx); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		if pids := vmtest.ProcessesWith(vmDir); len(pids) != 0 {
			t.Errorf("processes left after Stop: %v", pids)
		}
		if _, err := os.Stat(vmDir); !os.IsNotExist(err) {
			t.Errorf("vm dir %s still there after Stop (err %v)", vmDir, err)
		}
		if err := m.Stop(ctx); err != nil {
			t.Errorf("second Stop: got %v, want nil", err)
		}
	})
}

// BenchmarkBoot measures boot-to-ready (the agent answers its health check)
// of a bash exec VM, and reports the median and the idle qemu RSS.
func BenchmarkBoot(b *testing.B) {
	h := newHarness(b)
	s := h.spec(b, cases[3], false)
	var boots []time.Duration
	var rss []int
	for b.Loop() {
		s.VM = vm.NewVM("bench")
		s.VM.Spec.Memory = meta.NewSizeFromBytes(256 << 20)
		start := time.Now()
		m, err := h.engine.Start(context.Background(), s)
		if err != nil {
			b.Fatal(err)
		}
		boots = append(boots, time.Since(start))
		for _, pid := range vmtest.ProcessesWith(filepath.Dir(m.ConsoleLog())) {
			if kib := vmtest.RSSKiB(pid); kib > 0 {
				rss = append(rss, kib)
			}
		}
		if err := m.Stop(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(median(boots).Milliseconds()), "ms-boot-median")
	if len(rss) > 0 {
		sort.Ints(rss)
		b.ReportMetric(float64(rss[len(rss)/2])/1024, "MiB-idle-rss")
	}
}

// BenchmarkWarm measures one warm request, exec mode vs http mode.
func BenchmarkWarm(b *testing.B) {
	h := newHarness(b)
	for _, fc := range []fnCase{cases[0], cases[1]} {
		m := h.start(b, h.spec(b, fc, false))
		client := &http.Client{}
		b.Run(fc.name, func(b *testing.B) {
			var lat []time.Duration
			for b.Loop() {
				req, _ := http.NewRequest("GET", "http://"+m.Endpoint()+"/warm?x=1", nil)
				req.Header.Set(protocol.SecretHeader, "s3cret-"+fc.name)
				start := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode >= 300 {
					b.Fatalf("status %d", resp.StatusCode)
				}
				lat = append(lat, time.Since(start))
			}
			b.ReportMetric(float64(median(lat).Microseconds())/1000, "ms-median")
		})
	}
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}
