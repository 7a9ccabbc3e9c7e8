// Package controller owns every function's state and every VM's life: it
// reconciles the folders in the functions directory with running instances,
// hands ready instances to the gateway (fewest requests in flight first),
// replaces a version without downtime, scales each function between its
// minimum and maximum replicas on its load (to zero when idle, booting one
// again for the next request), replaces crashed and unhealthy VMs, and stops
// everything on shutdown.
package controller

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	api "github.com/weaveworks/ignite/pkg/apis/ignite"
	meta "github.com/weaveworks/ignite/pkg/apis/meta/v1alpha1"

	"github.com/faasvm/appliance/guest/protocol"
	"github.com/faasvm/appliance/internal/function"
	"github.com/faasvm/appliance/internal/image"
	"github.com/faasvm/appliance/internal/vm"
)

// Images turns a function into the disks its VM boots from.
type Images interface {
	// RootFS returns the read-only root filesystem image for a runtime, or
	// for a user-named image when image is not empty.
	RootFS(ctx context.Context, runtime, image string) (string, error)
	// CodeDisk returns a read-only image of the folder dir (the
	// controller passes a version's private snapshot).
	CodeDisk(ctx context.Context, dir string) (string, error)
}

// Options configure a Controller. Zero durations take the defaults below.
type Options struct {
	FunctionsDir string
	Kernel       string // vmlinux path
	Initrd       string // initramfs path
	Template     *api.VM
	Defaults     function.Defaults
	// EngineNote says why the engine (and accelerator) was chosen.
	EngineNote string
	// BootTimeout bounds one VM boot (default 2m).
	BootTimeout time.Duration
	// StopTimeout bounds one VM's clean stop (default 10s).
	StopTimeout time.Duration
	// DrainTimeout bounds how long a replaced instance may finish its
	// in-flight requests before it is stopped anyway (default 30s).
	DrainTimeout time.Duration
	// QueueSize bounds the requests waiting for a function, for a free
	// slot or for a boot; 0: none may wait (refused at once, also while
	// the function boots).
	QueueSize int
	// MaxBackoff caps the restart backoff of a crashing function (default 1m).
	MaxBackoff time.Duration
	// ScaleInterval is how often the autoscaler looks at every function
	// (default 1s). Requests that have to wait also trigger it at once.
	ScaleInterval time.Duration
	// HealthInterval is how often each ready instance's agent is asked for
	// its health (default 2s); HealthTimeout bounds one check (default 2s);
	// after HealthThreshold failures in a row (default 3) the instance is
	// taken out, stopped and replaced.
	HealthInterval  time.Duration
	HealthTimeout   time.Duration
	HealthThreshold int
	// Prober runs the health checks (default: the agent's health check,
	// through vm.AgentClient).
	Prober Prober
	// Metrics receives boot times, cold starts and gauges (default: none).
	Metrics Recorder
	Logger  *slog.Logger
}

// Prober checks one instance's health.
type Prober interface {
	// Probe returns nil when the agent's control listener at endpoint,
	// asked with the VM's control secret, says it is healthy.
	Probe(ctx context.Context, endpoint, secret string) error
}

// Recorder receives what the controller measures (the appliance's
// Prometheus metrics). The controller calls it with its lock held: calls
// must be quick and must not call back into the controller.
type Recorder interface {
	// FunctionState reports a function's ready instances and the
	// requests waiting for one.
	FunctionState(function string, ready, queued int)
	// VMBooted records how long one VM took to boot.
	VMBooted(function string, took time.Duration)
	// ColdStart counts an invocation that waited for a VM to boot.
	ColdStart(function string)
	// Forget drops everything recorded about a removed function.
	Forget(function string)
}

func (o *Options) setDefaults() {
	if o.BootTimeout <= 0 {
		o.BootTimeout = 2 * time.Minute // above the engines' own bounds
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = 10 * time.Second
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 30 * time.Second
	}
	o.QueueSize = max(o.QueueSize, 0)
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = time.Minute
	}
	if o.ScaleInterval <= 0 {
		o.ScaleInterval = time.Second
	}
	if o.HealthInterval <= 0 {
		o.HealthInterval = 2 * time.Second
	}
	if o.HealthTimeout <= 0 {
		o.HealthTimeout = 2 * time.Second
	}
	if o.HealthThreshold <= 0 {
		o.HealthThreshold = 3
	}
	if o.Prober == nil {
		o.Prober = agentProber{vm.NewAgentClient(nil)}
	}
	if o.Metrics == nil {
		o.Metrics = nopRecorder{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Controller is the one place that knows what runs.
type Controller struct {
	opts   Options
	engine vm.Engine
	images Images
	rec    Recorder
	log    *slog.Logger

	// life is the context every VM and background goroutine hangs on.
	life   context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	fns    map[string]*fn
	closed bool
}

// New returns a controller. Call Sync for each function folder (the watcher
// does), and Close to stop every VM.
func New(opts Options, engine vm.Engine, images Images) *Controller {
	opts.setDefaults()
	life, cancel := context.WithCancel(context.Background())
	c := &Controller{
		opts:   opts,
		engine: engine,
		images: images,
		rec:    opts.Metrics,
		log:    opts.Logger,
		life:   life,
		cancel: cancel,
		fns:    map[string]*fn{},
	}
	c.wg.Add(1)
	go c.autoscaleLoop()
	return c
}

// instance states
const (
	instBooting   = "booting"
	instReady     = "ready"
	instDraining  = "draining"
	instUnhealthy = "unhealthy" // failed its health checks; being stopped
	instStopped   = "stopped"
)

type instance struct {
	id       string
	vm       *api.VM // the VM object it boots
	version  string
	spec     *function.Spec
	secret   string // the data secret: the gateway's requests carry it
	control  string // the control secret: only health checks and the engine's poweroff
	m        vm.Machine
	state    string
	inflight int
	started  time.Time     // when the VM became ready to serve
	drained  chan struct{} // closed when draining and inflight reaches 0
	// stopCalled is set by the one stopInstance call that stops the VM,
	// which also closes stopped.
	stopCalled bool
	stopped    chan struct{}
}

type fn struct {
	name      string
	spec      *function.Spec // the version that serves (or is being brought up first)
	disks     disks
	state     string
	lastErr   string
	warnings  []string
	instances []*instance
	changed   chan struct{} // closed and replaced on every change
	counts    Counts
	latency   latencies
	waiters   int
	startedAt time.Time
	removed   bool

	// autoscaler state, see autoscale
	lastRequest time.Time // the last request's arrival (or the deploy)
	desired     int       // the last decision
	belowSince  time.Time // since when fewer replicas would do (zero: not)
	peak        int       // the most replicas wanted since belowSince

	// reconcile serialisation: one worker per function, latest event wins
	working bool
	pending bool

	crashes     int       // consecutive crashes, for the backoff
	lastConsole string    // console tail of the last instance that died
	restartAt   time.Time // no boot for the serving version before this (backoff)
}

type disks struct{ rootfs, code string }

// notify wakes everything waiting on a change of f and publishes its
// gauges; c.mu is held.
func (c *Controller) notify(f *fn) {
	close(f.changed)
	f.changed = make(chan struct{})
	c.publish(f)
}

// publish reports f's gauges; c.mu is held. A removed function has none.
func (c *Controller) publish(f *fn) {
	if !f.removed {
		c.rec.FunctionState(f.name, f.count(instReady, ""), f.waiters)
	}
}

func (f *fn) count(state, version string) int {
	n := 0
	for _, in := range f.instances {
		if in.state == state && (version == "" || in.version == version) {
			n++
		}
	}
	return n
}

// pick returns the ready instance of the serving version with the fewest
// requests in flight and a free concurrency slot, or nil.
func (f *fn) pick() *instance {
	if f.spec == nil {
		return nil
	}
	var best *instance
	for _, in := range f.instances {
		if in.state != instReady || in.version != f.spec.Digest || in.inflight >= f.spec.Scale.Concurrency {
			continue
		}
		if best == nil || in.inflight < best.inflight {
			best = in
		}
	}
	return best
}

// Sync reconciles one function folder with what runs: deploys it, redeploys
// it when it changed, or removes it when the folder is gone. It returns at
// once; the work happens in the background, one run at a time per function.
func (c *Controller) Sync(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	f := c.fns[name]
	if f == nil {
		if _, err := os.Stat(filepath.Join(c.opts.FunctionsDir, name)); err != nil {
			return // never seen, already gone
		}
		f = &fn{name: name, state: StateDeploying, changed: make(chan struct{})}
		c.fns[name] = f
		c.publish(f)
	}
	if f.working {
		f.pending = true
		return
	}
	f.working = true
	c.wg.Add(1)
	go c.reconcileLoop(f)
}

func (c *Controller) reconcileLoop(f *fn) {
	defer c.wg.Done()
	for {
		c.reconcile(f)
		c.mu.Lock()
		if f.removed {
			// The folder may be back already: a fresh fn takes over.
			again := f.pending && !c.closed
			f.working = false
			c.mu.Unlock()
			if again {
				c.Sync(f.name)
			}
			return
		}
		if !f.pending || c.closed {
			f.working = false
			c.mu.Unlock()
			return
		}
		f.pending = false
		c.mu.Unlock()
	}
}

func (c *Controller) reconcile(f *fn) {
	log := c.log.With("function", f.name)
	dir := filepath.Join(c.opts.FunctionsDir, f.name)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		log.Info("function folder removed: stopping it")
		c.remove(f)
		return
	}
	spec, err := function.Load(dir, c.opts.Defaults, c.opts.Template, c.engine.Name())
	if err != nil {
		c.fail(f, StateInvalid, fmt.Errorf("invalid function: %w", err))
		return
	}
	// The version's snapshot: prepare makes the code disk from it; once
	// this deploy is over nothing reads it (the disks are cached).
	defer func() {
		if err := spec.RemoveSnapshot(); err != nil {
			log.Warn("removing the version's snapshot", "err", err)
		}
	}()
	c.mu.Lock()
	same := f.spec != nil && f.spec.Digest == spec.Digest && f.state != StateFailed && f.state != StateInvalid
	// A new version takes over with as many ready replicas as the old one
	// has (at least minReplicas, and at least one even when minReplicas is
	// 0: the deploy proves the version boots; it idles to zero later).
	want := max(spec.Scale.MinReplicas, 1)
	if f.spec != nil {
		want = max(want, f.count(instReady, f.spec.Digest))
	}
	want = min(want, spec.Scale.MaxReplicas)
	c.mu.Unlock()
	if same {
		log.Debug("function unchanged", "version", short(spec.Digest))
		return
	}
	log.Info("deploying", "version", short(spec.Digest), "runtime", spec.Runtime, "mode", spec.Mode, "replicas", want)
	for _, w := range spec.Warnings {
		log.Warn("function setting ignored", "warning", w)
	}
	d, err := c.prepare(c.life, spec)
	if err != nil {
		c.fail(f, StateFailed, err)
		return
	}
	started, err := c.bootN(f, spec, d, want)
	if err != nil {
		c.fail(f, StateFailed, err)
		return
	}
	c.promote(f, spec, d, started)
}

// bootN boots n instances of spec at once and waits for all of them; if
// any fails, it stops the others and returns the first error.
func (c *Controller) bootN(f *fn, spec *function.Spec, d disks, n int) ([]*instance, error) {
	ins := make([]*instance, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ins[i], errs[i] = c.boot(f, spec, d)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err == nil {
			continue
		}
		for _, in := range ins {
			if in != nil {
				c.stopInstance(f, in)
			}
		}
		return nil, err
	}
	return ins, nil
}

// prepare builds (or finds cached) the disks a version boots from. The code
// disk comes from the version's snapshot, the copy Load read, never from
// the user's folder, which may have changed (or become a symlink) since.
func (c *Controller) prepare(ctx context.Context, spec *function.Spec) (disks, error) {
	rootfs, err := c.images.RootFS(ctx, spec.Runtime, spec.Image)
	if err != nil {
		return disks{}, fmt.Errorf("preparing root filesystem for runtime %s: %w", spec.Runtime, err)
	}
	code, err := c.images.CodeDisk(ctx, spec.Snapshot)
	if err != nil {
		return disks{}, fmt.Errorf("snapshotting function code: %w", err)
	}
	return disks{rootfs: rootfs, code: code}, nil
}

// promote makes spec the serving version with the given ready instances and
// drains every instance of another version.
func (c *Controller) promote(f *fn, spec *function.Spec, d disks, ready []*instance) {
	c.mu.Lock()
	old := f.spec
	f.spec, f.disks = spec, d
	f.state, f.lastErr, f.warnings = StateReady, "", spec.Warnings
	f.startedAt = time.Now()
	f.lastRequest = f.startedAt // the idle timeout starts now
	f.belowSince = time.Time{}
	f.crashes, f.restartAt = 0, time.Time{}
	for _, in := range ready {
		if in.state == instBooting { // not if it died meanwhile
			in.state = instReady
		}
	}
	draining := 0
	for _, in := range f.instances {
		if in.version != spec.Digest && (in.state == instReady || in.state == instBooting) {
			c.drain(f, in)
			draining++
		}
	}
	c.notify(f)
	c.mu.Unlock()
	if old != nil {
		c.log.Info("new version serving, draining the old one", "function", f.name,
			"version", short(spec.Digest), "old_version", short(old.Digest), "draining", draining, "replicas", len(ready))
	} else {
		c.log.Info("function ready", "function", f.name, "version", short(spec.Digest), "replicas", len(ready))
	}
}

// drain takes in out of service: it gets no new request, and stops once
// its requests in flight are done (or after Options.DrainTimeout); c.mu is
// held.
func (c *Controller) drain(f *fn, in *instance) {
	in.state = instDraining
	if in.inflight == 0 {
		close(in.drained)
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		t := time.NewTimer(c.opts.DrainTimeout)
		defer t.Stop()
		select {
		case <-in.drained:
		case <-t.C:
			c.log.Warn("drain timed out, stopping anyway", "function", f.name, "vm_id", in.id)
		case <-c.life.Done():
		}
		c.stopInstance(f, in)
	}()
}

// fail records why a version could not be deployed. A version that already
// serves (or sleeps at zero replicas) keeps serving; the status says why the
// new one did not replace it.
func (c *Controller) fail(f *fn, state string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f.lastErr = err.Error()
	if f.spec != nil && (f.state == StateReady || f.state == StateIdle) {
		f.lastErr = "new version not deployed, previous version still serving: " + err.Error()
		c.log.Error("redeploy failed; previous version keeps serving", "function", f.name, "err", err)
	} else {
		f.state = state
		c.log.Error("function cannot serve", "function", f.name, "state", state, "err", err)
	}
	c.notify(f)
}

// remove stops every instance and forgets the function.
func (c *Controller) remove(f *fn) {
	c.mu.Lock()
	f.removed = true
	if c.fns[f.name] == f {
		delete(c.fns, f.name)
	}
	c.rec.Forget(f.name)
	ins := append([]*instance(nil), f.instances...)
	c.notify(f)
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, in := range ins {
		wg.Add(1)
		go func() { defer wg.Done(); c.stopInstance(f, in) }()
	}
	wg.Wait()
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
	v := vm.NewVM(f.name)
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
	in := &instance{
		id: string(v.UID), vm: v, version: spec.Digest, spec: spec, secret: secret, control: control,
		state: instBooting, drained: make(chan struct{}), stopped: make(chan struct{}),
	}
	f.instances = append(f.instances, in)
	c.notify(f)
	return in, nil
}

// start boots the VM of a registered instance and waits until its agent
// answers. On failure the instance is forgotten.
func (c *Controller) start(f *fn, in *instance, d disks) error {
	spec := in.spec
	agent := protocol.Config{
		Name:          f.name,
		Secret:        in.secret,
		ControlSecret: in.control,
		Mode:          spec.Mode,
		Runtime:       spec.Runtime,
		Handler:       spec.Handler,
		Command:       spec.Command,
		Env:           spec.Env,
		Timeout:       protocol.Duration(spec.Timeout),
		Network:       protocol.Network{Address: protocol.GuestAddress, Gateway: protocol.GuestGateway},
	}
	if spec.Egress {
		agent.Network.DNS = protocol.GuestDNS
	}
	ctx, cancel := context.WithTimeout(c.life, c.opts.BootTimeout)
	defer cancel()
	start := time.Now()
	c.log.Info("booting vm", "function", f.name, "vm_id", in.id, "version", short(spec.Digest), "engine", c.engine.Name())
	m, err := c.engine.Start(ctx, &vm.Spec{
		VM: in.vm, Kernel: c.opts.Kernel, Initrd: c.opts.Initrd,
		RootFS: d.rootfs, Code: d.code, Agent: agent, Egress: spec.Egress,
	})
	if err != nil {
		c.mu.Lock()
		f.instances = without(f.instances, in)
		c.notify(f)
		c.mu.Unlock()
		return fmt.Errorf("booting vm for %s: %w", f.name, err)
	}
	took := time.Since(start)
	c.mu.Lock()
	in.m, in.started = m, time.Now()
	if in.stopCalled { // stopped (removed, shut down) while it booted
		c.mu.Unlock()
		c.stopMachine(f, in.id, m)
		return fmt.Errorf("booting vm for %s: %w", f.name, errStoppedBooting)
	}
	if !f.removed {
		c.rec.VMBooted(f.name, took)
	}
	c.wg.Add(2)
	go c.watchInstance(f, in, m)
	go c.watchHealth(f, in, m)
	c.mu.Unlock()
	c.log.Info("vm ready", "function", f.name, "vm_id", in.id, "boot_seconds", took.Seconds(), "endpoint", m.Endpoint())
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
	if f.count(instReady, "") == 0 && f.count(instBooting, "") == 0 {
		f.state = StateFailed
	}
	c.notify(f)
	c.mu.Unlock()
	c.log.Error("vm crashed; replacing it after backoff", "function", f.name, "vm_id", in.id, "err", err, "backoff", delay)
	c.stopInstance(f, in) // removes its files
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.life.Done():
		return
	}
	c.mu.Lock()
	c.autoscale(f, time.Now(), false, "vm crashed")
	c.mu.Unlock()
}

// stopInstance stops one VM (once) and forgets it.
func (c *Controller) stopInstance(f *fn, in *instance) {
	c.mu.Lock()
	if in.stopCalled {
		c.mu.Unlock()
		return
	}
	in.stopCalled = true
	close(in.stopped)
	in.state = instStopped
	m := in.m
	f.instances = without(f.instances, in)
	c.notify(f)
	c.mu.Unlock()
	if m != nil {
		c.stopMachine(f, in.id, m)
	}
}

func (c *Controller) stopMachine(f *fn, id string, m vm.Machine) {
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.StopTimeout)
	defer cancel()
	if err := m.Stop(ctx); err != nil {
		c.log.Warn("stopping vm", "function", f.name, "vm_id", id, "err", err)
		return
	}
	c.log.Info("vm stopped", "function", f.name, "vm_id", id)
}

// Acquire waits, bounded by ctx, for a ready instance of name with a free
// concurrency slot, and reserves the slot. A request that has to wait
// counts against the queue bound and makes the autoscaler look at the
// function at once; a function at zero replicas boots one for it (the
// activator). Errors wrap ErrNotFound, ErrNotReady, ErrUnavailable or
// ErrOverloaded.
func (c *Controller) Acquire(ctx context.Context, name string) (Instance, error) {
	arrived := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	var queuedOn *fn // the fn whose queue this request waits in
	defer func() {
		if queuedOn != nil {
			queuedOn.waiters--
			c.publish(queuedOn)
		}
	}()
	for first := true; ; first = false {
		f := c.fns[name]
		if f == nil || f.removed {
			return Instance{}, fmt.Errorf("%w: %s", ErrNotFound, name)
		}
		if first {
			f.lastRequest = arrived
		}
		if in := f.pick(); in != nil {
			in.inflight++
			if queuedOn != nil && in.started.After(arrived) {
				f.counts.ColdStarts++
				c.rec.ColdStart(name)
			}
			return c.lease(f, in, arrived), nil
		}
		if err := c.unavailable(f); err != nil {
			return Instance{}, err
		}
		if queuedOn != f {
			if queuedOn != nil { // the function was removed and is back
				queuedOn.waiters--
				c.publish(queuedOn)
				queuedOn = nil
			}
			if f.waiters >= c.opts.QueueSize {
				f.counts.Rejected++
				return Instance{}, fmt.Errorf("%w: %s: %d requests already waiting", ErrOverloaded, name, f.waiters)
			}
			f.waiters++
			queuedOn = f
			c.publish(f)
		}
		// Each time it has to wait (another request may have taken the
		// slot it was woken for), the request asks for more instances.
		c.autoscale(f, time.Now(), false, "request waiting")
		ch := f.changed
		c.mu.Unlock()
		select {
		case <-ch:
			c.mu.Lock()
		case <-ctx.Done():
			c.mu.Lock()
			return Instance{}, fmt.Errorf("%w: %s: no instance ready in time (%v)", ErrNotReady, name, context.Cause(ctx))
		}
	}
}

// unavailable says why f cannot serve a request now, or nil when it can
// (perhaps after a boot); c.mu is held.
func (c *Controller) unavailable(f *fn) error {
	if c.closed {
		return fmt.Errorf("%w: %s: the appliance is shutting down", ErrUnavailable, f.name)
	}
	if f.count(instBooting, "") > 0 {
		return nil
	}
	switch {
	case f.state == StateInvalid:
	case f.state == StateFailed && (f.spec == nil || time.Now().Before(f.restartAt)):
		// Nothing ever served, or a crash's backoff runs: after it, a
		// request boots the version again.
	default:
		return nil
	}
	return fmt.Errorf("%w: %s: %s", ErrUnavailable, f.name, f.lastErr)
}

// lease hands out a reserved slot; c.mu is held.
func (c *Controller) lease(f *fn, in *instance, arrived time.Time) Instance {
	var once sync.Once
	return Instance{
		Function: f.name,
		VMID:     in.id,
		Endpoint: in.m.Endpoint(),
		Secret:   in.secret,
		Timeout:  in.spec.Timeout,
		Release: func(status int) {
			once.Do(func() {
				took := time.Since(arrived)
				c.mu.Lock()
				defer c.mu.Unlock()
				in.inflight--
				f.counts.Total++
				if status == 0 || status >= 500 {
					f.counts.Errors++
				}
				f.latency.add(took)
				if in.state == instDraining && in.inflight == 0 {
					close(in.drained)
				}
				c.notify(f)
			})
		},
	}
}

// List returns every function's status, sorted by name.
func (c *Controller) List(ctx context.Context) []Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Status, 0, len(c.fns))
	for _, f := range c.fns {
		out = append(out, c.status(f))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Get returns one function's status.
func (c *Controller) Get(ctx context.Context, name string) (Status, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.fns[name]
	if f == nil {
		return Status{}, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	return c.status(f), nil
}

// Logs returns the last lines of the console of the function's newest VM,
// or of the last one that died.
func (c *Controller) Logs(ctx context.Context, name string, lines int) (string, error) {
	c.mu.Lock()
	f := c.fns[name]
	if f == nil {
		c.mu.Unlock()
		return "", fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	var path string
	for _, in := range f.instances {
		if in.m != nil {
			path = in.m.ConsoleLog()
		}
	}
	last := f.lastConsole
	c.mu.Unlock()
	if path == "" {
		return last, nil
	}
	return tail(path, lines), nil
}

// status renders f; c.mu is held.
func (c *Controller) status(f *fn) Status {
	s := Status{
		Name:        f.name,
		State:       f.state,
		Engine:      c.engine.Name(),
		EngineNote:  c.opts.EngineNote,
		StartedAt:   f.startedAt,
		LastError:   f.lastErr,
		Warnings:    f.warnings,
		Invocations: f.counts,
		Replicas: Replicas{
			Ready:    f.count(instReady, ""),
			Booting:  f.count(instBooting, ""),
			Draining: f.count(instDraining, ""),
			Desired:  f.desired,
		},
		Queued:  f.waiters,
		Latency: f.latency.summary(),
	}
	for _, in := range f.instances {
		s.InFlight += in.inflight
	}
	if f.spec != nil {
		s.Runtime, s.Mode, s.Handler, s.Version = f.spec.Runtime, f.spec.Mode, f.spec.Handler, short(f.spec.Digest)
		for _, in := range f.instances {
			if in.state == instReady && in.version == f.spec.Digest {
				s.VMID = in.id
			}
		}
		sc := f.spec.Scale
		s.Scale = Scale{
			MinReplicas: sc.MinReplicas, MaxReplicas: sc.MaxReplicas, Concurrency: sc.Concurrency,
			IdleTimeout: sc.IdleTimeout.String(), TargetUtilization: sc.TargetUtilization,
		}
	}
	return s
}

// Close stops every VM and waits for background work, bounded by ctx.
func (c *Controller) Close(ctx context.Context) error {
	c.mu.Lock()
	c.closed = true
	fns := make([]*fn, 0, len(c.fns))
	for _, f := range c.fns {
		fns = append(fns, f)
		c.notify(f) // waiting requests give up
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, f := range fns {
		c.mu.Lock()
		ins := append([]*instance(nil), f.instances...)
		c.mu.Unlock()
		for _, in := range ins {
			wg.Add(1)
			go func() { defer wg.Done(); c.stopInstance(f, in) }()
		}
	}
	wg.Wait()
	c.cancel()
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for controller work to finish: %w", ctx.Err())
	}
}

func without(ins []*instance, x *instance) []*instance {
	out := ins[:0]
	for _, in := range ins {
		if in != x {
			out = append(out, in)
		}
	}
	return out
}

func newSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("making vm secret: %w", err)
	}
	return hex.EncodeToString(b), nil
}

func short(digest string) string {
	if len(digest) > 12 {
		return digest[:12]
	}
	return digest
}
