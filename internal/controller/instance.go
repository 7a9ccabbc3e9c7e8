package controller

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	api "github.com/weaveworks/ignite/pkg/apis/ignite"
	meta "github.com/weaveworks/ignite/pkg/apis/meta/v1alpha1"

	"github.com/faasvm/appliance/guest/protocol"
	"github.com/faasvm/appliance/internal/function"
	"github.com/faasvm/appliance/internal/image"
	"github.com/faasvm/appliance/internal/vm"
)

// Instance lifecycle: register, boot, stop, and the watches on a running
// VM (its exit, its health).

// instance states
const (
	instBooting   = "booting"
	instReady     = "ready"
	instDraining  = "draining"
	instUnhealthy = "unhealthy" // failed its health checks; being stopped
	instStopped   = "stopped"
)

type instance struct {
	id      string
	vm      *api.VM // the VM object it boots
	version string
	spec    *function.Spec
	secret  string // the data secret: the gateway's requests carry it
	control string // the control secret: only health checks and the engine's poweroff
	m       vm.Machine
	state   string
	started time.Time // when the VM became ready to serve
	// how it started (StartBoot, StartRestore; "" while starting) and how
	// long that took
	method    string
	startTook time.Duration
	pss       atomic.Int64  // last PSS sample (bytes), 0: none
	pssAt     time.Time     // when it was taken; the health watch's
	drained   chan struct{} // closed when draining and inflight reaches 0
	check     chan struct{} // asks the health watch for a check now (a suspect)

	// data plane, guarded by the function's admission lock
	inflight      int
	serving       bool // in the admission's serving set
	suspect       bool // unreachable from the gateway: out until a check passes
	draining      bool
	drainedClosed bool
	// stopCalled is set by the one stopInstance call that stops the VM,
	// which also closes stopped.
	stopCalled bool
	stopped    chan struct{}
	// abortBoot cancels the boot in progress (set while booting).
	abortBoot context.CancelFunc
	// disks it boots from (gc.go)
	disks diskSet
	// queuedBoot: waiting for a slot under Options.MaxConcurrentBoots.
	queuedBoot bool
	// memRelease gives back its memory reservation (memory.go); nil: none.
	memRelease func()
}

// Boot errors that are nobody's fault.
var (
	// errClosed: the controller is shutting down and boots nothing more.
	errClosed = errors.New("controller closed")
	// errStoppedBooting: the instance was stopped (its function removed,
	// the appliance shut down) while its VM booted.
	errStoppedBooting = errors.New("stopped while booting")
)

// boot starts one VM of spec, registered as booting, and waits for it.
func (c *Controller) boot(f *fn, spec *function.Spec, d disks) (*instance, error) {
	c.mu.Lock()
	in, err := c.register(f, spec)
	if in != nil {
		in.disks = d.set()
	}
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if err := c.start(f, in, d); err != nil {
		return nil, err
	}
	return in, nil
}

// register adds a booting instance of spec to f; c.mu is held.
func (c *Controller) register(f *fn, spec *function.Spec) (*instance, error) {
	if c.closed {
		return nil, fmt.Errorf("booting vm for %s: %w", f.name, errClosed)
	}
	secret, err := newSecret()
	if err != nil {
		return nil, err
	}
	control, err := newSecret()
	if err != nil {
		return nil, err
	}
	v := newVMObject(f.name, spec)
	in := &instance{
		id: string(v.UID), vm: v, version: spec.Digest, spec: spec, secret: secret, control: control,
		state: instBooting, drained: make(chan struct{}), stopped: make(chan struct{}), check: make(chan struct{}, 1),
	}
	f.instances = append(f.instances, in)
	c.notify(f)
	return in, nil
}

// newVMObject is the VM object of a new VM of spec.
func newVMObject(name string, spec *function.Spec) *api.VM {
	v := vm.NewVM(name)
	v.Spec.CPUs = spec.VM.Spec.CPUs
	v.Spec.Memory = spec.VM.Spec.Memory
	v.Spec.DiskSize = spec.VM.Spec.DiskSize
	v.Spec.Sandbox = spec.VM.Spec.Sandbox
	v.Spec.Kernel.OCI = spec.VM.Spec.Kernel.OCI
	// Ignite's default command line is for its own kernel; the qemu
	// engine has its own, and extra arguments are not a function setting.
	v.Spec.Kernel.CmdLine = ""
	// The image the root filesystem really comes from (what the ignite
	// engine boots), not the template's.
	ref := spec.Image
	if ref == "" {
		ref = image.RuntimeImageTag(spec.Runtime)
	}
	if oci, err := meta.NewOCIImageRef(ref); err == nil {
		v.Spec.Image.OCI = oci
	}
	return v
}

// agentConfig is the guest agent's configuration for a VM of spec with
// the given per-VM secrets.
func agentConfig(name string, spec *function.Spec, d disks, secret, control string) protocol.Config {
	agent := protocol.Config{
		Name:          name,
		Secret:        secret,
		ControlSecret: control,
		Mode:          spec.Mode,
		Runtime:       spec.Runtime,
		Handler:       spec.Handler,
		Command:       spec.Command,
		Env:           spec.Env,
		Secrets:       d.secrets,
		Template:      spec.Template,
		Function:      spec.Function,
		MemoryMB:      int(spec.VM.Spec.Memory.MBytes()),
		Deps:          d.deps != "",
		Timeout:       protocol.Duration(spec.Timeout),
		Network:       protocol.Network{Address: protocol.GuestAddress, Gateway: protocol.GuestGateway},
	}
	if spec.Egress {
		agent.Network.DNS = protocol.GuestDNS
	}
	return agent
}

// start boots the VM of a registered instance and waits until its agent
// answers. On failure the instance is forgotten.
func (c *Controller) start(f *fn, in *instance, d disks) error {
	spec := in.spec
	agent := agentConfig(f.name, spec, d, in.secret, in.control)
	// Cancelled when the instance is stopped; each attempt (restore, boot)
	// has its own BootTimeout.
	ctx, cancel := context.WithCancel(c.life)
	defer cancel()
	c.mu.Lock()
	in.abortBoot = cancel
	aborted := in.stopCalled
	c.mu.Unlock()
	if aborted {
		c.mu.Lock()
		f.instances = without(f.instances, in)
		c.notify(f)
		c.mu.Unlock()
		return fmt.Errorf("booting vm for %s: %w", f.name, errStoppedBooting)
	}
	release, err := c.reserveMemory(ctx, f, vmBytes(spec), true)
	if err != nil {
		c.mu.Lock()
		f.instances = without(f.instances, in)
		c.notify(f)
		c.mu.Unlock()
		return fmt.Errorf("booting vm for %s: %w", f.name, err)
	}
	c.mu.Lock()
	in.memRelease = release
	c.mu.Unlock()
	m, method, took, err := c.startMachine(ctx, f, in, &vm.Spec{
		VM: in.vm, Kernel: c.opts.Kernel, Initrd: c.opts.Initrd,
		RootFS: d.rootfs, Code: d.code, Deps: d.deps, Agent: agent, Egress: spec.Egress,
	})
	if err != nil {
		c.mu.Lock()
		f.instances = without(f.instances, in)
		c.notify(f)
		stopped := in.stopCalled
		c.mu.Unlock()
		c.releaseMemory(in)
		if stopped {
			err = fmt.Errorf("%w: %w", errStoppedBooting, err)
		}
		return fmt.Errorf("booting vm for %s: %w", f.name, err)
	}
	c.mu.Lock()
	in.m, in.started, in.method, in.startTook = m, time.Now(), method, took
	if in.stopCalled { // stopped (removed, shut down) while it booted
		c.mu.Unlock()
		c.stopMachine(f, in.id, m)
		c.releaseMemory(in)
		return fmt.Errorf("booting vm for %s: %w", f.name, errStoppedBooting)
	}
	c.memoryStarted(f)
	if !f.removed {
		c.rec.VMStarted(f.name, method, took)
	}
	c.wg.Add(2)
	go c.watchInstance(f, in, m)
	go c.watchHealth(f, in, m)
	if c.opts.Logs != nil {
		c.wg.Add(1)
		go c.collectLogs(f, in, m)
	}
	c.mu.Unlock()
	c.log.Info("vm ready", "function", f.name, "vm_id", in.id, "start", method, "start_seconds", took.Seconds(), "endpoint", m.Endpoint())
	return nil
}

// backoff is the wait before the n-th consecutive restart.
func (c *Controller) backoff(n int) time.Duration {
	return min(time.Second<<min(max(n, 1)-1, 10), c.opts.MaxBackoff)
}

// watchInstance notices a VM that dies on its own and, after a backoff,
// lets the autoscaler replace it.
func (c *Controller) watchInstance(f *fn, in *instance, m vm.Machine) {
	defer c.wg.Done()
	err := m.Wait(c.life)
	c.mu.Lock()
	if in.state == instStopped || c.life.Err() != nil {
		c.mu.Unlock()
		return
	}
	in.state = instStopped
	f.instances = without(f.instances, in)
	f.lastConsole = tail(m.ConsoleLog(), 50)
	f.lastErr = fmt.Sprintf("vm %s exited unexpectedly: %v", in.id, err)
	if time.Since(in.started) > time.Minute {
		f.crashes = 0
	}
	f.crashes++
	delay := c.backoff(f.crashes)
	f.restartAt = time.Now().Add(delay)
	f.waitCrash = f.crashes <= waitCrashes
	if f.count(instReady, "") == 0 && f.count(instBooting, "") == 0 {
		f.state = StateFailed
	}
	c.notify(f)
	c.mu.Unlock()
	c.log.Error("vm crashed; replacing it after backoff", "function", f.name, "vm_id", in.id, "err", err, "backoff", delay)
	c.instanceGone(f, in)
	c.stopInstance(f, in) // removes its files
	if !c.sleep(delay) {
		return
	}
	c.mu.Lock()
	c.autoscale(f, time.Now(), false, "vm crashed")
	c.mu.Unlock()
}

// sleep waits for d; false when the controller closed first.
func (c *Controller) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.life.Done():
		return false
	}
}

// stopInstance stops one VM (once) and forgets it.
func (c *Controller) stopInstance(f *fn, in *instance) {
	c.stopInstanceWithin(context.Background(), f, in)
}

// stopInstanceWithin is stopInstance bounded by ctx as well as by
// Options.StopTimeout: past the bound the engine kills the VM.
func (c *Controller) stopInstanceWithin(ctx context.Context, f *fn, in *instance) {
	c.mu.Lock()
	if in.stopCalled {
		c.mu.Unlock()
		return
	}
	in.stopCalled = true
	close(in.stopped)
	if in.abortBoot != nil && in.m == nil {
		in.abortBoot() // still booting: give up the boot
	}
	in.state = instStopped
	m := in.m
	f.instances = without(f.instances, in)
	c.notify(f)
	c.instanceGone(f, in)
	c.mu.Unlock()
	if m != nil {
		c.stopMachineWithin(ctx, f, in.id, m)
		c.releaseMemory(in) // not before its QEMU is gone
	}
}

func (c *Controller) stopMachine(f *fn, id string, m vm.Machine) {
	c.stopMachineWithin(context.Background(), f, id, m)
}

func (c *Controller) stopMachineWithin(ctx context.Context, f *fn, id string, m vm.Machine) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.StopTimeout)
	defer cancel()
	if err := m.Stop(ctx); err != nil {
		c.log.Warn("stopping vm", "function", f.name, "vm_id", id, "err", err)
		return
	}
	c.log.Info("vm stopped", "function", f.name, "vm_id", id)
}

// watchHealth checks a ready instance every HealthInterval; after
// HealthThreshold failures in a row it takes the instance out of service,
// stops it, and lets the autoscaler replace it. It ends with the instance.
func (c *Controller) watchHealth(f *fn, in *instance, m vm.Machine) {
	defer c.wg.Done()
	t := time.NewTicker(c.opts.HealthInterval)
	defer t.Stop()
	failures := 0
	c.samplePSS(f, in, m)
	for {
		suspect := false
		select {
		case <-in.stopped:
			return
		case <-c.life.Done():
			return
		case <-t.C:
		case <-in.check:
			suspect = true
		}
		c.mu.Lock()
		serving := in.state == instReady
		c.mu.Unlock()
		if !serving {
			failures = 0 // booting or draining: not checked
			continue
		}
		ctx, cancel := context.WithTimeout(c.life, c.opts.HealthTimeout)
		err := c.opts.Prober.Probe(ctx, m.ControlEndpoint(), in.control)
		cancel()
		if err == nil {
			failures = 0
			c.samplePSS(f, in, m)
			if suspect {
				c.clearSuspect(f, in)
			}
			continue
		}
		if c.life.Err() != nil {
			return
		}
		failures++
		if suspect {
			// The gateway could not connect and the agent does not answer
			// either: no need to wait for more failures.
			failures = max(failures, c.opts.HealthThreshold)
		}
		c.log.Warn("health check failed", "function", f.name, "vm_id", in.id, "failures", failures, "threshold", c.opts.HealthThreshold, "err", err)
		if failures < c.opts.HealthThreshold {
			continue
		}
		c.mu.Lock()
		if in.state != instReady {
			c.mu.Unlock()
			failures = 0
			continue
		}
		in.state = instUnhealthy
		f.lastErr = fmt.Sprintf("vm %s failed %d health checks in a row (last: %v); replaced", in.id, failures, err)
		c.notify(f)
		c.autoscale(f, time.Now(), false, "vm unhealthy")
		c.mu.Unlock()
		c.log.Error("vm unhealthy: stopping it", "function", f.name, "vm_id", in.id, "err", err)
		c.stopInstance(f, in)
		return
	}
}

// clearSuspect puts a suspect that passed its check back in service.
func (c *Controller) clearSuspect(f *fn, in *instance) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f.dp.mu.Lock()
	was := in.suspect
	in.suspect = false
	f.dp.mu.Unlock()
	if was {
		c.log.Info("suspect vm answers its health check: back in service", "function", f.name, "vm_id", in.id)
		c.notify(f)
	}
}

// agentProber checks an instance through the agent client the engines use:
// healthy only when the agent answers 200.
type agentProber struct{ c *vm.AgentClient }

func (p agentProber) Probe(ctx context.Context, endpoint, secret string) error {
	_, _, err := p.c.Health(ctx, endpoint, secret)
	if err != nil {
		return fmt.Errorf("health check of %s: %w", endpoint, err)
	}
	return nil
}
