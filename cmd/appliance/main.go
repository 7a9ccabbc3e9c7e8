// Command appliance is the FaaS appliance: it watches a folder of functions,
// runs each in its own microVM and serves them at /invoke/<name>.
//
// It reads the configuration, assembles the parts (internal/appliance:
// images → engine → metrics → controller → gateway), starts the watcher,
// serves, and on SIGINT/SIGTERM drains requests and stops every VM.
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

	"github.com/faasvm/appliance/internal/appliance"
	"github.com/faasvm/appliance/internal/config"
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
	app, err := appliance.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer func() {
		if err := app.Close(); err != nil {
			log.Warn("shutting down", "err", err)
		}
	}()
	if err := app.Watch(ctx); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on FAAS_LISTEN %s: %w", cfg.Listen, err)
	}
	log.Info("serving", "addr", ln.Addr().String(), "functions_dir", cfg.FunctionsDir)
	err = app.Gateway.Serve(ctx, ln)
	if err != nil && ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded) {
		// A signal asked for the stop, and the drain's bound ran out:
		// the requests still running were cut off, which is what the
		// bound is for. Not a failure of the appliance (exit status 0).
		log.Warn("requests still in flight after FAAS_SHUTDOWN_TIMEOUT were cut off", "err", err)
		return nil
	}
	return err
}
