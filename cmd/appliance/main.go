// Command appliance is the FaaS appliance: it watches a folder of functions,
// runs each in its own microVM and serves them at /invoke/<name>.
//
// Wiring order: config → images → engine → metrics → controller → gateway →
// watcher.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/faasvm/appliance/internal/config"
	"github.com/faasvm/appliance/internal/controller"
	"github.com/faasvm/appliance/internal/function"
	"github.com/faasvm/appliance/internal/gateway"
	"github.com/faasvm/appliance/internal/image"
	"github.com/faasvm/appliance/internal/metrics"
	"github.com/faasvm/appliance/internal/watch"
)

func main() {
	cfg, err := config.Load(os.Args[1:], os.Getenv)
	if errors.Is(err, config.ErrHelp) {
		fmt.Print(config.Usage())
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "appliance: configuration: %v\n", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("appliance stopped", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	log.Info("starting appliance", "config", cfg)

	// Images: kernel, initramfs, and the cache runtime root filesystems and
	// code snapshots go to.
	kernel, err := image.LoadKernel(cfg.KernelDir)
	if err != nil {
		return fmt.Errorf("guest kernel (FAAS_KERNEL_DIR; scripts/fetch-kernel.sh makes one): %w", err)
	}
	docker, err := image.DialDocker(ctx)
	if err != nil {
		return fmt.Errorf("docker engine (runtime images are built through it): %w", err)
	}
	cache, err := image.New(image.Config{Dir: image.CacheDir(cfg.StateDir), Docker: docker, Logger: log})
	if err != nil {
		return err
	}
	initrd, err := cache.Initramfs(ctx, cfg.AgentBin, kernel)
	if err != nil {
		return fmt.Errorf("guest initramfs (FAAS_AGENT_BIN): %w", err)
	}

	// Engine.
	engine, engineNote, err := chooseEngine(ctx, cfg, kernel.VMLinux, initrd, log)
	if err != nil {
		return err
	}

	// Metrics: one registry, filled by the controller and the gateway.
	mets := metrics.New()

	// Controller.
	template, err := function.LoadTemplate(cfg.VMTemplate)
	if err != nil {
		return fmt.Errorf("VM template (FAAS_VM_TEMPLATE): %w", err)
	}
	ctrl := controller.New(controller.Options{
		FunctionsDir: cfg.FunctionsDir, Kernel: kernel.VMLinux, Initrd: initrd, Template: template,
		Defaults: function.Defaults{
			Timeout: cfg.InvokeTimeout, Memory: fmt.Sprintf("%dMB", int64(cfg.DefaultMemory)>>20), CPUs: cfg.DefaultCPUs, Egress: cfg.Egress,
			MinReplicas: cfg.MinReplicas, MaxReplicas: cfg.MaxReplicas, Concurrency: cfg.Concurrency,
			IdleTimeout: cfg.IdleTimeout, TargetUtilization: cfg.TargetUtilization, MaxSize: image.DefaultCodeSizeLimit,
		},
		EngineNote: engineNote,
		QueueSize:  queueSize(cfg.Queue),
		Metrics:    mets,
		Logger:     log,
	}, engine, image.FunctionDisks{Cache: cache, RuntimesDir: cfg.RuntimesDir})
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		if err := ctrl.Close(sctx); err != nil {
			log.Warn("stopping VMs", "err", err)
		}
		log.Info("all VMs stopped")
	}()

	// Watcher: every folder now, then every change.
	w, err := watch.New(cfg.FunctionsDir, cfg.Debounce, log)
	if err != nil {
		return fmt.Errorf("watching FAAS_FUNCTIONS_DIR: %w", err)
	}
	names, err := watch.Scan(cfg.FunctionsDir)
	if err != nil {
		return fmt.Errorf("scanning FAAS_FUNCTIONS_DIR: %w", err)
	}
	for _, n := range names {
		ctrl.Sync(n)
	}
	go func() {
		for n := range w.Events() {
			ctrl.Sync(n)
		}
	}()
	go func() {
		if err := w.Run(ctx); err != nil {
			log.Error("watcher stopped; restart the appliance to pick up changes", "err", err)
		}
	}()

	// Gateway.
	gw := gateway.New(gateway.Options{
		BootWait: cfg.BootWait, InvokeTimeout: cfg.InvokeTimeout, MaxBody: int64(cfg.MaxBody),
		APIToken: cfg.APIToken, ShutdownTimeout: cfg.ShutdownTimeout, Observer: mets,
	}, ctrl, log)
	// Behind the API token when one is set: it names every function.
	gw.MountAPI("/metrics", promhttp.HandlerFor(mets.Registry(), promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}))
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on FAAS_LISTEN %s: %w", cfg.Listen, err)
	}
	log.Info("serving", "addr", ln.Addr().String(), "functions_dir", cfg.FunctionsDir)
	return gw.Serve(ctx, ln)
}

// queueSize maps the queue setting (0: nobody waits) to the controller's.
func queueSize(n int) int {
	if n == 0 {
		return controller.NoQueue
	}
	return n
}
