// Package controller owns every function's state and every VM's life: it
// reconciles the folders in the functions directory with running instances,
// hands ready instances to the gateway, replaces a version without downtime,
// restarts crashed VMs with backoff, and stops everything on shutdown.
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

	"github.com/faasvm/appliance/guest/protocol"
	"github.com/faasvm/appliance/internal/function"
	"github.com/faasvm/appliance/internal/vm"
)

// Images turns a function into the disks its VM boots from.
type Images interface {
	// RootFS returns the read-only root filesystem image for a runtime, or
	// for a user-named image when image is not empty.
	RootFS(ctx context.Context, runtime, image string) (string, error)
	// CodeDisk returns a read-only snapshot image of the folder and the
	// digest of what it holds.
	CodeDisk(ctx context.Context, dir string) (path, digest string, err error)
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
	// BootTimeout bounds one VM boot (default 60s).
	BootTimeout time.Duration
	// StopTimeout bounds one VM's clean stop (default 10s).
	StopTimeout time.Duration
	// DrainTimeout bounds how long a replaced instance may finish its
	// in-flight requests before it is stopped anyway (default 30s).
	DrainTimeout time.Duration
	// QueueSize bounds the requests waiting for a function (default 64).
	QueueSize int
	// MaxBackoff caps the restart backoff of a crashing function (default 1m).
	MaxBackoff time.Duration
	Logger     *slog.Logger
}

func (o *Options) setDefaults() {
	if o.BootTimeout <= 0 {
		o.BootTimeout = 60 * time.Second
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = 10 * time.Second
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 30 * time.Second
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 64
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = time.Minute
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
	return &Controller{
		opts:   opts,
		engine: engine,
		images: images,
		log:    opts.Logger,
		life:   life,
		cancel: cancel,
		fns:    map[string]*fn{},
	}
}

// instance states
const (
	instBooting  = "booting"
	instReady    = "ready"
	instDraining = "draining"
	instStopped  = "stopped"
)

type instance struct {
	id       string
	version  string
	spec     *function.Spec
	secret   string
	m        vm.Machine
	state    string
	inflight int
	started  time.Time
	drained  chan struct{} // closed when draining and inflight reaches 0
	// stopCalled is set by the one stopInstance call that stops the VM.
	stopCalled bool
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
	waiters   int
	startedAt time.Time
	removed   bool

	// reconcile serialisation: one worker per function, latest event wins
	working bool
	pending bool

	crashes     int       // consecutive crashes, for the backoff
	lastConsole string    // console tail of the last instance that died
	restartAt   time.Time // no restart before this
}

type disks struct{ rootfs, code string }

func (f *fn) broadcast() {
	close(f.changed)
	f.changed = make(chan struct{})
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
	c.mu.Lock()
	same := f.spec != nil && f.spec.Digest == spec.Digest && f.state != StateFailed && f.state != StateInvalid
	c.mu.Unlock()
	if same {
		log.Debug("function unchanged", "version", short(spec.Digest))
		return
	}
	log.Info("deploying", "version", short(spec.Digest), "runtime", spec.Runtime, "mode", spec.Mode)
	for _, w := range spec.Warnings {
		log.Warn("function setting ignored", "warning", w)
	}
	d, err := c.prepare(c.life, spec)
	if err != nil {
		c.fail(f, StateFailed, err)
		return
	}
	want := max(spec.Scale.MinReplicas, 1)
	started := make([]*instance, 0, want)
	for range want {
		in, err := c.boot(f, spec, d)
		if err != nil {
			for _, s := range started {
				c.stopInstance(f, s)
			}
			c.fail(f, StateFailed, err)
			return
		}
		started = append(started, in)
	}
	c.promote(f, spec, d, started)
}

// prepare builds (or finds cached) the disks a version boots from.
func (c *Controller) prepare(ctx context.Context, spec *function.Spec) (disks, error) {
	rootfs, err := c.images.RootFS(ctx, spec.Runtime, spec.Image)
	if err != nil {
		return disks{}, fmt.Errorf("preparing root filesystem for runtime %s: %w", spec.Runtime, err)
	}
	code, _, err := c.images.CodeDisk(ctx, spec.Dir)
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
	f.crashes = 0
	for _, in := range ready {
		in.state = instReady
	}
	var draining []*instance
	for _, in := range f.instances {
		if in.version != spec.Digest && in.state != instDraining && in.state != instStopped {
			in.state = instDraining
			if in.inflight == 0 {
				close(in.drained)
			}
			draining = append(draining, in)
		}
	}
	f.broadcast()
	c.mu.Unlock()
	if old != nil {
		c.log.Info("new version serving, draining the old one", "function", f.name,
			"version", short(spec.Digest), "old_version", short(old.Digest), "draining", len(draining))
	} else {
		c.log.Info("function ready", "function", f.name, "version", short(spec.Digest))
	}
	for _, in := range draining {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			select {
			case <-in.drained:
			case <-time.After(c.opts.DrainTimeout):
				c.log.Warn("drain timed out, stopping anyway", "function", f.name, "vm_id", in.id)
			case <-c.life.Done():
			}
			c.stopInstance(f, in)
		}()
	}
}

// fail records why a version could not be deployed. A version that already
// serves keeps serving; the status says why the new one did not replace it.
func (c *Controller) fail(f *fn, state string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f.lastErr = err.Error()
	if f.spec != nil && f.count(instReady, f.spec.Digest) > 0 {
		f.lastErr = "new version not deployed, previous version still serving: " + err.Error()
		c.log.Error("redeploy failed; previous version keeps serving", "function", f.name, "err", err)
	} else {
		f.state = state
		c.log.Error("function cannot serve", "function", f.name, "state", state, "err", err)
	}
	f.broadcast()
}

// remove stops every instance and forgets the function.
func (c *Controller) remove(f *fn) {
	c.mu.Lock()
	f.removed = true
	if c.fns[f.name] == f {
		delete(c.fns, f.name)
	}
	ins := append([]*instance(nil), f.instances...)
	f.broadcast()
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, in := range ins {
		wg.Add(1)
		go func() { defer wg.Done(); c.stopInstance(f, in) }()
	}
	wg.Wait()
}

// boot starts one VM of spec and registers it as booting.
func (c *Controller) boot(f *fn, spec *function.Spec, d disks) (*instance, error) {
	secret, err := newSecret()
	if err != nil {
		return nil, err
	}
	v := vm.NewVM(f.name)
	v.Spec.CPUs = spec.VM.Spec.CPUs
	v.Spec.Memory = spec.VM.Spec.Memory
	v.Spec.Kernel.CmdLine = ""
	v.Spec.Image = spec.VM.Spec.Image
	agent := protocol.Config{
		Name:    f.name,
		Secret:  secret,
		Mode:    spec.Mode,
		Runtime: spec.Runtime,
		Handler: spec.Handler,
		Command: spec.Command,
		Env:     spec.Env,
		Timeout: protocol.Duration(spec.Timeout),
		Network: protocol.Network{Address: protocol.GuestAddress, Gateway: protocol.GuestGateway},
	}
	if spec.Egress {
		agent.Network.DNS = protocol.GuestDNS
	}
	in := &instance{
		id: string(v.UID), version: spec.Digest, spec: spec, secret: secret,
		state: instBooting, drained: make(chan struct{}),
	}
	c.mu.Lock()
	f.instances = append(f.instances, in)
	f.broadcast()
	c.mu.Unlock()

	ctx, cancel := context.WithTimeout(c.life, c.opts.BootTimeout)
	defer cancel()
	start := time.Now()
	c.log.Info("booting vm", "function", f.name, "vm_id", in.id, "version", short(spec.Digest), "engine", c.engine.Name())
	m, err := c.engine.Start(ctx, &vm.Spec{
		VM: v, Kernel: c.opts.Kernel, Initrd: c.opts.Initrd,
		RootFS: d.rootfs, Code: d.code, Agent: agent, Egress: spec.Egress,
	})
	if err != nil {
		c.mu.Lock()
		f.instances = without(f.instances, in)
		f.broadcast()
		c.mu.Unlock()
		return nil, fmt.Errorf("booting vm for %s: %w", f.name, err)
	}
	c.log.Info("vm ready", "function", f.name, "vm_id", in.id, "boot_seconds", time.Since(start).Seconds(), "endpoint", m.Endpoint())
	c.mu.Lock()
	in.m, in.started = m, time.Now()
	c.mu.Unlock()
	c.wg.Add(1)
	go c.watchInstance(f, in, m)
	return in, nil
}

// watchInstance notices a VM that dies on its own and replaces it.
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
	delay := min(time.Second<<min(f.crashes-1, 10), c.opts.MaxBackoff)
	f.restartAt = time.Now().Add(delay)
	if f.count(instReady, "") == 0 && f.count(instBooting, "") == 0 {
		f.state = StateFailed
	}
	f.broadcast()
	spec, d, removed := f.spec, f.disks, f.removed
	c.mu.Unlock()
	c.log.Error("vm crashed; restarting after backoff", "function", f.name, "vm_id", in.id, "err", err, "backoff", delay)
	c.stopInstance(f, in) // removes its files
	if removed || spec == nil || spec.Digest != in.version {
		return
	}
	select {
	case <-time.After(delay):
	case <-c.life.Done():
		return
	}
	c.mu.Lock()
	stale := f.removed || f.spec == nil || f.spec.Digest != spec.Digest ||
		f.count(instReady, spec.Digest)+f.count(instBooting, spec.Digest) >= max(spec.Scale.MinReplicas, 1)
	c.mu.Unlock()
	if stale {
		return
	}
	nin, err := c.boot(f, spec, d)
	if err != nil {
		c.mu.Lock()
		f.lastErr = "restart failed: " + err.Error()
		f.broadcast()
		c.mu.Unlock()
		c.log.Error("restart failed", "function", f.name, "err", err)
		return
	}
	c.mu.Lock()
	if f.spec != nil && f.spec.Digest == nin.version && !f.removed {
		nin.state = instReady
		f.state = StateReady
		f.broadcast()
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.stopInstance(f, nin)
}

// stopInstance stops one VM (once) and forgets it.
func (c *Controller) stopInstance(f *fn, in *instance) {
	c.mu.Lock()
	if in.stopCalled {
		c.mu.Unlock()
		return
	}
	in.stopCalled = true
	in.state = instStopped
	m := in.m
	f.instances = without(f.instances, in)
	f.broadcast()
	c.mu.Unlock()
	if m == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.StopTimeout)
	defer cancel()
	if err := m.Stop(ctx); err != nil {
		c.log.Warn("stopping vm", "function", f.name, "vm_id", in.id, "err", err)
		return
	}
	c.log.Info("vm stopped", "function", f.name, "vm_id", in.id)
}

// Acquire waits, bounded by ctx, for a ready instance of name with a free
// concurrency slot, and reserves the slot. Errors wrap ErrNotFound,
// ErrNotReady, ErrUnavailable or ErrOverloaded.
func (c *Controller) Acquire(ctx context.Context, name string) (Instance, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	queued := false
	var f *fn
	defer func() {
		if queued {
			f.waiters--
		}
	}()
	for {
		f = c.fns[name]
		if f == nil || f.removed {
			return Instance{}, fmt.Errorf("%w: %s", ErrNotFound, name)
		}
		if in := f.pick(); in != nil {
			in.inflight++
			return c.lease(f, in), nil
		}
		if (f.state == StateInvalid || f.state == StateFailed) && f.count(instBooting, "") == 0 {
			return Instance{}, fmt.Errorf("%w: %s: %s", ErrUnavailable, name, f.lastErr)
		}
		if !queued {
			if f.waiters >= c.opts.QueueSize {
				return Instance{}, fmt.Errorf("%w: %s: %d requests already waiting", ErrOverloaded, name, f.waiters)
			}
			f.waiters++
			queued = true
		}
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

// lease hands out a reserved slot; c.mu is held.
func (c *Controller) lease(f *fn, in *instance) Instance {
	var once sync.Once
	return Instance{
		Function: f.name,
		VMID:     in.id,
		Endpoint: in.m.Endpoint(),
		Secret:   in.secret,
		Timeout:  in.spec.Timeout,
		Release: func(status int) {
			once.Do(func() {
				c.mu.Lock()
				defer c.mu.Unlock()
				in.inflight--
				f.counts.Total++
				if status == 0 || status >= 500 {
					f.counts.Errors++
				}
				if in.state == instDraining && in.inflight == 0 {
					close(in.drained)
				}
				f.broadcast()
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
		},
	}
	if f.spec != nil {
		s.Runtime, s.Mode, s.Handler, s.Version = f.spec.Runtime, f.spec.Mode, f.spec.Handler, short(f.spec.Digest)
		for _, in := range f.instances {
			if in.state == instReady && in.version == f.spec.Digest {
				s.VMID = in.id
			}
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
