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

	"github.com/faasvm/appliance/internal/async"
	"github.com/faasvm/appliance/internal/config"
	"github.com/faasvm/appliance/internal/controller"
	"github.com/faasvm/appliance/internal/function"
	"github.com/faasvm/appliance/internal/gateway"
	"github.com/faasvm/appliance/internal/image"
	"github.com/faasvm/appliance/internal/metrics"
	"github.com/faasvm/appliance/internal/ui"
	"github.com/faasvm/appliance/internal/watch"
)

// Appliance is the assembled parts.
type Appliance struct {
	Controller *controller.Controller
	Gateway    *gateway.Gateway
	Queue      *async.Queue
	cfg        *config.Config
	log        *slog.Logger
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

	template, err := function.LoadTemplate(cfg.VMTemplate)
	if err != nil {
		return nil, fmt.Errorf("VM template (FAAS_VM_TEMPLATE): %w", err)
	}
	defaults := FunctionDefaults(cfg)
	defaults.SnapshotDir = snapshots
	ctrl := controller.New(controller.Options{
		FunctionsDir: cfg.FunctionsDir, Kernel: kernel.VMLinux, Initrd: initrd, Template: template,
		Defaults:   defaults,
		EngineNote: engineNote,
		QueueSize:  cfg.Queue,
		Metrics:    mets,
		Logger:     log,
	}, engine, image.FunctionDisks{Cache: cache, RuntimesDir: cfg.RuntimesDir})

	queue, err := openQueue(ctx, cfg, mets, log)
	if err != nil {
		_ = ctrl.Close(ctx)
		return nil, err
	}

	gw := gateway.New(gateway.Options{
		BootWait: cfg.BootWait, InvokeTimeout: cfg.InvokeTimeout, MaxBody: int64(cfg.MaxBody),
		APIToken: cfg.APIToken, ShutdownTimeout: cfg.ShutdownTimeout, Observer: mets, Queue: queue,
	}, ctrl, log)
	// Behind the API token when one is set: it names every function.
	gw.MountAPI("/metrics", promhttp.HandlerFor(mets.Registry(), promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}))
	// The dashboard page is public: the /api data it polls keeps the token.
	gw.Mount(ui.MountPattern, ui.Handler())
	return &Appliance{Controller: ctrl, Gateway: gw, Queue: queue, cfg: cfg, log: log}, nil
}

// Watch deploys every function folder now and every change from then on,
// until ctx ends, and starts delivering queued asynchronous calls.
func (a *Appliance) Watch(ctx context.Context) error {
	w, err := watch.New(a.cfg.FunctionsDir, a.cfg.Debounce, a.log)
	if err != nil {
		return fmt.Errorf("watching FAAS_FUNCTIONS_DIR: %w", err)
	}
	names, err := watch.Scan(a.cfg.FunctionsDir)
	if err != nil {
		w.Close()
		return fmt.Errorf("scanning FAAS_FUNCTIONS_DIR: %w", err)
	}
	for _, n := range names {
		a.Controller.Sync(n)
	}
	// Every function is known to the controller now: queued calls
	// (from before a restart too) may be delivered.
	if err := a.StartQueue(ctx); err != nil {
		w.Close()
		return err
	}
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
	return nil
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
