package qemu

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	meta "github.com/weaveworks/ignite/pkg/apis/meta/v1alpha1"

	"github.com/faasvm/appliance/guest/protocol"
	"github.com/faasvm/appliance/internal/vm"
	"github.com/faasvm/appliance/internal/vmtest"
)

// shortTempDir is a temp dir with a short path (t.TempDir's long names
// would leave too little room for the VM sockets), removed after the test.
func shortTempDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "qe")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// writeFile writes content to dir/name with the given mode and returns the path.
func writeFile(t *testing.T, dir, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// testSpec returns a valid spec whose asset files are placeholders in dir.
func testSpec(t *testing.T, dir string) *vm.Spec {
	t.Helper()
	v := vm.NewVM("hello")
	v.Spec.CPUs = 1
	v.Spec.Memory = meta.NewSizeFromBytes(256 << 20)
	return &vm.Spec{
		VM:     v,
		Kernel: writeFile(t, dir, "vmlinux", "k", 0o644),
		Initrd: writeFile(t, dir, "initrd", "i", 0o644),
		RootFS: writeFile(t, dir, "root.ext4", "r", 0o644),
		Code:   writeFile(t, dir, "code.ext4", "c", 0o644),
		Agent: protocol.Config{
			Name: "hello", Secret: "s3cret", ControlSecret: "c0ntrol", Mode: protocol.ModeExec, Command: []string{"cat"},
			Timeout: protocol.Duration(time.Second),
			Network: protocol.Network{Address: protocol.GuestAddress, Gateway: protocol.GuestGateway},
		},
	}
}

// testEngine builds an Engine on a short state dir with TCG and a logger
// writing into the returned buffer. QEMU runs as the test's own user
// unless cfg.UIDBase is set (the fake QEMUs live where VM users may not
// look).
func testEngine(t *testing.T, cfg Config) (*Engine, *vmtest.LogBuffer) {
	t.Helper()
	logs := &vmtest.LogBuffer{}
	if cfg.UIDBase == 0 {
		cfg.UIDBase = -1
	}
	if cfg.StateDir == "" {
		cfg.StateDir = shortTempDir(t)
	}
	if cfg.Accel == "" {
		cfg.Accel = AccelTCG
	}
	cfg.Logger = vmtest.NewLogger(logs)
	e, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.tscKHz = 2000000 // not the host's: the argv tests pin it
	return e, logs
}

// vmDirs lists the VM directories under the engine's state dir.
func vmDirs(t *testing.T, e *Engine) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(e.cfg.StateDir, "vms"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range ents {
		out = append(out, d.Name())
	}
	return out
}

// fakeAgent serves the agent's HTTP contract on two 127.0.0.1:0 servers,
// data and control, and points the fake QEMU's "info usernet" at them.
// poweroff handles POST /poweroff on the control server.
func fakeAgent(t *testing.T, health int, poweroff http.HandlerFunc) {
	t.Helper()
	data := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(protocol.SecretHeader) != "s3cret" {
			http.Error(w, `{"error":"bad secret"}`, http.StatusForbidden)
			return
		}
		w.Write([]byte("the function"))
	}))
	t.Cleanup(data.Close)
	control := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(protocol.ControlHeader) != "c0ntrol" {
			http.Error(w, `{"error":"bad secret"}`, http.StatusForbidden)
			return
		}
		switch {
		case r.Method == http.MethodGet && r.URL.Path == protocol.HealthPath:
			w.WriteHeader(health)
		case r.Method == http.MethodPost && r.URL.Path == protocol.PoweroffPath && poweroff != nil:
			poweroff(w, r)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(control.Close)
	_, port, _ := net.SplitHostPort(data.Listener.Addr().String())
	t.Setenv(envAgentPort, port)
	_, port, _ = net.SplitHostPort(control.Listener.Addr().String())
	t.Setenv(envControlPort, port)
}

// fakeFirewall is a Firewall that fails with err and counts its calls.
type fakeFirewall struct {
	err   error
	calls atomic.Int32
}

func (f *fakeFirewall) Ensure(context.Context) error {
	f.calls.Add(1)
	return f.err
}

// useFakeQEMU makes the engine run the test binary as its QEMU.
func useFakeQEMU(t *testing.T, cfg *Config) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg.QEMUPath = exe
	t.Setenv(envHelper, "qemu")
}

func TestStartFailsAtNamedStep(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(t *testing.T, cfg *Config, spec *vm.Spec)
		timeout  time.Duration
		wantStep string
		wantMsg  string
	}{
		{
			name:     "missing code disk",
			setup:    func(t *testing.T, cfg *Config, spec *vm.Spec) { spec.Code = "/nonexistent/code.ext4" },
			wantStep: "assets",
			wantMsg:  "code disk",
		},
		{
			name: "agent config too big for its disk",
			setup: func(t *testing.T, cfg *Config, spec *vm.Spec) {
				spec.Agent.Env = map[string]string{"BIG": strings.Repeat("x", protocol.ConfigDiskSize)}
			},
			wantStep: "config disk",
			wantMsg:  "more than the",
		},
		{
			name:     "egress without a firewall",
			setup:    func(t *testing.T, cfg *Config, spec *vm.Spec) { spec.Egress = true },
			wantStep: "network",
			wantMsg:  "egress needs the egress firewall",
		},
		{
			name: "egress when the firewall cannot be installed",
			setup: func(t *testing.T, cfg *Config, spec *vm.Spec) {
				spec.Egress = true
				cfg.UIDBase = DefaultUIDBase
				cfg.Firewall = &fakeFirewall{err: errors.New("nft: Operation not permitted")}
			},
			wantStep: "network",
			wantMsg:  "egress refused: the firewall that keeps guests off the appliance cannot be installed (the appliance needs NET_ADMIN and nft: compose.egress.yaml): nft: Operation not permitted",
		},
		{
			name: "egress when QEMU would run as the engine",
			setup: func(t *testing.T, cfg *Config, spec *vm.Spec) {
				spec.Egress = true
				cfg.Firewall = &fakeFirewall{}
			},
			wantStep: "network",
			wantMsg:  "egress needs QEMU to run as a VM user of its own",
		},
		{
			name: "a boot file QEMU's user could not read",
			setup: func(t *testing.T, cfg *Config, spec *vm.Spec) {
				cfg.UIDBase = DefaultUIDBase
				if err := os.Chmod(spec.Kernel, 0o600); err != nil {
					t.Fatal(err)
				}
			},
			wantStep: "files",
			wantMsg:  "is not readable by others (mode -rw-------): QEMU runs as uid 40000 and must read it (chmod o+r)",
		},
		{
			name: "qemu dies at once",
			setup: func(t *testing.T, cfg *Config, spec *vm.Spec) {
				useFakeQEMU(t, cfg)
				t.Setenv(envFail, "qemu-system-x86_64: -drive file=/r.ext4: Could not open '/r.ext4'")
			},
			wantStep: "endpoint",
			wantMsg:  "qemu exited (exit status 1): qemu-system-x86_64: -drive file=/r.ext4: Could not open",
		},
		{
			name: "agent never healthy",
			setup: func(t *testing.T, cfg *Config, spec *vm.Spec) {
				useFakeQEMU(t, cfg)
				fakeAgent(t, http.StatusServiceUnavailable, nil)
			},
			timeout:  time.Second,
			wantStep: "agent ready",
			wantMsg:  "context deadline exceeded (last: health check answered 503); console: fake kernel booting",
		},
		{
			name: "agent refuses the control secret",
			setup: func(t *testing.T, cfg *Config, spec *vm.Spec) {
				useFakeQEMU(t, cfg)
				fakeAgent(t, http.StatusOK, nil)
				spec.Agent.ControlSecret = "wrong"
			},
			wantStep: "agent ready",
			wantMsg:  "refused the secret (403)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{BootTimeout: tt.timeout}
			spec := testSpec(t, t.TempDir())
			tt.setup(t, &cfg, spec)
			e, _ := testEngine(t, cfg)
			m, err := e.Start(context.Background(), spec)
			if err == nil {
				m.Stop(context.Background())
				t.Fatalf("Start: got a machine, want an error in step %s", tt.wantStep)
			}
			wantPrefix := "starting vm hello: step " + tt.wantStep + ": "
			if !strings.HasPrefix(err.Error(), wantPrefix) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("Start: got error %q, want it to start with %q and contain %q", err, wantPrefix, tt.wantMsg)
			}
			if dirs := vmDirs(t, e); len(dirs) != 0 {
				t.Errorf("after a failed Start: got vm dirs %v, want none", dirs)
			}
		})
	}
}

// killQEMU ends the fake QEMU of the VM with the given dir (as a guest
// poweroff would), reading its pid file.
func killQEMU(t *testing.T, dir string) {
	pid, ok := readPidFile(filepath.Join(dir, qemuPidName))
	if !ok {
		t.Errorf("no qemu pid file in %s", dir)
		return
	}
	syscall.Kill(pid, syscall.SIGTERM)
}

func TestMachineLifecycle(t *testing.T) {
	tests := []struct {
		name        string
		quit        string // envQuit
		poweroffs   bool   // the agent's poweroff ends QEMU
		exitFirst   bool   // QEMU ends before Stop
		keepLogs    bool
		wantHow     string
		wantExitErr string
	}{
		{name: "agent powers off", poweroffs: true, wantHow: "poweroff", wantExitErr: "signal: terminated"},
		{name: "qmp quit", wantHow: "qmp quit", wantExitErr: "qemu exited (status 0)"},
		{name: "kill", quit: "error", wantHow: "kill", wantExitErr: "signal: killed"},
		{name: "exited by itself", exitFirst: true, wantHow: "already exited", wantExitErr: "signal: terminated"},
		{name: "console log kept", poweroffs: true, keepLogs: true, wantHow: "poweroff", wantExitErr: "signal: terminated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{StopTimeout: 300 * time.Millisecond}
			if tt.keepLogs {
				cfg.KeepLogsDir = filepath.Join(t.TempDir(), "kept")
			}
			useFakeQEMU(t, &cfg)
			t.Setenv(envQuit, tt.quit)
			var dir string
			fakeAgent(t, http.StatusOK, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusAccepted)
				if tt.poweroffs {
					killQEMU(t, dir)
				}
			})
			e, logs := testEngine(t, cfg)
			spec := testSpec(t, t.TempDir())
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			m, err := e.Start(ctx, spec)
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			dir = filepath.Dir(m.ConsoleLog())
			t.Cleanup(func() { m.Stop(context.Background()) })

			if got, want := m.ID(), string(spec.VM.UID); got != want {
				t.Errorf("ID: got %q, want %q", got, want)
			}
			if got, want := m.Endpoint(), "127.0.0.1:"+os.Getenv(envAgentPort); got != want {
				t.Errorf("Endpoint: got %q, want %q", got, want)
			}
			if got, want := m.ControlEndpoint(), "127.0.0.1:"+os.Getenv(envControlPort); got != want {
				t.Errorf("ControlEndpoint: got %q, want %q", got, want)
			}
			if got, want := m.ConsoleLog(), filepath.Join(e.cfg.StateDir, "vms", string(spec.VM.UID), consoleLogName); got != want {
				t.Errorf("ConsoleLog: got %q, want %q", got, want)
			}
			img, err := os.ReadFile(filepath.Join(dir, configDiskName))
			if err != nil {
				t.Fatalf("config disk: %v", err)
			}
			if c, err := protocol.DecodeDisk(img); err != nil || c.Secret != "s3cret" || c.ControlSecret != "c0ntrol" {
				t.Errorf("config disk: got %+v, %v; want the spec's agent config", c, err)
			}
			short, scancel := context.WithTimeout(ctx, 20*time.Millisecond)
			defer scancel()
			if err := m.Wait(short); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Wait on a running vm: got %v, want %v", err, context.DeadlineExceeded)
			}

			if tt.exitFirst {
				killQEMU(t, dir)
				if err := m.Wait(ctx); !errors.Is(err, vm.ErrExited) {
					t.Fatalf("Wait: got %v, want vm.ErrExited", err)
				}
			}
			if err := m.Stop(ctx); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			if !strings.Contains(logs.String(), "how=\""+tt.wantHow+"\"") && !strings.Contains(logs.String(), "how="+tt.wantHow+" ") {
				t.Errorf("Stop logs: got %s, want how=%s", logs.String(), tt.wantHow)
			}
			err = m.Wait(ctx)
			if !errors.Is(err, vm.ErrExited) || !strings.Contains(err.Error(), tt.wantExitErr) {
				t.Errorf("Wait after Stop: got %v, want vm.ErrExited and %q", err, tt.wantExitErr)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("vm dir after Stop: got %v, want it removed", err)
			}
			if err := m.Stop(ctx); err != nil {
				t.Errorf("second Stop: got %v, want the first result (nil)", err)
			}
			if tt.keepLogs {
				kept := filepath.Join(cfg.KeepLogsDir, "hello-"+string(spec.VM.UID)+".console.log")
				b, err := os.ReadFile(kept)
				if err != nil || !strings.Contains(string(b), "fake agent up") {
					t.Errorf("kept console log %s: got %q, %v; want the console's content", kept, b, err)
				}
			}
		})
	}
}

func TestDetectAccel(t *testing.T) {
	tests := []struct {
		name       string
		accel      string
		script     string // body of the fake QEMU shell script
		noKVM      bool
		wantAccel  string
		wantReason string
		wantErr    string
	}{
		{
			name:       "probe guest runs",
			accel:      AccelAuto,
			script:     "echo 'Linux version 6.1'\necho " + probeOKLine + "\nexit 0",
			wantAccel:  AccelKVM,
			wantReason: "a probe guest booted under KVM",
		},
		{
			name:       "kvm internal error",
			accel:      AccelAuto,
			script:     "echo 'KVM internal error. Suberror: 1' >&2\necho 'emulation failure' >&2\nexec sleep 60",
			wantAccel:  AccelTCG,
			wantReason: "KVM internal error",
		},
		{
			name:       "qemu refuses the cpu",
			accel:      AccelAuto,
			script:     "echo 'qemu-system-x86_64: error: failed to set MSR 0x10a to 0x0' >&2\nexit 1",
			wantAccel:  AccelTCG,
			wantReason: "exit status 1) before printing FAAS-PROBE-OK: qemu-system-x86_64: error: failed to set MSR 0x10a",
		},
		{
			name:       "silent guest",
			accel:      AccelAuto,
			script:     "exec sleep 60",
			wantAccel:  AccelTCG,
			wantReason: "no FAAS-PROBE-OK from the probe guest within 300ms",
		},
		{
			name:       "no kvm device",
			accel:      AccelAuto,
			script:     "echo " + probeOKLine,
			noKVM:      true,
			wantAccel:  AccelTCG,
			wantReason: "opening /nonexistent/kvm",
		},
		{
			name:    "kvm required but unusable",
			accel:   AccelKVM,
			script:  "echo 'KVM internal error. Suberror: 1' >&2\nexec sleep 60",
			wantErr: "accel kvm configured but kvm is unusable: the probe guest hit a KVM internal error",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			count := filepath.Join(dir, "runs")
			qemu := writeFile(t, dir, "qemu", "#!/bin/sh\necho run >> "+count+"\n"+tt.script+"\n", 0o755)
			e, logs := testEngine(t, Config{QEMUPath: qemu, ProbeTimeout: 300 * time.Millisecond})
			// As New would have left it for this accel on a host whose
			// /dev/kvm opens.
			e.cfg.Accel, e.accel, e.reason = tt.accel, "", ""
			e.kvmDev = writeFile(t, dir, "kvm", "", 0o600)
			if tt.noKVM {
				e.kvmDev = "/nonexistent/kvm"
			}
			if got, _ := e.Accel(); got != "" {
				t.Fatalf("Accel before the probe: got %q, want undecided", got)
			}
			kernel := writeFile(t, dir, "vmlinux", "k", 0o644)
			initrd := writeFile(t, dir, "initrd", "i", 0o644)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for i := range 2 { // the second call must reuse the first decision
				accel, reason, err := e.DetectAccel(ctx, kernel, initrd)
				if tt.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
						t.Fatalf("DetectAccel #%d: got %q, %q, %v; want an error containing %q", i, accel, reason, err, tt.wantErr)
					}
					continue
				}
				if err != nil || accel != tt.wantAccel || !strings.Contains(reason, tt.wantReason) {
					t.Fatalf("DetectAccel #%d: got %q, %q, %v; want %q and a reason containing %q",
						i, accel, reason, err, tt.wantAccel, tt.wantReason)
				}
			}
			if got, reason := e.Accel(); got != tt.wantAccel {
				t.Errorf("Accel: got %q (%s), want %q", got, reason, tt.wantAccel)
			}
			runs, _ := os.ReadFile(count)
			wantRuns := 1
			if tt.noKVM {
				wantRuns = 0
			}
			if got := strings.Count(string(runs), "run"); got != wantRuns {
				t.Errorf("probe runs: got %d, want %d", got, wantRuns)
			}
			if tt.wantAccel == AccelTCG && !strings.Contains(logs.String(), "level=WARN") {
				t.Errorf("falling back to TCG: got logs %s, want a warning", logs.String())
			}
		})
	}
}

func TestDetectAccelCancelledDecidesNothing(t *testing.T) {
	dir := t.TempDir()
	qemu := writeFile(t, dir, "qemu", "#!/bin/sh\nexec sleep 60\n", 0o755)
	e, _ := testEngine(t, Config{QEMUPath: qemu})
	e.cfg.Accel, e.accel, e.reason = AccelAuto, "", ""
	e.kvmDev = writeFile(t, dir, "kvm", "", 0o600)
	kernel := writeFile(t, dir, "vmlinux", "k", 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, _, err := e.DetectAccel(ctx, kernel, kernel); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("DetectAccel: got %v, want %v", err, context.DeadlineExceeded)
	}
	if got, _ := e.Accel(); got != "" {
		t.Errorf("Accel after a cancelled probe: got %q, want undecided", got)
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{name: "tcg", cfg: Config{Accel: AccelTCG}},
		{name: "invalid config", cfg: Config{Accel: "xen"}, wantErr: `accel "xen"`},
		{name: "no qemu", cfg: Config{QEMUPath: "/nonexistent/qemu-system-x86_64"}, wantErr: "qemu binary"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.StateDir = shortTempDir(t)
			tt.cfg.QEMUPath = cmpOr(tt.cfg.QEMUPath, "/bin/sh") // any executable
			e, err := New(tt.cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New: got %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if fi, err := os.Stat(filepath.Join(tt.cfg.StateDir, "vms")); err != nil || fi.Mode().Perm() != 0o700 {
				t.Errorf("vms dir: got %v, %v; want a 0700 directory", fi, err)
			}
			if got, reason := e.Accel(); got != AccelTCG || reason != "configured" {
				t.Errorf("Accel: got %q, %q; want %q, %q", got, reason, AccelTCG, "configured")
			}
			if e.Name() != "qemu" {
				t.Errorf("Name: got %q, want %q", e.Name(), "qemu")
			}
		})
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func TestTailFile(t *testing.T) {
	dir := t.TempDir()
	long := strings.Repeat("early line\n", 500) + "the last words\n"
	tests := []struct {
		name, content, want string
	}{
		{"short", "one\ntwo\n", "one\ntwo"},
		{"cut at a line boundary", long, strings.TrimSpace(long[len(long)-tailBytes:][strings.IndexByte(long[len(long)-tailBytes:], '\n')+1:])},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, dir, strconv.Itoa(len(tt.content)), tt.content, 0o600)
			got := tailFile(p, tailBytes)
			if got != tt.want {
				t.Errorf("tailFile: got %q, want %q", got, tt.want)
			}
			if len(got) > tailBytes {
				t.Errorf("tailFile: got %d bytes, want at most %d", len(got), tailBytes)
			}
		})
	}
	if got := tailFile(filepath.Join(dir, "missing"), tailBytes); got != "" {
		t.Errorf("tailFile of a missing file: got %q, want empty", got)
	}
}
