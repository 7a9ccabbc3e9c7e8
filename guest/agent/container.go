package main

// Container mode: the agent as the entrypoint of an OCI image made by
// `faasvm export`, run by Docker, or by Kubernetes with or without Kata
// Containers. It has no PID-1 duties of a VM: no mounts, no disks to find,
// no network to configure and no machine to power off. It serves the same
// exec and http modes with the same request/response contract:
//
//   - data on $PORT (Knative's runtime contract) or -listen, default :8080:
//     every path and method goes to the function (the server's data
//     handler, as in a VM); no secret is asked for (the platform in front
//     decides who may call), and any X-Faas-Secret or X-Faas-Control a
//     client sends is dropped, never passed to the handler;
//   - control on -control, default :8081 (protocol.ControlPort), which the
//     data path cannot reach: GET /health (the server's control handler: 200
//     ready, 503 starting or failed, the same JSON as in a VM) and GET
//     /metrics (OpenFaaS's invocation metric names, see metrics.go). Nothing
//     there changes state: no poweroff; stopping the container is the
//     platform's job (SIGTERM drains in-flight requests, then stops the
//     handler).
//
// The function's settings come from a JSON protocol.Config baked into the
// image (-config). Its env entries are defaults: a variable the platform
// sets (a Kubernetes manifest's env) wins over them.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/faasvm/appliance/guest/agent/server"
	"github.com/faasvm/appliance/guest/protocol"
)

// Container-mode defaults, shared with internal/export through the image's
// labels and the manifests it writes.
const (
	containerConfigPath = "/faasvm/function.json"
	// containerHealthPath and containerMetricsPath are served on the control
	// listener only.
	containerHealthPath  = protocol.HealthPath
	containerMetricsPath = "/metrics"
	// containerStopGrace bounds draining in-flight requests after SIGTERM,
	// beyond the function's own timeout.
	containerStopGrace = 5 * time.Second
)

// containerFlags are the container mode's command line.
type containerFlags struct {
	config  string
	code    string
	listen  string
	control string
	maxBody int64
}

func parseContainerFlags(args []string, getenv func(string) string) (containerFlags, error) {
	f := containerFlags{}
	fs := flag.NewFlagSet("agent container", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&f.config, "config", containerConfigPath, "the function's agent config (JSON)")
	fs.StringVar(&f.code, "code", protocol.CodeDir, "the function's code directory")
	listen := ":" + strconv.Itoa(protocol.AgentPort)
	if p := getenv("PORT"); p != "" {
		listen = ":" + p
	}
	fs.StringVar(&f.listen, "listen", listen, "data address: every request goes to the function ($PORT sets the port)")
	fs.StringVar(&f.control, "control", containerControl(), "control address: GET /health and /metrics")
	fs.Int64Var(&f.maxBody, "max-body", 0, "largest request body in bytes, 413 above (0: no limit beyond the agent's own)")
	if err := fs.Parse(args); err != nil {
		return f, fmt.Errorf("agent container: %w", err)
	}
	if fs.NArg() > 0 {
		return f, fmt.Errorf("agent container: unexpected argument %q", fs.Arg(0))
	}
	if err := checkPortsDiffer(f.listen, f.control); err != nil {
		return f, err
	}
	return f, nil
}

// checkPortsDiffer refuses data and control on one port: the control
// listener is only unreachable from the data path while they are apart.
func checkPortsDiffer(data, control string) error {
	_, dp, err := net.SplitHostPort(data)
	if err != nil {
		return fmt.Errorf("agent container: data address %q: %w", data, err)
	}
	_, cp, err := net.SplitHostPort(control)
	if err != nil {
		return fmt.Errorf("agent container: control address %q: %w", control, err)
	}
	if n, err := strconv.Atoi(dp); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("agent container: data port %q is not 1-65535", dp)
	}
	if n, err := strconv.Atoi(cp); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("agent container: control port %q is not 1-65535", cp)
	}
	if dp == cp {
		return fmt.Errorf("agent container: data and control both on port %s; they must differ", dp)
	}
	return nil
}

// containerControl is the control listener's default address.
func containerControl() string { return ":" + strconv.Itoa(protocol.ControlPort) }

// readContainerConfig reads the image's agent config. It carries no
// secrets: container mode makes its own for the in-process hops.
func readContainerConfig(path string) (*protocol.Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading agent config: %w", err)
	}
	var cfg protocol.Config
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("agent config %s: %w", path, err)
	}
	if cfg.Secret, err = randomSecret(); err != nil {
		return nil, err
	}
	if cfg.ControlSecret, err = randomSecret(); err != nil {
		return nil, err
	}
	cfg.Network = protocol.Network{} // the platform's business
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("agent config %s: %w", path, err)
	}
	return &cfg, nil
}

func randomSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("making a secret: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// containerEnv is the handlers' environment: the process's own (what the
// platform set), PATH and LANG when missing, then the config's env for the
// names the platform did not set.
func containerEnv(environ []string, defaults map[string]string) []string {
	env := withDefaultEnv(environ)
	has := func(name string) bool {
		return slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, name+"=") })
	}
	names := make([]string, 0, len(defaults))
	for k := range defaults {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		if !has(k) {
			env = append(env, k+"="+defaults[k])
		}
	}
	return env
}

// runContainer serves the function until SIGTERM or SIGINT, then drains.
func runContainer(log *slog.Logger, args []string) error {
	f, err := parseContainerFlags(args, os.Getenv)
	if err != nil {
		return err
	}
	cfg, err := readContainerConfig(f.config)
	if err != nil {
		return err
	}
	env := containerEnv(os.Environ(), cfg.Env)
	cfg.Env = nil // in env now, where the platform's values win
	runDir, err := os.MkdirTemp("", "faasvm-run-")
	if err != nil {
		return fmt.Errorf("creating the bootstrap directory: %w", err)
	}
	defer os.RemoveAll(runDir)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var spawner server.Spawner
	if os.Getpid() == 1 {
		// PID 1 of its container (no --init): orphans come here.
		rp := newReaper(log, "/proc", 1)
		go rp.run(ctx)
		spawner = rp
	}
	srv, err := server.New(cfg, server.Options{
		CodeDir: f.code, RunDir: runDir, Env: env, Logger: log, Spawner: spawner,
	})
	if err != nil {
		return err
	}
	c := newContainer(cfg, srv, srv.Control(), f.maxBody)

	data, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", f.listen, err)
	}
	control, err := net.Listen("tcp", f.control)
	if err != nil {
		data.Close()
		return fmt.Errorf("listening on %s: %w", f.control, err)
	}
	dataSrv, controlSrv := newHTTPServer(log), newHTTPServer(log)
	dataSrv.Handler, controlSrv.Handler = http.HandlerFunc(c.serveData), http.HandlerFunc(c.serveControl)
	srv.Start(ctx)
	served := make(chan error, 2)
	go func() { served <- dataSrv.Serve(data) }()
	go func() { served <- controlSrv.Serve(control) }()
	log.Info("agent serving in container mode", "function", cfg.Name, "mode", cfg.Mode,
		"data", data.Addr().String(), "control", control.Addr().String())

	var serveErr error
	select {
	case serveErr = <-served:
		serveErr = fmt.Errorf("serving: %w", serveErr)
	case <-ctx.Done():
		log.Info("stopping: draining requests", "function", cfg.Name)
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Duration(cfg.Timeout)+containerStopGrace)
	defer cancel()
	return errors.Join(serveErr, dataSrv.Shutdown(sctx), controlSrv.Shutdown(sctx), srv.Stop(sctx))
}

// container routes the two listeners to the agent server's data and
// control handlers.
type container struct {
	cfg           *protocol.Config
	data, control http.Handler
	maxBody       int64
	metrics       *invocationMetrics
}

func newContainer(cfg *protocol.Config, data, control http.Handler, maxBody int64) *container {
	return &container{cfg: cfg, data: data, control: control, maxBody: maxBody, metrics: newInvocationMetrics(cfg.Name)}
}

// serveData hands every request to the function, with the in-process
// secret in place of whatever the client sent.
func (c *container) serveData(w http.ResponseWriter, r *http.Request) {
	rec := c.metrics.begin(w)
	defer rec.done()
	if c.maxBody > 0 {
		if r.ContentLength > c.maxBody {
			writeContainerError(rec, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is over the %d-byte limit", c.maxBody))
			return
		}
		r.Body = http.MaxBytesReader(rec, r.Body, c.maxBody)
	}
	r.Header.Del(protocol.ControlHeader)
	r.Header.Del(protocol.SecretHeader)
	r.Header.Set(protocol.SecretHeader, c.cfg.Secret)
	c.data.ServeHTTP(rec, r)
}

// serveControl answers health and metrics; nothing else exists there.
func (c *container) serveControl(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeContainerError(w, http.StatusMethodNotAllowed, "the control listener only answers GET")
		return
	}
	switch r.URL.EscapedPath() {
	case containerHealthPath:
		h := r.Clone(r.Context())
		h.Header = http.Header{protocol.ControlHeader: {c.cfg.ControlSecret}}
		c.control.ServeHTTP(w, h)
	case containerMetricsPath:
		c.metrics.serve(w)
	default:
		writeContainerError(w, http.StatusNotFound, "the control listener serves "+containerHealthPath+" and "+containerMetricsPath)
	}
}

// writeContainerError writes an agent error as the server package does.
func writeContainerError(w http.ResponseWriter, code int, msg string) {
	b, _ := json.Marshal(map[string]string{"error": msg})
	w.Header().Set(protocol.AgentErrorHeader, "1")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

// runHealth is `agent health`: one GET of the control listener's health,
// for a Kubernetes exec probe or a Docker HEALTHCHECK. Exit status 0 when
// ready (or, with -live, when starting too: alive, not failed).
func runHealth(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("agent health", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	addr := fs.String("addr", "127.0.0.1"+containerControl(), "control listener to ask")
	live := fs.Bool("live", false, "a handler that is still starting counts as healthy (liveness)")
	timeout := fs.Duration("timeout", 3*time.Second, "bound on the request")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("agent health: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+*addr+containerHealthPath, nil)
	if err != nil {
		return fmt.Errorf("agent health: %w", err)
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return fmt.Errorf("agent health: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	fmt.Fprintf(stdout, "%d %s\n", resp.StatusCode, strings.TrimSpace(string(body)))
	var st server.Status
	_ = json.Unmarshal(body, &st)
	switch {
	case resp.StatusCode == http.StatusOK:
		return nil
	case *live && st.State == server.StateStarting:
		return nil
	}
	return fmt.Errorf("agent health: %d %s", resp.StatusCode, st.State)
}
