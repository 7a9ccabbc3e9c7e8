// Package controller owns every function's state and every VM's life: it
// reconciles the folders in the functions directory with running instances,
// hands ready instances to the gateway (fewest requests in flight first),
// replaces a version without downtime, scales each function between its
// minimum and maximum replicas on its load (to zero when idle, booting one
// again for the next request), replaces crashed and unhealthy VMs, and stops
// everything on shutdown.
//
// One job per file:
//
//	controller.go  the Controller, its options, New and Close
//	reconcile.go   Sync: folder → spec → disks → ready instances; redeploy, fail, remove
//	instance.go    one instance's life: register, boot, stop, crash and health watches
//	admission.go   the data plane: per-function state, pick, Acquire, the FIFO of waiting requests, leases, suspects
//	status.go      the read model: List, Get, Logs
//	snapshot.go    VM snapshots per version: key, build, restore, fallback, pruning; PSS
//	scale.go       the autoscaler
//	types.go       what the API and the gateway see: states, errors, Status, Instance
//	latency.go     the latency ring; tail.go the console tail
package controller

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	api "github.com/weaveworks/ignite/pkg/apis/ignite"

	"github.com/faasvm/appliance/internal/function"
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
	// UploadsDir holds uploaded functions ("": none); a name in
	// FunctionsDir wins over one here.
	UploadsDir string
	Kernel     string // vmlinux path
	Initrd     string // initramfs path
	Template   *api.VM
	Defaults   function.Defaults
	// EngineNote says why the engine (and accelerator) was chosen.
	EngineNote string
	// PrepareTimeout bounds one deploy's prepare: root filesystem build or
	// pull, code disk and dependency install (default 15m).
	PrepareTimeout time.Duration
	// MaxConcurrentBoots is the most VM boots at once, controller-wide;
	// the others wait in line, first come first served (0: no limit).
	MaxConcurrentBoots int
	// MemoryBudget bounds the guests' committed memory in bytes: each VM
	// counts its RAM plus VMOverhead; a start that does not fit scales
	// idle functions to zero first, else is refused (memory.go). 0: no
	// budget.
	MemoryBudget int64
	// MemoryRetry is how long requests for a function whose start was
	// refused for memory are refused at once, and how often refused
	// starts are tried again besides at each VM stop (default 5s).
	MemoryRetry time.Duration
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
	// Logs stores each function's own output, followed from every
	// instance's agent (default: not collected).
	Logs LogSink
	// SecretsDir holds the operator's secrets, one file per secret; ""
	// offers none (a function naming one is invalid).
	SecretsDir string
	// SnapshotsDir holds the versions' VM snapshots (snapshot.go), one
	// directory per function and key; "" or an engine without
	// vm.Snapshotter: every instance boots.
	SnapshotsDir string
	// Collector removes the disks no instance or kept version uses (gc.go;
	// nil: none is removed). KeepVersions is how many versions each
	// function served before keep their disks (0: none); GCInterval is
	// how often it runs besides after deploys (default 10m); GCReferenced,
	// when set, names more paths that stay (snapshots' disks).
	Collector    Collector
	KeepVersions int
	GCInterval   time.Duration
	GCReferenced func() []string
	// PrepareRetry is the first delay before a deploy whose disks failed
	// for a transient cause (full disk, docker engine away) is tried again;
	// it doubles up to MaxBackoff (default 5s).
	PrepareRetry time.Duration
	Logger       *slog.Logger
}

// Prober checks one instance's health.
type Prober interface {
	// Probe returns nil when the agent's control listener at endpoint,
	// asked with the VM's control secret, says it is healthy.
	Probe(ctx context.Context, endpoint, secret string) error
}

// Recorder receives what the controller measures (the appliance's
// Prometheus metrics). Calls must be quick and must not call back into the
// controller; the data plane calls it without any shared lock.
type Recorder interface {
	// FunctionState reports a function's ready instances and the
	// requests waiting for one.
	FunctionState(function string, ready, queued int)
	// VMStarted records how long one VM took from start to its agent
	// answering; method says how it started (StartBoot, StartRestore).
	VMStarted(function, method string, took time.Duration)
	// ColdStart counts an invocation that waited for a VM to boot.
	ColdStart(function string)
	// Forget drops everything recorded about a removed function.
	Forget(function string)
}

func (o *Options) setDefaults() {
	if o.BootTimeout <= 0 {
		o.BootTimeout = 2 * time.Minute // above the engines' own bounds
	}
	if o.MemoryRetry <= 0 {
		o.MemoryRetry = 5 * time.Second
	}
	if o.PrepareTimeout <= 0 {
		o.PrepareTimeout = 15 * time.Minute
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
	if o.GCInterval <= 0 {
		o.GCInterval = 10 * time.Minute
	}
	o.KeepVersions = max(o.KeepVersions, 0)
	if o.PrepareRetry <= 0 {
		o.PrepareRetry = 5 * time.Second
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

// nopRecorder records nothing.
type nopRecorder struct{}

func (nopRecorder) FunctionState(string, int, int)          {}
func (nopRecorder) VMStarted(string, string, time.Duration) {}
func (nopRecorder) ColdStart(string)                        {}
func (nopRecorder) Forget(string)                           {}

// Controller is the one place that knows what runs.
type Controller struct {
	opts   Options
	engine vm.Engine
	images Images
	rec    Recorder
	log    *slog.Logger
	boots  *bootLimiter  // nil: boots are not limited
	mem    *memoryBudget // nil: no memory budget

	// life is the context every VM and background goroutine hangs on.
	life   context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	fns    map[string]*fn
	closed bool

	// dir mirrors fns for the data plane's lookups without c.mu.
	dir sync.Map // name → *fn
	// kicks asks the autoscaler to look at one function now (see kick).
	kicks chan *fn
	// pssDenied: the warning that PSS cannot be read was logged.
	pssDenied sync.Once
	// gcKicks asks for a disk collection (gc.go).
	gcKicks chan struct{}
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
		kicks:  make(chan *fn, 256),

		gcKicks: make(chan struct{}, 1),
		boots:   newBootLimiter(opts.MaxConcurrentBoots),
		mem:     newMemoryBudget(opts.MemoryBudget),
	}
	if c.mem != nil {
		c.wg.Add(1)
		go c.watchMemory()
	}
	if opts.Collector != nil {
		c.wg.Add(1)
		go c.gcLoop()
	}
	c.wg.Add(1)
	go c.autoscaleLoop()
	if opts.SecretsDir != "" {
		c.wg.Add(1)
		go c.watchSecrets()
	}
	return c
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
			go func() { defer wg.Done(); c.stopInstanceWithin(ctx, f, in) }()
		}
	}
	// Every VM stops in parallel, each within ctx (the engine kills what
	// does not stop in time); a stop that hangs even so is not waited for
	// past ctx.
	stopped := make(chan struct{})
	go func() { wg.Wait(); close(stopped) }()
	select {
	case <-stopped:
	case <-ctx.Done():
		c.cancel()
		return fmt.Errorf("stopping VMs: %w", ctx.Err())
	}
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

type fn struct {
	name      string
	spec      *function.Spec // the version that serves (or is being brought up first)
	disks     disks
	state     string
	lastErr   string
	warnings  []string
	instances []*instance
	startedAt time.Time
	removed   bool

	// the data plane's state, behind its own lock (admission.go)
	dp admission
	// gauge serialises reports of f's gauges.
	gauge sync.Mutex
	// kicked: an ask to the autoscaler is pending (see kick).
	kicked atomic.Bool

	// autoscaler state, see autoscale
	desired    int       // the last decision
	belowSince time.Time // since when fewer replicas would do (zero: not)
	peak       int       // the most replicas wanted since belowSince

	// reconcile serialisation: one worker per function, latest event wins
	working bool
	pending bool

	secretNames []string // the secrets the last version read names

	// snaps are the snapshots of the serving version and of one being
	// deployed, by version digest (snapshot.go)
	snaps map[string]*snapState
	// disks kept for collection (gc.go): versions served before, newest
	// first; the disks of the deploy in progress.
	history   []diskSet
	preparing diskSet
	// prepareFails counts deploys in a row whose disks failed for a
	// transient cause (the retry backoff).
	prepareFails int

	crashes     int       // consecutive crashes, for the backoff
	lastConsole string    // console tail of the last instance that died
	restartAt   time.Time // no boot for the serving version before this (backoff)
	waitCrash   bool      // requests wait through this backoff (admission.go waitCrashes)

	// the memory budget (memory.go): until when requests that find no
	// instance are refused because a start did not fit; memDeploy: the
	// refused start was a deploy, synced again when memory is released;
	// evictedAt: when it was last scaled to zero to make room (it stays
	// at zero until its next request).
	memWaitUntil time.Time
	memDeploy    bool
	evictedAt    time.Time
}

// notify publishes a change of f to its data plane (which serves the
// waiting requests it can now) and reports its gauges; c.mu is held.
func (c *Controller) notify(f *fn) {
	c.resync(f)
	c.publishQueue(f)
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
