// Command agent is the guest agent of a function VM. It runs as PID 1 from
// the initramfs: it mounts the root and code disks, configures the network,
// reaps zombies and serves the agent's HTTP API (package server): the
// function on protocol.AgentPort, the host's control operations on
// protocol.ControlPort. See README.md in this directory.
//
// Run as any other PID it skips the boot and only serves the API, for
// trying handlers on a development machine:
//
//	agent -config config.json -code ./myfunction -listen 127.0.0.1:8080 -control-listen 127.0.0.1:8081
//
// `agent container` is the entrypoint of an exported OCI image (see
// container.go), whatever its PID; `agent health` asks a container-mode
// agent for its health (an exec probe).
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/faasvm/appliance/guest/agent/server"
	"github.com/faasvm/appliance/guest/protocol"
)

// defaultPath is the handlers' PATH when nothing sets one (the kernel starts
// init without it).
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func main() {
	log := slog.New(slog.NewTextHandler(os.Stdout, nil))
	if len(os.Args) > 1 {
		if run := subcommand(os.Args[1]); run != nil {
			if err := run(log, os.Args[2:]); err != nil {
				log.Error("agent failed", "err", err)
				os.Exit(1)
			}
			return
		}
	}
	if os.Getpid() == 1 {
		runInit(log) // never returns
	}
	if err := runDev(log, os.Args[1:]); err != nil {
		log.Error("agent failed", "err", err)
		os.Exit(1)
	}
}

// subcommand returns what runs for the first argument instead of a VM's
// boot or development mode, nil for none.
func subcommand(name string) func(log *slog.Logger, args []string) error {
	switch name {
	case "container":
		return runContainer
	case "health":
		return func(_ *slog.Logger, args []string) error { return runHealth(args, os.Stdout) }
	}
	return nil
}

// runInit boots the guest and serves until a poweroff request. Any failure
// reboots the machine, which ends the VM.
func runInit(log *slog.Logger) {
	ctx := context.Background() // the agent's life is the machine's
	b := &boot{log: log}
	if err := b.run(ctx); err != nil {
		fatal(b.log, err)
	}
	base := log // the server adds the function's name itself
	log = b.log

	rp := newReaper(log, "/proc", os.Getpid())
	go rp.run(ctx)
	go ignoreSignals(log)

	data, err := net.Listen("tcp4", net.JoinHostPort("0.0.0.0", strconv.Itoa(protocol.AgentPort)))
	if err != nil {
		fatal(log, fmt.Errorf("listening on port %d: %w", protocol.AgentPort, err))
	}
	control, err := net.Listen("tcp4", net.JoinHostPort("0.0.0.0", strconv.Itoa(protocol.ControlPort)))
	if err != nil {
		fatal(log, fmt.Errorf("listening on port %d: %w", protocol.ControlPort, err))
	}
	hs, cs := newHTTPServer(log), newHTTPServer(log)
	srv, err := server.New(b.cfg, server.Options{
		CodeDir: protocol.CodeDir,
		RunDir:  bootstrapRunDir,
		Env:     withDepsEnv(withDefaultEnv(os.Environ()), b.disks.deps != ""),
		Reseed:  reseed,
		Logger:  base,
		Spawner: rp,
		Poweroff: func(ctx context.Context) error {
			// Let the 202 reach the host before the machine goes.
			if err := errors.Join(hs.Shutdown(ctx), cs.Shutdown(ctx)); err != nil {
				log.Warn("closing connections before poweroff", "step", "poweroff", "err", err)
			}
			reboot(log, "poweroff requested")
			return errors.New("reboot returned")
		},
	})
	if err != nil {
		fatal(log, fmt.Errorf("preparing the agent: %w", err))
	}
	hs.Handler, cs.Handler = srv, srv.Control()
	srv.Start(ctx)
	log.Info("agent serving", "step", "serve", "addr", data.Addr().String(), "control_addr", control.Addr().String())
	served := make(chan error, 2)
	go func() { served <- hs.Serve(data) }()
	go func() { served <- cs.Serve(control) }()
	err = <-served
	if errors.Is(err, http.ErrServerClosed) {
		<-srv.PoweredOff() // the poweroff reboots; this returns only if it failed
		err = errors.New("poweroff did not reboot")
	}
	fatal(log, fmt.Errorf("serving: %w", err))
}

// ignoreSignals keeps PID 1 alive through SIGTERM, SIGINT and SIGHUP (a
// handler running as root could send them; uncaught, they would end the
// agent and panic the kernel). Caught rather than ignored, so the handlers
// the agent starts get the default dispositions back.
func ignoreSignals(log *slog.Logger) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	for s := range sig {
		log.Warn("ignoring signal to PID 1; POST "+protocol.PoweroffPath+" on the control port powers off", "signal", s.String())
	}
}

// fatal logs why the guest cannot go on and reboots it.
func fatal(log *slog.Logger, err error) {
	log.Error("agent failed", "err", err)
	reboot(log, "fatal error")
}

func newHTTPServer(log *slog.Logger) *http.Server {
	return &http.Server{
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// withDefaultEnv returns env with PATH and LANG set when they are missing.
func withDefaultEnv(env []string) []string {
	out := append([]string(nil), env...)
	for _, kv := range []string{"PATH=" + defaultPath, "LANG=C.UTF-8"} {
		key, _, _ := strings.Cut(kv, "=")
		found := false
		for _, e := range env {
			if strings.HasPrefix(e, key+"=") {
				found = true
				break
			}
		}
		if !found {
			out = append(out, kv)
		}
	}
	return out
}

// runDev serves the API for a handler on this machine, without booting.
func runDev(log *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	configPath := fs.String("config", "", "agent config: a JSON file or a config disk image (required)")
	codeDir := fs.String("code", ".", "the function's code directory")
	runDir := fs.String("run", "", "directory for the http-mode bootstrap (default: a new temporary directory)")
	listen := fs.String("listen", "127.0.0.1:"+strconv.Itoa(protocol.AgentPort), "address to serve the function on")
	controlListen := fs.String("control-listen", "127.0.0.1:"+strconv.Itoa(protocol.ControlPort), "address to serve the control operations on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *configPath == "" {
		return errors.New("-config is required (not PID 1, so there is no config disk to read)")
	}
	cfg, err := readConfigFile(*configPath)
	if err != nil {
		return err
	}
	if *runDir == "" {
		d, err := os.MkdirTemp("", "faas-agent-")
		if err != nil {
			return fmt.Errorf("creating run directory: %w", err)
		}
		defer os.RemoveAll(d)
		*runDir = d
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := server.New(cfg, server.Options{
		CodeDir: *codeDir,
		RunDir:  *runDir,
		Logger:  log,
		Poweroff: func(context.Context) error {
			stop() // "powering off" a development agent ends it
			return nil
		},
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", *listen, err)
	}
	cln, err := net.Listen("tcp", *controlListen)
	if err != nil {
		ln.Close()
		return fmt.Errorf("listening on %s: %w", *controlListen, err)
	}
	hs, cs := newHTTPServer(log), newHTTPServer(log)
	hs.Handler, cs.Handler = srv, srv.Control()
	srv.Start(ctx)
	served := make(chan error, 2)
	go func() { served <- hs.Serve(ln) }()
	go func() { served <- cs.Serve(cln) }()
	log.Info("agent serving", "function", cfg.Name, "addr", ln.Addr().String(), "control_addr", cln.Addr().String(), "mode", cfg.Mode)

	select {
	case err := <-served:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return errors.Join(hs.Shutdown(sctx), cs.Shutdown(sctx), srv.Stop(sctx))
}

// readConfigFile reads an agent config from a config disk image or a plain
// JSON file.
func readConfigFile(path string) (*protocol.Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	if bytes.HasPrefix(b, []byte(protocol.ConfigMagic)) {
		return protocol.DecodeDisk(b)
	}
	cfg, err := protocol.DecodeJSON(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// withDepsEnv puts the dependency disk's directories on the import paths:
// PYTHONPATH for pip's --target, NODE_PATH for node_modules (before what
// env already has, so the function's own dependencies win).
func withDepsEnv(env []string, deps bool) []string {
	if !deps {
		return env
	}
	out := append([]string(nil), env...)
	for _, kv := range [][2]string{{"PYTHONPATH", protocol.DepsPython}, {"NODE_PATH", protocol.DepsNode}} {
		val := kv[1]
		for i := len(out) - 1; i >= 0; i-- {
			if old, ok := strings.CutPrefix(out[i], kv[0]+"="); ok {
				if old != "" {
					val += ":" + old
				}
				out = append(out[:i], out[i+1:]...)
			}
		}
		out = append(out, kv[0]+"="+val)
	}
	return out
}
