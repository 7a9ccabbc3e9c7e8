package ignite

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	api "github.com/weaveworks/ignite/pkg/apis/ignite"
	"github.com/weaveworks/ignite/pkg/apis/ignite/scheme"
	meta "github.com/weaveworks/ignite/pkg/apis/meta/v1alpha1"
	"github.com/weaveworks/libgitops/pkg/runtime"

	"github.com/faasvm/appliance/guest/protocol"
	"github.com/faasvm/appliance/internal/vm"
	"github.com/faasvm/appliance/internal/vmtest"
)

// fakeAgent is the guest agent as the engine sees it: health and poweroff
// on a loopback port. A poweroff tells the stand-in the VM stopped.
type fakeAgent struct {
	srv       *httptest.Server
	health    int // status the health check answers
	mu        sync.Mutex
	secrets   []string // X-Faas-Control of every request
	poweroffs int
}

func newFakeAgent(t *testing.T, si *standIn) *fakeAgent {
	t.Helper()
	a := &fakeAgent{health: http.StatusOK}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.secrets = append(a.secrets, r.Header.Get(protocol.ControlHeader))
		switch {
		case r.Method == http.MethodGet && r.URL.Path == protocol.HealthPath:
			w.WriteHeader(a.health)
		case r.Method == http.MethodPost && r.URL.Path == protocol.PoweroffPath:
			a.poweroffs++
			si.setFile(t, "running", "false\n")
			w.WriteHeader(http.StatusAccepted)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *fakeAgent) port(t *testing.T) int {
	t.Helper()
	_, p, err := net.SplitHostPort(a.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (a *fakeAgent) counts() (requests, poweroffs int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.secrets), a.poweroffs
}

// testEnv is an engine driving the stand-in, a fake agent, and a spec.
type testEnv struct {
	e     *Engine
	si    *standIn
	agent *fakeAgent
	spec  *vm.Spec
	uid   string // Ignite UID of spec's VM
	logs  *vmtest.LogBuffer
	cfg   Config
}

func newTestEnv(t *testing.T, change func(*Config)) *testEnv {
	t.Helper()
	si := newStandIn(t)
	dir := t.TempDir()
	agentBin := filepath.Join(dir, "agent-binary")
	if err := os.WriteFile(agentBin, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	agentLink := filepath.Join(dir, "agent")
	if err := os.Symlink(agentBin, agentLink); err != nil {
		t.Fatal(err)
	}
	code := filepath.Join(dir, "code.ext4")
	if err := os.WriteFile(code, []byte("ext4"), 0o444); err != nil {
		t.Fatal(err)
	}
	logs := &vmtest.LogBuffer{}
	cfg := Config{
		AgentPath:      agentLink,
		StateDir:       filepath.Join(dir, "state"),
		BootTimeout:    10 * time.Second,
		StopTimeout:    3 * time.Second,
		CommandTimeout: 10 * time.Second,
		StatusInterval: 30 * time.Millisecond,
		LogInterval:    60 * time.Millisecond,
		Logger:         vmtest.NewLogger(logs),
	}
	if change != nil {
		change(&cfg)
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	agent := newFakeAgent(t, si)
	e.agentPort = agent.port(t) + 1 // where nothing answers: the engine must use only the control port
	e.controlPort = agent.port(t)
	e.now = func() time.Time { return goldenCreated }

	v := vm.NewVM("hello")
	v.Spec.Memory = meta.NewSizeFromBytes(256 << 20)
	v.Spec.Image.OCI, _ = meta.NewOCIImageRef("faasvm/runtime-python3:latest")
	spec := &vm.Spec{
		VM:   v,
		Code: code,
		Agent: protocol.Config{
			Name: "hello", Secret: "s3cret", ControlSecret: "c0ntrol", Mode: protocol.ModeExec, Command: []string{"cat"},
			Timeout: protocol.Duration(time.Second),
			Network: protocol.Network{Address: protocol.GuestAddress, Gateway: protocol.GuestGateway},
		},
	}
	env := &testEnv{e: e, si: si, agent: agent, spec: spec, uid: IgniteUID(string(v.UID)), logs: logs, cfg: cfg}
	// A VM that boots and runs, unless a test says otherwise.
	si.setFile(t, "running", "true\n")
	si.answer(t, "ignite run", answer{Stdout: `time="2026-11-25T21:18:27Z" level=info msg="Created VM with ID \"x\""`})
	si.answer(t, "ignite inspect", answer{Stdout: inspectJSON(t, env.uid, "127.0.0.1", "c0ffee")})
	si.answer(t, "ignite ps", answer{StdoutFile: "running"})
	si.answer(t, "ignite logs", answer{Stdout: "[    0.000000] Linux version 5.10.51\nagent serving\n"})
	si.answer(t, "ignite rm", answer{Stdout: `level=info msg="Removed VM"`})
	si.answer(t, "docker logs", answer{Stdout: "[    0.000000] Linux version 5.10.51\nlast words\n"})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("engine log:\n%s", logs)
		}
	})
	return env
}

// inspectJSON is what `ignite inspect vm UID -o json` prints for a running
// VM: Ignite's own JSON encoding of its VM object.
func inspectJSON(t *testing.T, uid, ip, containerID string) string {
	t.Helper()
	v := vm.NewVM("hello-" + uid)
	v.UID = runtime.UID(uid)
	v.Spec.Image.OCI, _ = meta.NewOCIImageRef("faasvm/runtime-python3-ignite:latest")
	v.Status.Running = true
	v.Status.Runtime = &api.Runtime{ID: containerID, Name: "docker"}
	v.Status.Network = &api.Network{Plugin: "cni", IPAddresses: meta.IPAddresses{net.ParseIP(ip)}}
	b, err := scheme.Serializer.EncodeJSON(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestStartAndStop(t *testing.T) {
	env := newTestEnv(t, func(c *Config) { c.KeepLogsDir = filepath.Join(t.TempDir(), "kept") })
	ctx := t.Context()
	m, err := env.e.Start(ctx, env.spec)
	if err != nil {
		t.Fatal(err)
	}

	// The boot: run, then inspect, then the agent's health check.
	keys := env.si.keys(t)
	if len(keys) < 2 || keys[0] != "ignite run" || keys[1] != "ignite inspect" {
		t.Fatalf("got calls %q, want ignite run then ignite inspect first", keys)
	}
	vmDir := filepath.Join(env.cfg.StateDir, "ignite", env.uid)
	configPath := filepath.Join(vmDir, "vm.yaml")
	run := env.si.callsOf(t, "ignite run")[0]
	wantRun := append([]string{"ignite"}, "run", "--config", configPath, "--name", "hello-"+env.uid,
		"--runtime", "docker", "--network-plugin", "cni", "--debug")
	if !slices.Equal(run.Argv, wantRun) {
		t.Errorf("ignite run argv:\ngot  %q\nwant %q", run.Argv, wantRun)
	}
	if run.Stdin != "" {
		t.Errorf("ignite run got stdin %q, want none", run.Stdin)
	}
	inspect := env.si.callsOf(t, "ignite inspect")[0]
	if want := []string{"ignite", "inspect", "vm", env.uid, "--output", "json", "--log-level", "error"}; !slices.Equal(inspect.Argv, want) {
		t.Errorf("ignite inspect argv:\ngot  %q\nwant %q", inspect.Argv, want)
	}

	// What ignite run was handed: a config Ignite decodes, whose copyFiles
	// bring in the agent (the real file, not the symlink), its config and
	// the code image.
	v, err := decodeVMConfig([]byte(run.Config))
	if err != nil {
		t.Fatalf("ignite run got a config Ignite cannot decode: %v\n%s", err, run.Config)
	}
	agentReal, _ := filepath.EvalSymlinks(env.cfg.AgentPath)
	wantFiles := []api.FileMapping{
		{HostPath: agentReal, VMPath: GuestAgentPath},
		{HostPath: filepath.Join(vmDir, "agent.json"), VMPath: GuestConfigPath},
		{HostPath: env.spec.Code, VMPath: GuestCodeImage},
	}
	if !slices.Equal(v.Spec.CopyFiles, wantFiles) {
		t.Errorf("copyFiles: got %+v, want %+v", v.Spec.CopyFiles, wantFiles)
	}
	if got, want := v.Spec.Image.OCI.String(), "faasvm/runtime-python3-ignite:latest"; got != want {
		t.Errorf("image: got %q, want %q", got, want)
	}
	if got, want := v.Spec.Memory.Bytes(), uint64(256<<20); got != want {
		t.Errorf("memory: got %d, want %d", got, want)
	}
	if v.Spec.SSH != nil {
		t.Errorf("ssh: got %+v, want none", v.Spec.SSH)
	}
	var agentCfg protocol.Config
	b, err := os.ReadFile(filepath.Join(vmDir, "agent.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &agentCfg); err != nil {
		t.Fatal(err)
	}
	if agentCfg.Secret != "s3cret" || agentCfg.ControlSecret != "c0ntrol" || agentCfg.Network != (protocol.Network{}) {
		t.Errorf("agent config: got secrets %q %q network %+v, want the spec's secrets and no network", agentCfg.Secret, agentCfg.ControlSecret, agentCfg.Network)
	}
	if fi, err := os.Stat(filepath.Join(vmDir, "agent.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("agent config mode: got %v (%v), want 0600: it holds the secret", fi.Mode(), err)
	}

	// The machine.
	if got, want := m.ID(), string(env.spec.VM.UID); got != want {
		t.Errorf("ID: got %q, want %q", got, want)
	}
	if got, want := m.Endpoint(), net.JoinHostPort("127.0.0.1", strconv.Itoa(env.agent.port(t)+1)); got != want {
		t.Errorf("Endpoint: got %q, want %q", got, want)
	}
	if got, want := m.ControlEndpoint(), net.JoinHostPort("127.0.0.1", strconv.Itoa(env.agent.port(t))); got != want {
		t.Errorf("ControlEndpoint: got %q, want %q", got, want)
	}
	if reqs, _ := env.agent.counts(); reqs == 0 {
		t.Error("the agent's health check was never called")
	}
	for _, s := range env.agent.secrets {
		if s != "c0ntrol" {
			t.Errorf("a request to the agent carried control secret %q, want c0ntrol", s)
		}
	}
	waitFor(t, "the console log", func() bool {
		b, _ := os.ReadFile(m.ConsoleLog())
		return strings.Contains(string(b), "agent serving")
	})
	if err := m.Wait(shortCtx(t, 100*time.Millisecond)); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait on a running VM: got %v, want the context's deadline", err)
	}

	// Stop: poweroff through the agent, ignite sees it stopped, rm.
	if err := m.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, poweroffs := env.agent.counts(); poweroffs != 1 {
		t.Errorf("poweroff requests: got %d, want 1", poweroffs)
	}
	calls := env.si.calls(t)
	last := calls[len(calls)-1]
	if want := []string{"ignite", "rm", "--force", env.uid}; !slices.Equal(last.Argv, want) {
		t.Errorf("last call: got %q, want %q", last.Argv, want)
	}
	for _, c := range env.si.callsOf(t, "ignite ps") {
		want := []string{"ignite", "ps", "--all", "--filter", "{{.ObjectMeta.UID}}=" + env.uid, "--template", "{{.Status.Running}}",
			"--log-level", "error"}
		if !slices.Equal(c.Argv, want) {
			t.Fatalf("ignite ps argv: got %q, want %q", c.Argv, want)
		}
	}
	if _, err := os.Stat(vmDir); !os.IsNotExist(err) {
		t.Errorf("vm dir after Stop: got %v, want it removed", err)
	}
	kept, err := os.ReadFile(filepath.Join(env.cfg.KeepLogsDir, "hello-"+m.ID()+".console.log"))
	if err != nil || !strings.Contains(string(kept), "agent serving") {
		t.Errorf("kept console log: got %q, %v; want the console", kept, err)
	}
	if !strings.Contains(env.logs.String(), "how=poweroff") {
		t.Errorf("engine log does not say the VM powered off:\n%s", env.logs)
	}
	if err := m.Wait(ctx); !errors.Is(err, vm.ErrExited) {
		t.Errorf("Wait after Stop: got %v, want vm.ErrExited", err)
	}
	n := len(env.si.calls(t))
	if err := m.Stop(ctx); err != nil {
		t.Errorf("second Stop: got %v, want nil", err)
	}
	if got := len(env.si.calls(t)); got != n {
		t.Errorf("second Stop ran %d more commands, want none", got-n)
	}
}

func TestStartFailures(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(t *testing.T, env *testEnv)
		config   func(*Config)
		want     []string // substrings of the error
		wantIs   error
		wantRm   bool // the VM is removed on the way out
		maxTaken time.Duration
	}{
		{
			name: "run exits non-zero",
			setup: func(t *testing.T, env *testEnv) {
				env.si.answer(t, "ignite run", answer{Exit: 1,
					Stdout: `time="..." level=fatal msg="docker image \"faasvm/runtime-python3-ignite:latest\" not found"`})
				env.si.answer(t, "ignite logs", answer{Exit: 1, Stdout: `level=fatal msg="can't find VM"`})
			},
			want:   []string{"starting vm hello", "step run", "ignite run: exit status 1", `not found`, "console not available"},
			wantRm: true,
		},
		{
			name: "run hangs past the boot timeout",
			setup: func(t *testing.T, env *testEnv) {
				env.si.answer(t, "ignite run", answer{Hang: true})
			},
			config:   func(c *Config) { c.BootTimeout = 300 * time.Millisecond },
			want:     []string{"step run", "ignite run: killed after context deadline exceeded"},
			wantIs:   context.DeadlineExceeded,
			wantRm:   true,
			maxTaken: 5 * time.Second,
		},
		{
			name: "inspect hangs past the command timeout",
			setup: func(t *testing.T, env *testEnv) {
				env.si.answer(t, "ignite inspect", answer{Hang: true})
			},
			config:   func(c *Config) { c.CommandTimeout = 300 * time.Millisecond },
			want:     []string{"step endpoint", "ignite inspect: killed after context deadline exceeded"},
			wantIs:   context.DeadlineExceeded,
			wantRm:   true,
			maxTaken: 5 * time.Second,
		},
		{
			name: "inspect prints something else",
			setup: func(t *testing.T, env *testEnv) {
				env.si.answer(t, "ignite inspect", answer{Stdout: "VM ID  IMAGE  KERNEL\n"})
			},
			want:   []string{"step endpoint", "parsing ignite inspect output"},
			wantRm: true,
		},
		{
			name: "inspect prints nothing",
			setup: func(t *testing.T, env *testEnv) {
				env.si.answer(t, "ignite inspect", answer{})
			},
			want:   []string{"step endpoint", "ignite inspect printed nothing"},
			wantRm: true,
		},
		{
			name: "inspect shows no address",
			setup: func(t *testing.T, env *testEnv) {
				env.si.answer(t, "ignite inspect", answer{Stdout: inspectJSON(t, env.uid, "::1", "c0ffee")})
			},
			want:   []string{"step endpoint", "no IPv4 address"},
			wantRm: true,
		},
		{
			name: "inspect answers for another vm",
			setup: func(t *testing.T, env *testEnv) {
				env.si.answer(t, "ignite inspect", answer{Stdout: inspectJSON(t, "ffffffffffffffff", "127.0.0.1", "c")})
			},
			want:   []string{"step endpoint", `answered for vm "ffffffffffffffff"`},
			wantRm: true,
		},
		{
			name: "agent refuses the secret",
			setup: func(t *testing.T, env *testEnv) {
				env.agent.health = http.StatusForbidden
			},
			want:   []string{"step agent ready", "refused the secret (403)", "console: [    0.000000] Linux version"},
			wantRm: true,
		},
		{
			name: "vm stops before the agent is ready",
			setup: func(t *testing.T, env *testEnv) {
				env.agent.health = http.StatusServiceUnavailable
				env.si.setFile(t, "running", "false\n")
				env.si.answer(t, "ignite logs", answer{Exit: 1, Stdout: `level=fatal msg="VM \"x\" is not running"`})
			},
			want:     []string{"step agent ready", "vm is stopped before its agent answered", "health check answered 503", "last words"},
			wantRm:   true,
			maxTaken: 5 * time.Second,
		},
		{
			name: "agent never healthy",
			setup: func(t *testing.T, env *testEnv) {
				env.agent.health = http.StatusServiceUnavailable
			},
			config: func(c *Config) { c.BootTimeout = 1500 * time.Millisecond },
			want:   []string{"step agent ready", "not healthy: context deadline exceeded", "health check answered 503", "agent serving"},
			wantIs: context.DeadlineExceeded,
			wantRm: true,
		},
		{
			name: "removal fails while undoing",
			setup: func(t *testing.T, env *testEnv) {
				env.si.answer(t, "ignite run", answer{Exit: 1, Stdout: "run failed"})
				env.si.answer(t, "ignite rm", answer{Exit: 1, Stdout: `level=fatal msg="device or resource busy"`})
			},
			want:   []string{"step run", "run failed", "undoing earlier steps", "ignite rm: exit status 1", "device or resource busy"},
			wantRm: true,
		},
		{
			name: "removal of a vm ignite never created",
			setup: func(t *testing.T, env *testEnv) {
				env.si.answer(t, "ignite run", answer{Exit: 1, Stdout: "invalid config"})
				env.si.answer(t, "ignite rm", answer{Exit: 1, Stdout: `level=fatal msg="can't find VM: no ID/name matches for \"x\""`})
			},
			want:   []string{"step run", "invalid config"},
			wantRm: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newTestEnv(t, tt.config)
			tt.setup(t, env)
			begin := time.Now()
			m, err := env.e.Start(t.Context(), env.spec)
			taken := time.Since(begin)
			if err == nil {
				m.Stop(t.Context())
				t.Fatal("Start succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not mention %q", err, w)
				}
			}
			if tt.name == "removal of a vm ignite never created" && strings.Contains(err.Error(), "undoing") {
				t.Errorf("error %q: removing a VM Ignite does not know counts as done", err)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %q does not wrap %v", err, tt.wantIs)
			}
			if tt.maxTaken > 0 && taken > tt.maxTaken {
				t.Errorf("Start took %s, want under %s", taken, tt.maxTaken)
			}
			rms := env.si.callsOf(t, "ignite rm")
			if tt.wantRm && (len(rms) != 1 || !slices.Equal(rms[0].Argv, []string{"ignite", "rm", "--force", env.uid})) {
				t.Errorf("got rm calls %+v, want one ignite rm --force %s", rms, env.uid)
			}
			if _, err := os.Stat(filepath.Join(env.cfg.StateDir, "ignite", env.uid)); !os.IsNotExist(err) {
				t.Errorf("vm dir after a failed Start: got %v, want it removed", err)
			}
		})
	}
}

func TestStartRefusesBadSpecs(t *testing.T) {
	tests := []struct {
		name   string
		change func(*vm.Spec)
		want   string
	}{
		{"no code image", func(s *vm.Spec) { s.Code = "" }, "no code image"},
		{"missing code image", func(s *vm.Spec) { s.Code = "/nonexistent/code.ext4" }, "code image"},
		{"no secret", func(s *vm.Spec) { s.Agent.Secret = "" }, "secret is empty"},
		{"too little memory", func(s *vm.Spec) { s.VM.Spec.Memory = meta.NewSizeFromBytes(16 << 20) }, "below the 64MB"},
		{"no runtime image", func(s *vm.Spec) { s.VM.Spec.Image.OCI = meta.OCIImageRef{} }, "no runtime image"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newTestEnv(t, nil)
			tt.change(env.spec)
			_, err := env.e.Start(t.Context(), env.spec)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "step assets") {
				t.Errorf("got %v, want a step assets error mentioning %q", err, tt.want)
			}
			if keys := env.si.keys(t); len(keys) != 0 {
				t.Errorf("got calls %q, want none", keys)
			}
		})
	}
}

func TestWaitSeesVMStop(t *testing.T) {
	env := newTestEnv(t, nil)
	m, err := env.e.Start(t.Context(), env.spec)
	if err != nil {
		t.Fatal(err)
	}
	// The guest dies: ignite ps reports it stopped, and ignite logs
	// refuses a stopped VM, so the kept container is read with docker.
	env.si.answer(t, "ignite logs", answer{Exit: 1, Stdout: `level=fatal msg="VM \"x\" is not running"`})
	env.si.setFile(t, "running", "false\n")
	err = m.Wait(shortCtx(t, 10*time.Second))
	if !errors.Is(err, vm.ErrExited) {
		t.Fatalf("Wait: got %v, want vm.ErrExited", err)
	}
	for _, w := range []string{"ignite reports the vm stopped", "last words"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("Wait error %q does not mention %q", err, w)
		}
	}
	dl := env.si.callsOf(t, "docker logs")
	if len(dl) == 0 || !slices.Equal(dl[len(dl)-1].Argv, []string{"docker", "logs", "c0ffee"}) {
		t.Errorf("got docker logs calls %+v, want docker logs c0ffee", dl)
	}
	if b, _ := os.ReadFile(m.ConsoleLog()); !strings.Contains(string(b), "last words") {
		t.Errorf("console log: got %q, want the container's last output", b)
	}
	if err := m.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, poweroffs := env.agent.counts(); poweroffs != 0 {
		t.Errorf("poweroff requests to a stopped VM: got %d, want 0", poweroffs)
	}
	if rms := env.si.callsOf(t, "ignite rm"); len(rms) != 1 {
		t.Errorf("got %d ignite rm calls, want 1", len(rms))
	}
}

func TestWaitSeesVMGone(t *testing.T) {
	env := newTestEnv(t, nil)
	m, err := env.e.Start(t.Context(), env.spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Stop(context.Background()) })
	env.si.setFile(t, "running", "") // ignite ps lists nothing: removed behind our back
	err = m.Wait(shortCtx(t, 10*time.Second))
	if !errors.Is(err, vm.ErrExited) || !strings.Contains(err.Error(), "ignite reports the vm gone") {
		t.Errorf("Wait: got %v, want vm.ErrExited saying the vm is gone", err)
	}
}

func TestStopWithoutAgent(t *testing.T) {
	env := newTestEnv(t, func(c *Config) { c.StopTimeout = 30 * time.Second })
	m, err := env.e.Start(t.Context(), env.spec)
	if err != nil {
		t.Fatal(err)
	}
	env.agent.srv.Close() // nothing listens: no poweroff, straight to rm -f
	begin := time.Now()
	if err := m.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if taken := time.Since(begin); taken > env.cfg.StopTimeout {
		t.Errorf("Stop took %s; with no agent it should not wait the stop timeout (%s)", taken, env.cfg.StopTimeout)
	}
	if rms := env.si.callsOf(t, "ignite rm"); len(rms) != 1 {
		t.Errorf("got %d ignite rm calls, want 1", len(rms))
	}
	if !strings.Contains(env.logs.String(), "how=kill") {
		t.Errorf("engine log does not say the VM was killed:\n%s", env.logs)
	}
}

func TestStopRemoveFails(t *testing.T) {
	env := newTestEnv(t, nil)
	m, err := env.e.Start(t.Context(), env.spec)
	if err != nil {
		t.Fatal(err)
	}
	env.si.answer(t, "ignite rm", answer{Exit: 1, Stdout: `level=fatal msg="failed to remove container: device busy"`})
	err = m.Stop(t.Context())
	for _, w := range []string{"stopping vm hello-" + env.uid, "ignite rm: exit status 1", "device busy"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Stop: got %v, want an error mentioning %q", err, w)
		}
	}
	if _, err := os.Stat(filepath.Join(env.cfg.StateDir, "ignite", env.uid)); err != nil {
		t.Errorf("vm dir of a VM that may still exist: got %v, want it kept", err)
	}
	if again := m.Stop(t.Context()); again == nil || again.Error() != err.Error() {
		t.Errorf("second Stop: got %v, want the first result", again)
	}
}

func TestCleanup(t *testing.T) {
	env := newTestEnv(t, nil)
	own := env.e.owner
	env.si.answer(t, "ignite ps", answer{Stdout: strings.Join([]string{
		"aaaaaaaaaaaaaaaa " + own,
		"bbbbbbbbbbbbbbbb someoneelse",
		"cccccccccccccccc ",
		"dddddddddddddddd " + own,
		"",
		`time="2026-11-25T21:18:27Z" level=warning msg="The symbol * on the VM status indicates that the VM manifest on disk may not be up-to-date"`,
	}, "\n")})
	env.si.answer(t, "ignite rm",
		answer{},
		answer{Exit: 1, Stdout: `level=fatal msg="can't find VM: no ID/name matches for \"dddddddddddddddd\""`})
	stale := filepath.Join(env.cfg.StateDir, "ignite", "aaaaaaaaaaaaaaaa")
	if err := os.MkdirAll(stale, 0o700); err != nil {
		t.Fatal(err)
	}
	removed, err := env.e.Cleanup(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"aaaaaaaaaaaaaaaa", "dddddddddddddddd"}; !slices.Equal(removed, want) {
		t.Errorf("removed: got %q, want %q", removed, want)
	}
	var rmArgv [][]string
	for _, c := range env.si.callsOf(t, "ignite rm") {
		rmArgv = append(rmArgv, c.Argv)
	}
	want := [][]string{{"ignite", "rm", "--force", "aaaaaaaaaaaaaaaa"}, {"ignite", "rm", "--force", "dddddddddddddddd"}}
	if !slices.EqualFunc(rmArgv, want, slices.Equal) {
		t.Errorf("rm calls: got %q, want %q", rmArgv, want)
	}
	list := env.si.callsOf(t, "ignite ps")[0]
	if w := append([]string{"ignite"}, listArgs()...); !slices.Equal(list.Argv, w) {
		t.Errorf("list argv: got %q, want %q", list.Argv, w)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale vm dir: got %v, want it removed", err)
	}
}

func TestCleanupListFails(t *testing.T) {
	env := newTestEnv(t, nil)
	env.si.answer(t, "ignite ps", answer{Exit: 1, Stdout: `level=fatal msg="This program needs to run as root"`})
	_, err := env.e.Cleanup(t.Context())
	if err == nil || !strings.Contains(err.Error(), "needs to run as root") {
		t.Errorf("got %v, want the ps failure with its stderr", err)
	}
}

func TestNew(t *testing.T) {
	si := newStandIn(t)
	dir := t.TempDir()
	agent := filepath.Join(dir, "agent")
	if err := os.WriteFile(agent, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	notExec := filepath.Join(dir, "not-exec")
	if err := os.WriteFile(notExec, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	tests := []struct {
		name string
		cfg  Config
		want string // "" for success
	}{
		{"ignite found on PATH", Config{AgentPath: agent, StateDir: state}, ""},
		{"no ignite", Config{IgnitePath: "no-such-ignite", AgentPath: agent, StateDir: state}, "ignite binary"},
		{"no agent", Config{AgentPath: filepath.Join(dir, "none"), StateDir: state}, "agent binary"},
		{"agent not executable", Config{AgentPath: notExec, StateDir: state}, "not an executable"},
		{"relative state dir", Config{AgentPath: agent, StateDir: "state"}, "not an absolute path"},
		{"no agent path", Config{StateDir: state}, "agent path is empty"},
		{"bad runtime", Config{AgentPath: agent, StateDir: state, Runtime: "podman"}, `runtime "podman"`},
		{"bad network", Config{AgentPath: agent, StateDir: state, NetworkPlugin: "flannel"}, `network plugin "flannel"`},
		{"docker-bridge with containerd", Config{AgentPath: agent, StateDir: state, Runtime: RuntimeContainerd,
			NetworkPlugin: NetworkDockerBridge}, "needs runtime"},
		{"negative timeout", Config{AgentPath: agent, StateDir: state, StopTimeout: -time.Second}, "negative"},
		{"relative keep-logs dir", Config{AgentPath: agent, StateDir: state, KeepLogsDir: "logs"}, "keep-logs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Logger = slog.New(slog.DiscardHandler)
			e, err := New(tt.cfg)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if want := filepath.Join(si.bin, "ignite"); e.ignite != want {
					t.Errorf("ignite path: got %q, want %q", e.ignite, want)
				}
				if e.Name() != "ignite" {
					t.Errorf("Name: got %q, want ignite", e.Name())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

// shortCtx is a context that ends after d or with the test.
func shortCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond until it holds or 10s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
