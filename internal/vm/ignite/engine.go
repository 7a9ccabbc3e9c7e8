// Package ignite is the vm.Engine that runs each VM as a Firecracker microVM
// through Weaveworks Ignite (v0.10), driving the ignite CLI the way the seed
// demo's operator did by hand (`ignite run --config func-handler.yml`, copy
// the code in, start the server, find the IP with `ignite vm ls`), with
// every step automated:
//
//  1. write the VM as an Ignite v1alpha4 config file (Ignite's own scheme
//     serializer) whose copyFiles bring in the guest agent, its JSON config
//     and the function's code snapshot;
//  2. `ignite run --config FILE --name NAME --runtime R --network-plugin P`;
//     the runtime image's systemd starts the agent as a service
//     (guest/ignite: faas-agent.service, function.mount);
//  3. read the VM's IP with `ignite inspect vm UID -o json`;
//  4. wait for the agent's health check on its control listener at IP:8081
//     (Ignite's CNI bridge; the gateway proxies to IP:8080, the data
//     listener, and never learns the control secret);
//  5. on Stop, ask the agent to power off, then `ignite rm -f UID`.
//
// Ignite needs root, a working /dev/kvm, the sandbox image
// (weaveworks/ignite:v0.10.0, which holds Firecracker v0.22.4) and the
// Ignite variant of each runtime image; Available says whether a host has
// what it takes. See docs/ignite.md.
package ignite

import (
	"bytes"
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
	"time"

	"github.com/faasvm/appliance/guest/protocol"
	"github.com/faasvm/appliance/internal/vm"
)

// Engine starts Ignite VMs. It is safe for concurrent use.
type Engine struct {
	cfg    Config
	log    *slog.Logger
	ignite string          // absolute path of the ignite binary
	agent  string          // the agent binary, symlinks resolved
	owner  string          // LabelOwner value of this engine's VMs
	agents *vm.AgentClient // health checks and poweroff
	run    runner
	// agentPort and controlPort are where the agent's data and control
	// listeners are in the guest (protocol.AgentPort and ControlPort; tests
	// point them at local servers).
	agentPort, controlPort int
	now                    func() time.Time
}

var _ vm.Engine = (*Engine)(nil)

// New validates cfg, applies its defaults and returns an Engine. It checks
// that the ignite binary and the agent binary exist; whether Ignite can
// really run VMs on this host is Available's question.
func New(cfg Config) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	ignitePath, err := exec.LookPath(cfg.IgnitePath)
	if err != nil {
		return nil, fmt.Errorf("ignite config: ignite binary: %w", err)
	}
	if ignitePath, err = filepath.Abs(ignitePath); err != nil {
		return nil, fmt.Errorf("ignite config: ignite binary: %w", err)
	}
	// Ignite copies a symlink as a symlink: hand it the real file.
	agent, err := filepath.EvalSymlinks(cfg.AgentPath)
	if err != nil {
		return nil, fmt.Errorf("ignite config: agent binary: %w", err)
	}
	if agent, err = filepath.Abs(agent); err != nil {
		return nil, fmt.Errorf("ignite config: agent binary: %w", err)
	}
	if fi, err := os.Stat(agent); err != nil {
		return nil, fmt.Errorf("ignite config: agent binary: %w", err)
	} else if !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
		return nil, fmt.Errorf("ignite config: agent binary %s is not an executable file", agent)
	}
	e := &Engine{
		cfg:         cfg,
		log:         cfg.Logger.With("engine", "ignite"),
		ignite:      ignitePath,
		agent:       agent,
		owner:       ownerID(cfg.StateDir),
		agentPort:   protocol.AgentPort,
		controlPort: protocol.ControlPort,
		now:         time.Now,
	}
	e.agents = vm.NewAgentClient(nil) // VMs are on a host-local bridge
	if err := os.MkdirAll(filepath.Join(cfg.StateDir, vmsDirName), 0o700); err != nil {
		return nil, fmt.Errorf("ignite engine: creating state dir: %w", err)
	}
	e.log.Warn("the ignite engine does not restrict guest networking: every VM can open connections " +
		"through Ignite's CNI bridge (egress off is not enforced) and reach the host's bridge address")
	return e, nil
}

// Name says which engine this is.
func (e *Engine) Name() string { return "ignite" }

// vmsDirName is the directory under StateDir holding one directory per VM.
const vmsDirName = "ignite"

// File names inside a VM's directory.
const (
	vmConfigName    = "vm.yaml"
	agentConfigName = "agent.json"
	consoleLogName  = "console.log"
)

// vmDir is the directory of the VM with the given Ignite UID.
func (e *Engine) vmDir(uid string) string {
	return filepath.Join(e.cfg.StateDir, vmsDirName, uid)
}

// Start boots the VM described by spec and returns once its agent answers
// the health check. Config.BootTimeout bounds it from `ignite run` on; ctx
// bounds all of it. The VM outlives ctx. On failure everything already set
// up is undone (the VM removed with `ignite rm -f`) and the error names the
// step that failed, with the tail of the VM's console when there is one.
//
// Of spec, the engine uses VM (name, UID, CPUs, memory, disk size, kernel
// and sandbox images, extra kernel arguments, and Spec.Image.OCI as the
// runtime image whose Ignite variant it boots, see ImageFor), Code and
// Agent. Kernel, Initrd and RootFS are the qemu engine's: Ignite boots its
// own kernel and the image's root filesystem.
func (e *Engine) Start(ctx context.Context, spec *vm.Spec) (vm.Machine, error) {
	if spec == nil || spec.VM == nil {
		return nil, errors.New("starting vm: spec has no VM object")
	}
	uid := IgniteUID(string(spec.VM.UID))
	b := &boot{
		e:    e,
		spec: spec,
		uid:  uid,
		name: VMName(spec.VM.Name, uid),
		dir:  e.vmDir(uid),
		log: e.log.With("vm", spec.VM.Name, "vm_id", string(spec.VM.UID), "ignite_uid", uid,
			"function", spec.Agent.Name),
	}
	b.Timeout = e.cfg.BootTimeout
	b.Log = b.log
	b.Explain = func(ctx context.Context, err error) error {
		if b.ran {
			return b.withConsole(ctx, err)
		}
		return err
	}
	begin := time.Now()
	err := b.Run(ctx, []vm.Step{
		{Name: "assets", Run: b.assets},
		{Name: "config", Run: b.config},
		{Name: "run", Timed: true, Run: b.runVM},
		{Name: "endpoint", Timed: true, Run: b.endpoint},
		{Name: "agent ready", Timed: true, Run: b.agentReady},
	})
	if err != nil {
		return nil, fmt.Errorf("starting vm %s: %w", spec.VM.Name, err)
	}
	m := newMachine(b)
	b.log.Info("vm started", "endpoint", m.endpoint, "control_endpoint", m.controlEndpoint, "image", b.image, "egress_enforced", false,
		"took", time.Since(begin))
	return m, nil
}

// boot is one Start in progress: its steps are methods run by the
// embedded vm.Boot (Timeout Config.BootTimeout from `ignite run` on).
type boot struct {
	vm.Boot
	e    *Engine
	spec *vm.Spec
	log  *slog.Logger
	uid  string // Ignite UID
	name string // Ignite VM name
	dir  string

	code        string // code image, symlinks resolved
	image       string // the Ignite image booted
	ran         bool   // ignite run was called: the VM may exist
	ip          net.IP
	containerID string
}

func (b *boot) path(name string) string { return filepath.Join(b.dir, name) }

// assets checks the spec, works out the image and creates the VM's
// directory.
func (b *boot) assets(context.Context) error {
	if err := validateSpec(b.spec); err != nil {
		return err
	}
	code, err := filepath.EvalSymlinks(b.spec.Code)
	if err != nil {
		return fmt.Errorf("code image: %w", err)
	}
	if b.code, err = filepath.Abs(code); err != nil {
		return fmt.Errorf("code image: %w", err)
	}
	if b.spec.VM.Spec.Image.OCI.IsUnset() {
		return errors.New("vm spec: no runtime image (Spec.VM.Spec.Image.OCI)")
	}
	if b.image, err = ImageFor(b.spec.VM.Spec.Image.OCI.String()); err != nil {
		return err
	}
	if err := os.Mkdir(b.dir, 0o700); err != nil {
		return fmt.Errorf("creating vm dir: %w", err)
	}
	b.Cleanup(func() error { return os.RemoveAll(b.dir) })
	return nil
}

// validateSpec checks what this engine uses of a spec (vm.Spec.Validate
// also wants the qemu engine's kernel, initrd and root filesystem).
func validateSpec(s *vm.Spec) error {
	if err := s.ValidateMachine(); err != nil {
		return err
	}
	if s.Code == "" {
		return fmt.Errorf("vm spec %s: no code image path", s.VM.Name)
	}
	if s.Deps != "" || s.Agent.Deps {
		return fmt.Errorf("vm spec %s: the ignite engine does not attach dependency disks yet (requirements.txt / package.json): use the qemu engine", s.VM.Name)
	}
	if _, err := os.Stat(s.Code); err != nil {
		return fmt.Errorf("vm spec %s: code image: %w", s.VM.Name, err)
	}
	if err := s.Agent.Validate(); err != nil {
		return fmt.Errorf("vm spec %s: %w", s.VM.Name, err)
	}
	return nil
}

// config writes the agent's config and the Ignite VM config.
func (b *boot) config(context.Context) error {
	agentJSON, err := agentConfig(b.spec.Agent)
	if err != nil {
		return err
	}
	if err := os.WriteFile(b.path(agentConfigName), agentJSON, 0o600); err != nil {
		return fmt.Errorf("writing agent config: %w", err)
	}
	v, err := buildVM(vmInput{
		Spec: b.spec, Image: b.image, AgentPath: b.e.agent, Config: b.path(agentConfigName), Code: b.code,
		Owner: b.e.owner, Created: b.e.now(),
	})
	if err != nil {
		return err
	}
	out, err := encodeVMConfig(v)
	if err != nil {
		return err
	}
	if err := os.WriteFile(b.path(vmConfigName), out, 0o600); err != nil {
		return fmt.Errorf("writing vm config: %w", err)
	}
	return nil
}

// runVM creates and starts the VM with `ignite run`.
func (b *boot) runVM(ctx context.Context) error {
	// However run ends, the VM may exist now (it can fail after creating
	// it): removing it is part of undoing.
	b.ran = true
	b.Cleanup(func() error {
		rctx, cancel := context.WithTimeout(context.Background(), b.e.cfg.CommandTimeout)
		defer cancel()
		return b.e.remove(rctx, b.uid)
	})
	args := runArgs(b.path(vmConfigName), b.name, b.e.cfg.Runtime, b.e.cfg.NetworkPlugin)
	b.log.Debug("running ignite", "step", "run", "argv", args)
	_, err := b.e.run.run(ctx, 0, b.e.ignite, args)
	return err
}

// endpoint reads the VM's address from `ignite inspect`.
func (b *boot) endpoint(ctx context.Context) error {
	out, err := b.e.run.run(ctx, b.e.cfg.CommandTimeout, b.e.ignite, inspectArgs(b.uid))
	if err != nil {
		return err
	}
	info, err := parseInspect(out, b.uid)
	if err != nil {
		return err
	}
	b.ip, b.containerID = info.IP, info.ContainerID
	return nil
}

// agentReady polls the agent's health check (its control listener) until
// it answers 200. Every
// Config.StatusInterval it also asks Ignite whether the VM still runs, so a
// guest that stops (the agent's unit failed, the kernel panicked) fails the
// boot at once rather than at the timeout.
func (b *boot) agentReady(ctx context.Context) error {
	endpoint := b.controlAddr()
	tick := time.NewTicker(healthInterval)
	defer tick.Stop()
	lastStatus := time.Now()
	var last error
	for {
		// A handler that failed to start is waited out like any other
		// unready one: Ignite's status check ends the wait if the guest
		// stops.
		ready, _, err := b.e.agents.Health(ctx, endpoint, b.spec.Agent.ControlSecret)
		switch {
		case ready:
			return nil
		case errors.Is(err, vm.ErrSecretRefused):
			return err
		case ctx.Err() == nil:
			last = err
		}
		if time.Since(lastStatus) >= b.e.cfg.StatusInterval {
			lastStatus = time.Now()
			st, err := b.e.status(ctx, b.uid)
			if err == nil && st != stateRunning {
				return fmt.Errorf("vm is %s before its agent answered (last: %v)", st, last)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("agent at %s not healthy: %w (last: %v)", endpoint, context.Cause(ctx), last)
		case <-tick.C:
		}
	}
}

// endpointAddr is the agent's data listener, controlAddr its control one.
func (b *boot) endpointAddr() string {
	return net.JoinHostPort(b.ip.String(), strconv.Itoa(b.e.agentPort))
}

func (b *boot) controlAddr() string {
	return net.JoinHostPort(b.ip.String(), strconv.Itoa(b.e.controlPort))
}

// withConsole adds the tail of the VM's console to err. It reads the
// console with its own short deadline: ctx may be what ran out.
func (b *boot) withConsole(ctx context.Context, err error) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.e.cfg.CommandTimeout)
	defer cancel()
	out, cerr := b.e.console(cctx, b.uid, b.containerID)
	if cerr != nil {
		b.log.Debug("reading the console failed", "error", cerr)
	}
	if t := tail(out, consoleTailBytes); t != "" {
		return fmt.Errorf("%w; console: %s", err, t)
	}
	return fmt.Errorf("%w; console not available", err)
}

// consoleTailBytes is how much of a console an error message quotes.
const consoleTailBytes = 2048

// status asks `ignite ps` for the VM's state.
func (e *Engine) status(ctx context.Context, uid string) (vmState, error) {
	out, err := e.run.run(ctx, e.cfg.CommandTimeout, e.ignite, statusArgs(uid))
	if err != nil {
		return 0, err
	}
	return parseStatus(out)
}

// remove deletes the VM with `ignite rm -f`; a VM Ignite does not know is
// already removed.
func (e *Engine) remove(ctx context.Context, uid string) error {
	_, err := e.run.run(ctx, e.cfg.CommandTimeout, e.ignite, rmArgs(uid))
	if isNotFound(err) {
		return nil
	}
	return err
}

// isNotFound reports whether err is Ignite saying it knows no such VM.
func isNotFound(err error) bool {
	var ce *CommandError
	return errors.As(err, &ce) && ce.ExitCode > 0 && strings.Contains(ce.output(), "no ID/name matches")
}

// console returns the VM's console output so far. `ignite logs` reads it
// from the running sandbox container; once the VM has stopped Ignite
// refuses, and with the docker runtime the container (kept by --debug) is
// read with `docker logs` instead.
func (e *Engine) console(ctx context.Context, uid, containerID string) ([]byte, error) {
	out, err := e.run.run(ctx, e.cfg.CommandTimeout, e.ignite, logsArgs(uid))
	if err == nil || e.cfg.Runtime != RuntimeDocker || containerID == "" || ctx.Err() != nil {
		return out, err
	}
	docker, lerr := exec.LookPath(e.cfg.DockerPath)
	if lerr != nil {
		return nil, errors.Join(err, fmt.Errorf("reading the kept container: %w", lerr))
	}
	out, derr := e.run.run(ctx, e.cfg.CommandTimeout, docker, dockerLogsArgs(containerID))
	if derr != nil {
		return nil, errors.Join(err, derr)
	}
	return out, nil
}

// writeConsole replaces the console log file with out, atomically, unless
// out is empty (a failed read must not wipe what an earlier one saved).
func writeConsole(dir string, out []byte) error {
	if len(bytes.TrimSpace(out)) == 0 {
		return nil
	}
	f, err := os.CreateTemp(dir, consoleLogName+".*")
	if err != nil {
		return fmt.Errorf("saving console log: %w", err)
	}
	_, werr := f.Write(out)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("saving console log: %w", err)
	}
	if err := os.Rename(f.Name(), filepath.Join(dir, consoleLogName)); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("saving console log: %w", err)
	}
	return nil
}

// Timing of the boot and stop steps.
const (
	healthInterval   = 100 * time.Millisecond
	stopPollInterval = 250 * time.Millisecond
)
