// Package appliance assembles the appliance from its configuration, in one
// readable order: images → engine → metrics → controller → async queue →
// gateway, and the watcher that feeds the controller. cmd/appliance runs it; tools such
// as the load test build the same thing in-process.
package appliance

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	api "github.com/weaveworks/ignite/pkg/apis/ignite"

	"github.com/faasvm/appliance/internal/async"
	"github.com/faasvm/appliance/internal/config"
	"github.com/faasvm/appliance/internal/controller"
	"github.com/faasvm/appliance/internal/function"
	"github.com/faasvm/appliance/internal/gateway"
	"github.com/faasvm/appliance/internal/image"
	"github.com/faasvm/appliance/internal/logs"
	"github.com/faasvm/appliance/internal/metrics"
	"github.com/faasvm/appliance/internal/ui"
	"github.com/faasvm/appliance/internal/upload"
	"github.com/faasvm/appliance/internal/watch"
)

// Appliance is the assembled parts.
type Appliance struct {
	Controller *controller.Controller
	Gateway    *gateway.Gateway
	Queue      *async.Queue
	cfg        *config.Config
	log        *slog.Logger
	disk       *stateDisk
}

// New builds every part from cfg. Nothing runs a VM until functions are
// synced (Watch does it); Close stops them all.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger) (*Appliance, error) {
	// The state dir holds every function's code, the VMs' config disks
	// (their secrets) and console logs: only the appliance enters it (QEMU,
	// running as VM users, gets its files as descriptors).
	snapshots, err := stateDirs(cfg.StateDir)
	if err != nil {
		return nil, err
	}

	// Images: kernel, initramfs, and the cache runtime root filesystems
	// and code snapshots go to.
	kernel, err := image.LoadKernel(cfg.KernelDir)
	if err != nil {
		return nil, fmt.Errorf("guest kernel (FAAS_KERNEL_DIR; scripts/fetch-kernel.sh makes one): %w", err)
	}
	// Without a Docker engine (its socket not mounted) the runtimes boot the
	// root filesystems an earlier run made; nothing new can be built.
	var docker image.Docker
	if cli, err := image.DialDocker(ctx); err != nil {
		log.Warn("no docker engine: functions run only the runtime root filesystems made earlier, and images named by image: cannot be read",
			"err", err)
	} else {
		docker = cli
	}
	cache, err := image.New(image.Config{Dir: image.CacheDir(cfg.StateDir), Docker: docker, Logger: log, Deps: depsConfig(cfg, log)})
	if err != nil {
		return nil, err
	}
	initrd, err := cache.Initramfs(ctx, cfg.AgentBin, kernel)
	if err != nil {
		return nil, fmt.Errorf("guest initramfs (FAAS_AGENT_BIN): %w", err)
	}

	engine, engineNote, err := chooseEngine(ctx, cfg, kernel.VMLinux, initrd, log)
	if err != nil {
		return nil, err
	}

	// Metrics: one registry, filled by the controller and the gateway.
	mets := metrics.New()
	// The dashboard's charts: invocations from the gateway, VM starts from
	// the controller (through its recorder).
	series := &gateway.Series{}

	memBudget, err := memoryBudget(cfg, log)
	if err != nil {
		return nil, fmt.Errorf("memory budget (FAAS_MEMORY_BUDGET): %w", err)
	}
	template, err := function.LoadTemplate(cfg.VMTemplate)
	if err != nil {
		return nil, fmt.Errorf("VM template (FAAS_VM_TEMPLATE): %w", err)
	}
	defaults := FunctionDefaults(cfg)
	defaults.SnapshotDir = snapshots
	// The functions' own output, kept apart from the consoles, across VM
	// replacements and restarts.
	funcLogs, err := logs.Open(filepath.Join(cfg.StateDir, "logs"), logs.Options{MaxBytes: int64(cfg.LogsMaxSize)})
	if err != nil {
		return nil, fmt.Errorf("function logs (FAAS_STATE_DIR): %w", err)
	}
	ctrl := controller.New(controller.Options{
		FunctionsDir: cfg.FunctionsDir, UploadsDir: cfg.UploadsDirOrDefault(), Kernel: kernel.VMLinux, Initrd: initrd, Template: template,
		Defaults:     defaults,
		EngineNote:   engineNote,
		QueueSize:    cfg.Queue,
		Metrics:      chartedRecorder{Metrics: mets, series: series},
		Logs:         funcLogs,
		SecretsDir:   cfg.SecretsDir,
		SnapshotsDir: vmSnapshotsDir(cfg),
		Logger:       log,
		// Disks no VM or kept version uses are removed (FAAS_KEEP_VERSIONS).
		Collector: cache, KeepVersions: cfg.KeepVersions, GCInterval: cfg.GCInterval,
		PrepareTimeout: cfg.PrepareTimeout, MaxConcurrentBoots: maxConcurrentBoots(cfg, engine, log),
		MemoryBudget: memBudget,
	}, engine, image.FunctionDisks{Cache: cache, RuntimesDir: cfg.RuntimesDir})

	queue, err := openQueue(ctx, cfg, mets, log)
	if err != nil {
		_ = ctrl.Close(ctx)
		return nil, err
	}

	uploads, err := uploadStore(cfg, ctrl, defaults, template, engine.Name(), log)
	if err != nil {
		_ = ctrl.Close(ctx)
		return nil, err
	}
	disk := &stateDisk{dir: cfg.StateDir, budget: cfg.StateBudget, log: log.With("component", "state-disk")}
	gwOpts := gateway.Options{
		Health:   disk.health,
		BootWait: cfg.BootWait, InvokeTimeout: cfg.InvokeTimeout, MaxBody: int64(cfg.MaxBody),
		APIToken: cfg.APIToken, ShutdownTimeout: cfg.ShutdownTimeout, Observer: mets, Queue: queue,
		Logs:      funcLogs,
		MaxUpload: defaults.MaxSize,
		Series:    series,
	}
	if uploads != nil {
		gwOpts.Uploads = uploads
	}
	gw := gateway.New(gwOpts, ctrl, log)
	// Behind the API token when one is set: it names every function.
	gw.MountAPI("/metrics", promhttp.HandlerFor(mets.Registry(), promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}))
	mountLimits(gw, mets.Registry(), ctrl)
	// The dashboard page is public: the /api data it polls keeps the token.
	gw.Mount(ui.MountPattern, ui.Handler())
	gw.MountAPI("/api/disk", disk)
	return &Appliance{Controller: ctrl, Gateway: gw, Queue: queue, cfg: cfg, log: log, disk: disk}, nil
}

// Watch deploys every function folder now and every change from then on,
// until ctx ends, and starts delivering queued asynchronous calls.
func (a *Appliance) Watch(ctx context.Context) error {
	// The mounted folder and the uploads folder, watched alike (the
	// controller finds which one a name lives in; the mounted one wins).
	dirs := []struct{ dir, setting string }{
		{a.cfg.FunctionsDir, "FAAS_FUNCTIONS_DIR"},
		{a.cfg.UploadsDirOrDefault(), "FAAS_UPLOADS_DIR"},
	}
	var watchers []*watch.Watcher
	closeAll := func() {
		for _, w := range watchers {
			w.Close()
		}
	}
	for _, d := range dirs {
		w, err := watch.New(d.dir, a.cfg.Debounce, a.log)
		if err != nil {
			closeAll()
			return fmt.Errorf("watching %s: %w", d.setting, err)
		}
		watchers = append(watchers, w)
		names, err := watch.Scan(d.dir)
		if err != nil {
			closeAll()
			return fmt.Errorf("scanning %s: %w", d.setting, err)
		}
		for _, n := range names {
			a.Controller.Sync(n)
		}
	}
	// Every function is known to the controller now: snapshots of
	// functions removed while the appliance was down can go.
	if _, err := a.Controller.PruneSnapshots(); err != nil {
		a.log.Warn("deleting stale VM snapshots; they take disk space until deleted by hand", "err", err)
	}
	// Queued calls (from before a restart too) may be delivered.
	if err := a.StartQueue(ctx); err != nil {
		closeAll()
		return err
	}
	go a.disk.run(ctx)
	for _, w := range watchers {
		go func() {
			for n := range w.Events() {
				a.Controller.Sync(n)
			}
		}()
		go func() {
			if err := w.Run(ctx); err != nil {
				a.log.Error("watcher stopped; restart the appliance to pick up changes", "err", err)
			}
		}()
	}
	return nil
}

// uploadStore prepares the uploads folder (always: uploads made earlier
// deploy even with the API off) and returns the store behind the upload
// API, or nil when uploads are off.
func uploadStore(cfg *config.Config, ctrl *controller.Controller, defaults function.Defaults,
	template *api.VM, engine string, log *slog.Logger) (*upload.Store, error) {
	store := &upload.Store{
		Dir: cfg.UploadsDirOrDefault(), FunctionsDir: cfg.FunctionsDir,
		Limits: upload.Limits{MaxSize: defaults.MaxSize},
		// The same rules as a mounted folder's, so a refused upload never
		// replaces a working one.
		Validate: func(dir string) (string, error) {
			spec, err := function.Load(dir, defaults, template, engine)
			if err != nil {
				return "", err
			}
			return spec.Version(), spec.RemoveSnapshot()
		},
		Changed: ctrl.Sync,
		Logger:  log.With("component", "upload"),
	}
	if err := store.Prepare(); err != nil {
		return nil, err
	}
	if !cfg.UploadsEnabled() {
		log.Info("upload API off (FAAS_UPLOADS=auto and no FAAS_API_TOKEN): PUT/POST/DELETE /api/functions answer 403")
		return nil, nil
	}
	if cfg.APIToken == "" {
		log.Warn("upload API on without an API token (FAAS_UPLOADS=on): anyone who reaches the port can run code")
	}
	return store, nil
}

// StartQueue delivers asynchronous calls through the gateway's own
// routes, so they take the synchronous path. Watch calls it once the
// functions are known.
func (a *Appliance) StartQueue(ctx context.Context) error {
	if err := a.Queue.Start(ctx, a.Gateway.Handler(), a.Controller); err != nil {
		return fmt.Errorf("starting the async workers: %w", err)
	}
	return nil
}

// Close stops the async workers (running calls get half the shutdown
// timeout; the rest run again after a restart), then every VM, bounded by
// the shutdown timeout.
func (a *Appliance) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout)
	defer cancel()
	if err := a.Queue.Close(ctx); err != nil {
		a.log.Warn("stopping the async queue", "err", err)
	}
	if err := a.Controller.Close(ctx); err != nil {
		return fmt.Errorf("stopping VMs: %w", err)
	}
	a.log.Info("all VMs stopped")
	return nil
}

// policy is the operator's policy as function validation applies it.
func policy(cfg *config.Config) function.Policy {
	return function.Policy{
		AllowedImages:  cfg.PolicyAllowedImages,
		MaxMemoryMB:    int64(cfg.PolicyMaxMemory) >> 20,
		MaxCPUs:        cfg.PolicyMaxCPUs,
		MaxReplicas:    cfg.PolicyMaxReplicas,
		MaxConcurrency: cfg.PolicyMaxConcurrency,
		MaxTimeout:     cfg.PolicyMaxTimeout,
		AllowEgress:    cfg.AllowEgress(),
	}
}

// stateDirs closes the state dir to everyone but the appliance and makes
// the folder of the versions' snapshots, emptied of what a crashed run
// left. It returns that folder.
func stateDirs(stateDir string) (string, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return "", fmt.Errorf("state dir (FAAS_STATE_DIR): %w", err)
	}
	if err := os.Chmod(stateDir, 0o700); err != nil {
		return "", fmt.Errorf("state dir (FAAS_STATE_DIR): %w", err)
	}
	snapshots := filepath.Join(stateDir, "snapshots")
	if err := os.RemoveAll(snapshots); err != nil {
		return "", fmt.Errorf("clearing old snapshots: %w", err)
	}
	if err := os.Mkdir(snapshots, 0o700); err != nil {
		return "", fmt.Errorf("snapshots dir: %w", err)
	}
	return snapshots, nil
}

// defaultMemory renders the default_memory setting for function.Defaults:
// "" (the VM template decides) when unset.
func defaultMemory(m config.Size) string {
	if m == 0 {
		return ""
	}
	return fmt.Sprintf("%dMB", int64(m)>>20)
}

// The gateway counts truncated answers through the metrics.
var _ gateway.TruncationObserver = (*metrics.Metrics)(nil)

// The controller reports snapshots and memory through the metrics, also
// when the charts' recorder wraps them.
var (
	_ controller.SnapshotRecorder = (*metrics.Metrics)(nil)
	_ controller.SnapshotRecorder = chartedRecorder{}
)

// vmSnapshotsDir is where the controller keeps VM snapshots: under the state
// dir, so they survive restarts (unlike the folder copies in "snapshots",
// cleared at every start); "" when the operator turned snapshots off.
func vmSnapshotsDir(cfg *config.Config) string {
	if !cfg.Snapshots {
		return ""
	}
	return filepath.Join(cfg.StateDir, "vm-snapshots")
}
