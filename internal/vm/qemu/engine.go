// Package qemu is the vm.Engine that runs each VM as a QEMU microvm: KVM when
// it really works on the host, TCG (software emulation) otherwise.
//
// A VM's host-side files live in one directory, <StateDir>/vms/<uid>/,
// owned by the engine and closed to everyone else: the raw config disk, the
// console log, QEMU's stderr, its QMP socket and pid file. Stop removes it;
// Cleanup removes what a crashed run left behind.
//
// QEMU runs deprivileged: as a user ID of its own per VM (Config.UIDBase),
// under its seccomp sandbox (-sandbox on with every optional group denied),
// and it opens no file itself: the engine opens the kernel, initramfs,
// disks, console log and QMP socket and hands them over as descriptors.
//
// Networking is user-mode, so host-to-guest traffic stays on loopback and
// needs no privileges: QEMU's own slirp forwards two free loopback ports to
// the agent's data and control listeners. Without egress it runs with
// restrict=on, and the guest can reach nothing; with egress the guest's
// connections leave from QEMU's process, and Config.Firewall keeps them off
// the appliance, the host and the local networks.
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
	"sync/atomic"
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
	users  *vmUsers        // the uids QEMU runs as

	// warnedFirewall and warnedRoot make the warnings of the kind that
	// would repeat at every boot appear once.
	warnedFirewall, warnedRoot atomic.Bool

	versionOnce sync.Once      // asks QEMU's version once (snapshot keys)
	version     string         // the first line of qemu --version
	snapGroups  snapshotGroups // the groups of snapshots' RAM files

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
	e.users = newVMUsers(cfg, e.kvmDev)
	switch {
	case e.users.enabled:
		iso, egr, _ := cfg.UIDPools()
		e.log.Info("QEMU runs deprivileged: a user id of its own per VM, seccomp sandbox on",
			"uids_no_egress", fmt.Sprintf("%d-%d", iso.First, iso.Last), "uids_egress", fmt.Sprintf("%d-%d", egr.First, egr.Last))
	case cfg.UIDBase < 0:
		e.log.Warn("QEMU runs as the appliance's own user (vm_uid_base is 0): a guest that escapes QEMU acts as this user")
	default:
		e.log.Info("the engine is not root, so QEMU runs as the engine's own user (seccomp sandbox on)")
	}
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
	b := e.newBoot(spec)
	begin := time.Now()
	if err := b.Run(ctx, b.steps(nil, nil)); err != nil {
		return nil, fmt.Errorf("starting vm %s: %w", spec.VM.Name, err)
	}
	m := newMachine(b)
	b.logStarted("vm started", m, begin)
	return m, nil
}

// newBoot returns the boot of spec (spec.VM set).
func (e *Engine) newBoot(spec *vm.Spec) *boot {
	b := &boot{
		e:    e,
		spec: spec,
		log: e.log.With("vm", spec.VM.Name, "vm_id", string(spec.VM.UID),
			"function", spec.Agent.Name),
		dir: vmDir(e.cfg.StateDir, string(spec.VM.UID)),
	}
	b.Timeout = e.cfg.BootTimeout
	b.Log = b.log
	return b
}

// steps are the steps of a boot: afterAccel run once the accelerator is
// known, beforeReady once QEMU runs and its ports are known (a restore's
// incoming migration and re-keying).
func (b *boot) steps(afterAccel, beforeReady []vm.Step) []vm.Step {
	steps := []vm.Step{
		{Name: "assets", Run: b.assets},
		{Name: "config disk", Run: b.configDisk},
		{Name: "accel", Run: b.chooseAccel},
	}
	steps = append(steps, afterAccel...)
	steps = append(steps,
		vm.Step{Name: "user", Run: b.user},
		vm.Step{Name: "network", Timed: true, Run: b.network},
		vm.Step{Name: "files", Timed: true, Run: b.files},
		vm.Step{Name: "process", Timed: true, Run: b.process},
		vm.Step{Name: "endpoint", Timed: true, Run: b.endpoint},
	)
	steps = append(steps, beforeReady...)
	return append(steps, vm.Step{Name: "agent ready", Timed: true, Run: b.agentReady})
}

// logStarted logs that m is up, with how long since begin.
func (b *boot) logStarted(msg string, m *machine, begin time.Time) {
	uid := "engine's own"
	if b.cred != nil {
		uid = strconv.FormatUint(uint64(b.cred.Uid), 10)
	}
	b.log.Info(msg, "accel", b.accel, "endpoint", m.endpoint, "control_endpoint", m.controlEndpoint,
		"egress", b.spec.Egress, "uid", uid, "took", time.Since(begin))
}

// boot is one Start in progress: its steps are methods run by the
// embedded vm.Boot (Timeout Config.BootTimeout from the network step on).
type boot struct {
	vm.Boot
	e    *Engine
	spec *vm.Spec
	log  *slog.Logger
	dir  string

	accel       string
	cred        *syscall.Credential // QEMU's user; nil: the engine's own
	releaseUID  func()              // gives cred's uid back once QEMU is reaped
	extraFiles  []*os.File          // QEMU's descriptors from 3 on (see fdKernel)
	console     *os.File            // QEMU's stdout: the console pipe's write end
	consoleCopy *consoleLog         // copies the pipe into the capped console log
	dataPort    int                 // loopback port forwarded to the agent's data listener
	controlPort int                 // and to its control listener
	qemu        *process

	// Set for snapshots and restores (see snapshot.go).
	mem       *os.File // guest RAM file, handed to QEMU (nil: anonymous RAM)
	memShared bool     // map mem shared (a snapshot's VM) rather than private (a clone)
	memGroup  uint32   // the snapshot's group, given to QEMU to open mem; 0: none
	incoming  *os.File // device state to restore (nil: a boot)
	mac       string   // the NIC's MAC ("": derived from the VM's UID)
	cmdLine   string   // the kernel command line ("": built from the spec)
	memFD     int      // mem's descriptor number in QEMU
	stateFD   int      // incoming's descriptor number in QEMU
	secret    string   // the control secret the agent takes now ("": the spec's)
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

// configDisk writes the agent's config disk (it holds both secrets: only
// the engine can read it; QEMU gets a descriptor).
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

// user picks the uid QEMU runs as.
func (b *boot) user(context.Context) error {
	kvm := b.accel == AccelKVM
	cred, release, err := b.e.users.take(b.spec.Egress, kvm)
	if err != nil {
		return err
	}
	if cred == nil && kvm && b.e.users.enabled && b.e.warnedRoot.CompareAndSwap(false, true) {
		b.log.Warn("QEMU runs as the appliance's user under KVM: the KVM device is not read-write for its group "+
			"(chmod 0660 and chgrp it to a kvm group to run VMs deprivileged)", "device", b.e.kvmDev)
	}
	if cred != nil && b.memGroup != 0 {
		// Only this function's VMs are in the snapshot's group: the RAM
		// file opens for them and for nobody else.
		cred.Groups = append(cred.Groups, b.memGroup)
	}
	b.cred, b.releaseUID = cred, release
	b.Cleanup(func() error { release(); return nil })
	return nil
}

// network checks the firewall that keeps the guest's connections (QEMU's
// own, in user-mode networking) off the appliance: required with egress,
// best effort without (restrict=on already keeps the guest in; the
// firewall also holds a QEMU that a guest took over).
func (b *boot) network(ctx context.Context) error {
	fw := b.e.cfg.Firewall
	if b.spec.Egress {
		switch {
		case fw == nil:
			return errors.New("egress needs the egress firewall, and this engine has none: " +
				"the guest could reach the appliance through the host's own addresses")
		case b.cred == nil:
			return errors.New("egress needs QEMU to run as a VM user of its own (vm_uid_base), " +
				"which is what the egress firewall recognises")
		}
		if err := fw.Ensure(ctx); err != nil {
			return fmt.Errorf("egress refused: the firewall that keeps guests off the appliance cannot be installed "+
				"(the appliance needs NET_ADMIN and nft: compose.egress.yaml): %w", err)
		}
		return nil
	}
	if fw != nil && b.cred != nil {
		if err := fw.Ensure(ctx); err != nil && b.e.warnedFirewall.CompareAndSwap(false, true) {
			b.log.Warn("no firewall for VM processes; VMs without egress still reach nothing through QEMU's restricted network",
				"err", err)
		}
	}
	return nil
}

// files opens everything QEMU is given, in the order of fdKernel...fdQMP,
// plus its stdout (the console log) and stderr. Reading through
// /proc/self/fd, the loader needs the kernel and initramfs readable by
// QEMU's user (they are: root-owned and world-readable), not the
// directories they live in.
func (b *boot) files(context.Context) error {
	var files []*os.File
	b.Cleanup(func() error {
		for _, f := range files {
			f.Close()
		}
		return nil
	})
	for _, p := range []string{b.spec.Kernel, b.spec.Initrd} {
		f, err := openReadable(p, b.cred)
		if err != nil {
			return err
		}
		files = append(files, f)
	}
	for _, p := range []string{b.spec.RootFS, b.spec.Code, b.path(configDiskName)} {
		f, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("opening disk: %w", err)
		}
		files = append(files, f)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: b.path(qmpSocketName), Net: "unix"})
	if err != nil {
		return fmt.Errorf("creating the qmp socket: %w", err)
	}
	l.SetUnlinkOnClose(false)
	qmp, err := l.File()
	l.Close() // the socket lives on in qmp; QEMU gets it
	if err != nil {
		return fmt.Errorf("creating the qmp socket: %w", err)
	}
	files = append(files, qmp)
	if b.spec.Deps != "" {
		f, err := os.Open(b.spec.Deps)
		if err != nil {
			return fmt.Errorf("opening dependency disk: %w", err)
		}
		files = append(files, f) // fdDeps
	}
	// The snapshot's files come last, their numbers recorded: QEMU's copies
	// are its own, so these are closed with the rest once it started.
	if b.mem != nil {
		b.memFD = 3 + len(files)
		files = append(files, b.mem)
		b.mem = nil
	}
	if b.incoming != nil {
		b.stateFD = 3 + len(files)
		files = append(files, b.incoming)
		b.incoming = nil
	}
	b.extraFiles = files
	b.console, b.consoleCopy, err = startConsoleLog(b.path(consoleLogName), b.e.cfg.ConsoleMaxSize, b.log)
	if err != nil {
		return err
	}
	files = append(files, b.console)
	return nil
}

// openReadable opens path read-only, first checking that QEMU running as
// cred could open it through /proc/self/fd (which checks the file's own
// mode, not the directories'): a clear error beats QEMU's "could not load".
func openReadable(path string, cred *syscall.Credential) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening boot file: %w", err)
	}
	if cred == nil {
		return f, nil
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening boot file: %w", err)
	}
	if fi.Mode().Perm()&0o004 == 0 {
		f.Close()
		return nil, fmt.Errorf("%s is not readable by others (mode %v): QEMU runs as uid %d and must read it (chmod o+r)", path, fi.Mode().Perm(), cred.Uid)
	}
	return f, nil
}

// process starts QEMU.
func (b *boot) process(context.Context) error {
	args := buildQEMUArgs(b.qemuArgs())
	stderr, err := os.OpenFile(b.path(qemuStderrName), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("creating qemu stderr file: %w", err)
	}
	defer stderr.Close()
	cmd := exec.Command(b.e.cfg.QEMUPath, args...)
	cmd.Stdout, cmd.Stderr = b.console, stderr
	cmd.ExtraFiles = b.extraFiles
	cmd.Dir = "/" // QEMU's user may not enter the engine's directories
	b.log.Debug("starting qemu", "step", "process", "argv", cmd.Args)
	p, err := startProcess("qemu", cmd, b.cred)
	// QEMU holds its own copies now.
	for _, f := range b.extraFiles {
		f.Close()
	}
	b.console.Close()
	b.extraFiles, b.console = nil, nil
	if err != nil {
		return err
	}
	b.qemu = p
	b.Cleanup(func() error { return p.killAndWait(killWait) })
	if err := os.WriteFile(b.path(qemuPidName), []byte(strconv.Itoa(p.pid)+"\n"), 0o600); err != nil {
		return fmt.Errorf("writing qemu pid file: %w", err)
	}
	return nil
}

// qemuArgs is what this VM's command line is made of.
func (b *boot) qemuArgs() qemuArgs {
	v := b.spec.VM
	a := qemuArgs{
		Name:      v.Name,
		Accel:     b.accel,
		MemoryMiB: v.Spec.Memory.Bytes() >> 20,
		CPUs:      v.Spec.CPUs,
		CmdLine:   b.cmdLine,
		RootFS:    b.spec.RootFS,
		Code:      b.spec.Code,
		Deps:      b.spec.Deps,
		Config:    b.path(configDiskName),
		Egress:    b.spec.Egress,
		MAC:       b.mac,
		Incoming:  b.stateFD != 0,
		TBSizeMiB: b.e.cfg.TBSizeMiB,
	}
	if a.CmdLine == "" {
		a.CmdLine = kernelCmdLine(b.e.tscKHz, v.Spec.Kernel.CmdLine)
	}
	if a.MAC == "" {
		a.MAC = macFromUID(string(v.UID))
	}
	if b.memFD != 0 {
		a.Memory = &memoryFile{FD: b.memFD, Shared: b.memShared}
	}
	return a
}

// endpoint connects to QMP (proving QEMU is up) and learns which loopback
// ports QEMU bound for the agent's two listeners.
func (b *boot) endpoint(ctx context.Context) error {
	c, err := b.dialQMP(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	out, err := c.hmp(ctx, "info usernet")
	if err != nil {
		return err
	}
	if b.dataPort, err = parseHostForward(out, "n0", protocol.AgentPort); err != nil {
		return err
	}
	if b.controlPort, err = parseHostForward(out, "n0", protocol.ControlPort); err != nil {
		return err
	}
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

// agentReady polls the agent's health check (on its control listener)
// until it answers 200, failing fast when QEMU exits.
//
// Checks normally run one after another. But slirp accepts a connection on
// the host before the guest can take it, and a check sent before the
// guest's network is up can hang until it times out; so while a check
// hangs, another starts every healthOverlap, up to healthMaxInFlight, and
// the guest is seen ready soon after it is, however slow it answers.
func (b *boot) agentReady(ctx context.Context) error {
	endpoint := net.JoinHostPort("127.0.0.1", strconv.Itoa(b.controlPort))
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
			ready, failed, err := b.e.agents.Health(checkCtx, endpoint, b.spec.Agent.ControlSecret)
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
		case <-ctx.Done():
			return b.withConsole(fmt.Errorf("agent at %s not healthy: %w (last: %v)", endpoint, context.Cause(ctx), last))
		}
	}
}

// withConsole adds the tail of the guest's console log to err.
func (b *boot) withConsole(err error) error {
	if b.qemu != nil && b.qemu.exited() {
		b.consoleCopy.wait() // all QEMU wrote is in the file
	}
	if tail := tailFile(b.path(consoleLogName), tailBytes); tail != "" {
		return fmt.Errorf("%w; console: %s", err, tail)
	}
	return fmt.Errorf("%w; console log empty", err)
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
