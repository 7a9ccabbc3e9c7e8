// Package qemu is the vm.Engine that runs each VM as a QEMU microvm: KVM when
// it really works on the host, TCG (software emulation) otherwise.
//
// A VM's host-side files live in one directory, <StateDir>/vms/<uid>/: the
// raw config disk, the console log, QEMU's stderr, its QMP socket and pid
// file (and passt's log and pid file for VMs with egress). Stop removes it;
// Cleanup removes what a crashed run left behind.
//
// Networking is user-mode, so host-to-guest traffic stays on loopback and
// needs no privileges: without egress QEMU's own slirp with restrict=on
// forwards a free loopback port to the agent; with egress passt does the
// same and also lets the guest open outbound connections.
package qemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/faasvm/appliance/guest/protocol"
	"github.com/faasvm/appliance/internal/vm"
)

// Engine starts QEMU microVMs. It is safe for concurrent use.
type Engine struct {
	cfg    Config
	log    *slog.Logger
	agents *vm.AgentClient // health checks and poweroff
	tscKHz int             // host TSC rate for tsc_early_khz; 0 when unknown
	kvmDev string          // the KVM device, /dev/kvm (tests point it elsewhere)

	probing chan struct{} // one-slot semaphore: one accelerator decision at a time
	mu      sync.Mutex    // guards the fields below
	accel   string        // AccelKVM or AccelTCG once decided
	reason  string        // why accel was chosen
	accErr  error         // set instead of accel when Accel is AccelKVM and KVM is unusable
}

var _ vm.Engine = (*Engine)(nil)

// New validates cfg, applies its defaults and returns an Engine. It checks
// that QEMU exists and, for Accel AccelKVM, that /dev/kvm opens; whether KVM
// really runs a guest is probed at the first Start (or DetectAccel).
func New(cfg Config) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	qemuPath, err := exec.LookPath(cfg.QEMUPath)
	if err != nil {
		return nil, fmt.Errorf("qemu config: qemu binary: %w", err)
	}
	cfg.QEMUPath = qemuPath
	e := &Engine{
		cfg:     cfg,
		log:     cfg.Logger.With("engine", "qemu"),
		kvmDev:  "/dev/kvm",
		probing: make(chan struct{}, 1),
	}
	e.agents = vm.NewAgentClient(nil) // the agent is always on loopback
	if khz, err := readTSCKHz(); err != nil {
		e.log.Warn("host TSC rate unknown; guests calibrate it themselves, which can hang a boot on a busy host",
			"error", err)
	} else {
		e.tscKHz = khz
	}
	if err := os.MkdirAll(filepath.Join(cfg.StateDir, "vms"), 0o700); err != nil {
		return nil, fmt.Errorf("qemu engine: creating state dir: %w", err)
	}
	switch cfg.Accel {
	case AccelTCG:
		e.accel, e.reason = AccelTCG, "configured"
	case AccelKVM:
		if err := openKVM(e.kvmDev); err != nil {
			return nil, fmt.Errorf("qemu engine: accel kvm: %w", err)
		}
	case AccelAuto:
		if err := openKVM(e.kvmDev); err != nil {
			e.accel, e.reason = AccelTCG, err.Error()
			e.warnTCG()
		}
	}
	return e, nil
}

// Name says which engine this is.
func (e *Engine) Name() string { return "qemu" }

// Accel returns the accelerator VMs run under (AccelKVM or AccelTCG) and
// why it was chosen, or "" and a note while KVM has not been probed yet.
func (e *Engine) Accel() (accel, reason string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.accErr != nil:
		return "", e.accErr.Error()
	case e.accel == "":
		return "", "not decided yet: KVM is probed at the first start"
	}
	return e.accel, e.reason
}

func (e *Engine) warnTCG() {
	e.log.Warn("KVM unusable, running VMs under TCG software emulation: boots and calls are much slower",
		"reason", e.reason)
}

// readTSCKHz reads the host's TSC rate from /proc/cpuinfo.
func readTSCKHz() (int, error) {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return parseTSCKHz(f)
}

// Start boots the VM described by spec and returns once its agent answers
// the health check. ctx bounds the whole of Start; Config.BootTimeout
// bounds it from the network step on (so not the one-time KVM probe, which
// Config.ProbeTimeout bounds). The VM outlives ctx. On failure everything
// already set up is undone and the error names the step that failed.
func (e *Engine) Start(ctx context.Context, spec *vm.Spec) (vm.Machine, error) {
	if spec == nil || spec.VM == nil {
		return nil, errors.New("starting vm: spec has no VM object")
	}
	b := &boot{
		e:    e,
		spec: spec,
		log: e.log.With("vm", spec.VM.Name, "vm_id", string(spec.VM.UID),
			"function", spec.Agent.Name),
		dir: vmDir(e.cfg.StateDir, string(spec.VM.UID)),
	}
	b.Timeout = e.cfg.BootTimeout
	b.Log = b.log
	begin := time.Now()
	err := b.Run(ctx, []vm.Step{
		{Name: "assets", Run: b.assets},
		{Name: "config disk", Run: b.configDisk},
		{Name: "accel", Run: b.chooseAccel},
		{Name: "network", Timed: true, Run: b.network},
		{Name: "process", Timed: true, Run: b.process},
		{Name: "endpoint", Timed: true, Run: b.endpoint},
		{Name: "agent ready", Timed: true, Run: b.agentReady},
	})
	if err != nil {
		return nil, fmt.Errorf("starting vm %s: %w", spec.VM.Name, err)
	}
	m := newMachine(b)
	b.log.Info("vm started", "accel", b.accel, "endpoint", m.endpoint, "egress", spec.Egress,
		"took", time.Since(begin))
	return m, nil
}

// boot is one Start in progress: its steps are methods run by the
// embedded vm.Boot (Timeout Config.BootTimeout from the network step on).
type boot struct {
	vm.Boot
	e    *Engine
	spec *vm.Spec
	log  *slog.Logger
	dir  string

	accel      string
	netdev     string
	extraFiles []*os.File // inherited by QEMU (its end of passt's socket)
	hostPort   int
	qemu       *process
	passt      *process
}

func (b *boot) path(name string) string { return filepath.Join(b.dir, name) }

// assets checks the spec and creates the VM's directory.
func (b *boot) assets(context.Context) error {
	if err := b.spec.Validate(); err != nil {
		return err
	}
	if uid := string(b.spec.VM.UID); uid == "." || uid == ".." || strings.ContainsAny(uid, "/\x00") {
		return fmt.Errorf("vm uid %q cannot name a directory", uid)
	}
	if n := len(b.path(qmpSocketName)); n > maxUnixPath {
		return fmt.Errorf("vm dir %s is too long for a unix socket path (%d bytes, max %d)", b.dir, n, maxUnixPath)
	}
	if err := os.MkdirAll(filepath.Dir(b.dir), 0o700); err != nil {
		return fmt.Errorf("creating vms dir: %w", err)
	}
	if err := os.Mkdir(b.dir, 0o700); err != nil {
		return fmt.Errorf("creating vm dir: %w", err)
	}
	b.Cleanup(func() error { return os.RemoveAll(b.dir) })
	return nil
}

// configDisk writes the agent's config disk.
func (b *boot) configDisk(context.Context) error {
	img, err := protocol.EncodeDisk(&b.spec.Agent)
	if err != nil {
		return err
	}
	if err := os.WriteFile(b.path(configDiskName), img, 0o600); err != nil {
		return fmt.Errorf("writing config disk: %w", err)
	}
	return nil
}

// chooseAccel decides KVM or TCG (probing KVM once per engine).
func (b *boot) chooseAccel(ctx context.Context) error {
	accel, _, err := b.e.DetectAccel(ctx, b.spec.Kernel, b.spec.Initrd)
	b.accel = accel
	return err
}

// network prepares the guest's network: QEMU's user-mode network without
// egress, passt with it.
func (b *boot) network(context.Context) error {
	if !b.spec.Egress {
		b.netdev = userNetdev()
		return nil
	}
	passtPath, err := exec.LookPath(b.e.cfg.PasstPath)
	if err != nil {
		return fmt.Errorf("egress needs passt: %w", err)
	}
	port, err := freeLoopbackPort()
	if err != nil {
		return err
	}
	// passt drops root for "nobody", so it could not bind a socket in our
	// 0700 VM directory; an inherited socketpair needs no path at all.
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("creating passt socketpair: %w", err)
	}
	qemuEnd := os.NewFile(uintptr(fds[0]), "qemu-net")
	passtEnd := os.NewFile(uintptr(fds[1]), "passt-net")
	defer passtEnd.Close()
	b.Cleanup(func() error { qemuEnd.Close(); return nil })

	stderr, err := os.OpenFile(b.path(passtStderrName), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("creating passt stderr file: %w", err)
	}
	defer stderr.Close()
	cmd := exec.Command(passtPath, buildPasstArgs(passtArgs{FD: streamFD, HostPort: port, Dir: b.dir})...)
	cmd.ExtraFiles = []*os.File{passtEnd}
	cmd.Stdout, cmd.Stderr = stderr, stderr
	cmd.Dir = b.dir
	p, err := startProcess("passt", cmd)
	if err != nil {
		return err
	}
	b.passt = p
	b.Cleanup(func() error { return p.killAndWait(killWait) })
	if err := os.WriteFile(b.path(passtPidName), []byte(strconv.Itoa(p.pid)+"\n"), 0o600); err != nil {
		return fmt.Errorf("writing passt pid file: %w", err)
	}
	b.netdev = streamNetdev(streamFD)
	b.extraFiles = []*os.File{qemuEnd}
	b.hostPort = port
	return nil
}

// process starts QEMU.
func (b *boot) process(context.Context) error {
	v := b.spec.VM
	args := buildQEMUArgs(qemuArgs{
		Name:      v.Name,
		Accel:     b.accel,
		MemoryMiB: v.Spec.Memory.Bytes() >> 20,
		CPUs:      v.Spec.CPUs,
		Kernel:    b.spec.Kernel,
		Initrd:    b.spec.Initrd,
		CmdLine:   kernelCmdLine(b.e.tscKHz, v.Spec.Kernel.CmdLine),
		RootFS:    b.spec.RootFS,
		Code:      b.spec.Code,
		Config:    b.path(configDiskName),
		Netdev:    b.netdev,
		MAC:       macFromUID(string(v.UID)),
		Dir:       b.dir,
	})
	stderr, err := os.OpenFile(b.path(qemuStderrName), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("creating qemu stderr file: %w", err)
	}
	defer stderr.Close()
	cmd := exec.Command(b.e.cfg.QEMUPath, args...)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	cmd.ExtraFiles = b.extraFiles
	cmd.Dir = b.dir
	b.log.Debug("starting qemu", "step", "process", "argv", cmd.Args)
	p, err := startProcess("qemu", cmd)
	// QEMU holds its own copy now; ours must go so that passt sees the
	// socket close when QEMU ends.
	for _, f := range b.extraFiles {
		f.Close()
	}
	if err != nil {
		return err
	}
	b.qemu = p
	b.Cleanup(func() error { return p.killAndWait(killWait) })
	return nil
}

// endpoint connects to QMP (proving QEMU is up) and, with user-mode
// networking, learns which loopback port QEMU bound for the agent.
func (b *boot) endpoint(ctx context.Context) error {
	c, err := b.dialQMP(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if b.spec.Egress {
		return nil
	}
	out, err := c.hmp(ctx, "info usernet")
	if err != nil {
		return err
	}
	port, err := parseHostForward(out, "n0", protocol.AgentPort)
	if err != nil {
		return err
	}
	b.hostPort = port
	return nil
}

// dialQMP connects to the VM's QMP socket, retrying until QEMU has created
// it, and fails at once if QEMU exits.
func (b *boot) dialQMP(ctx context.Context) (*qmpClient, error) {
	tick := time.NewTicker(qmpRetryInterval)
	defer tick.Stop()
	for {
		c, err := dialQMP(ctx, b.path(qmpSocketName))
		if err == nil {
			return c, nil
		}
		if ctx.Err() == nil && !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ECONNREFUSED) {
			// A session that broke off is most often QEMU dying: say so
			// if it did.
			t := time.NewTimer(exitGrace)
			defer t.Stop()
			select {
			case <-b.qemu.done:
				return nil, b.qemu.exitError(b.path(qemuStderrName))
			case <-t.C:
				return nil, err
			}
		}
		select {
		case <-b.qemu.done:
			return nil, b.qemu.exitError(b.path(qemuStderrName))
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the qmp socket: %w (last: %v)", context.Cause(ctx), err)
		case <-tick.C:
		}
	}
}

// agentReady polls the agent's health check until it answers 200, failing
// fast when QEMU or passt exits.
//
// Checks normally run one after another. But passt accepts a connection
// on the host before the guest can take it, and a check sent before the
// guest's network is up just hangs until it times out; so while a check
// hangs, another starts every healthOverlap, up to healthMaxInFlight, and
// the guest is seen ready soon after it is, however slow it answers.
func (b *boot) agentReady(ctx context.Context) error {
	endpoint := net.JoinHostPort("127.0.0.1", strconv.Itoa(b.hostPort))
	var passtDone <-chan struct{} // nil (never ready) without passt
	if b.passt != nil {
		passtDone = b.passt.done
	}
	checkCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	type result struct {
		ready  bool
		failed string // the agent's reason when the handler failed to start
		err    error
	}
	results := make(chan result, healthMaxInFlight)
	inFlight, lastStart := 0, time.Time{}
	check := func() {
		inFlight++
		lastStart = time.Now()
		wg.Add(1)
		go func() {
			defer wg.Done()
			ready, failed, err := b.e.agents.Health(checkCtx, endpoint, b.spec.Agent.Secret)
			results <- result{ready, failed, err}
		}()
	}
	check()
	tick := time.NewTicker(healthInterval)
	defer tick.Stop()
	var last error
	for {
		select {
		case r := <-results:
			inFlight--
			switch {
			case r.ready:
				return nil
			case errors.Is(r.err, vm.ErrSecretRefused):
				return r.err
			case r.failed != "":
				// The handler could not start (it crashed at import, say):
				// waiting longer only delays the reason reaching the user.
				return b.withConsole(fmt.Errorf("handler failed to start: %s", r.failed))
			case ctx.Err() == nil:
				last = r.err
			}
		case <-tick.C:
			if inFlight == 0 || (inFlight < healthMaxInFlight && time.Since(lastStart) >= healthOverlap) {
				check()
			}
		case <-b.qemu.done:
			return b.withConsole(b.qemu.exitError(b.path(qemuStderrName)))
		case <-passtDone:
			return b.withConsole(b.passt.exitError(b.path(passtStderrName)))
		case <-ctx.Done():
			return b.withConsole(fmt.Errorf("agent at %s not healthy: %w (last: %v)", endpoint, context.Cause(ctx), last))
		}
	}
}

// withConsole adds the tail of the guest's console log to err.
func (b *boot) withConsole(err error) error {
	if tail := tailFile(b.path(consoleLogName), tailBytes); tail != "" {
		return fmt.Errorf("%w; console: %s", err, tail)
	}
	return fmt.Errorf("%w; console log empty", err)
}

// freeLoopbackPort returns a TCP port that was free on 127.0.0.1 a moment
// ago. (passt binds it itself; if another process takes it in between,
// passt exits and the boot fails in the agent ready step.)
func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free loopback port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Timing of the boot and stop steps.
const (
	qmpRetryInterval  = 10 * time.Millisecond
	healthInterval    = 50 * time.Millisecond
	healthOverlap     = 250 * time.Millisecond
	healthMaxInFlight = int(vm.AgentRequestTimeout / healthOverlap)
	qmpQuitTimeout    = 3 * time.Second
	killWait          = 5 * time.Second
	exitGrace         = time.Second // how long an I/O error waits to be explained by an exit
)
