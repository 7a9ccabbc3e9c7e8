package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/faasvm/appliance/guest/agent/bootstrap"
	"github.com/faasvm/appliance/guest/protocol"
)

const (
	// readyPoll is how often the agent tries the bootstrap's port while it starts.
	readyPoll = 20 * time.Millisecond
	// healthyRun is how long a bootstrap must run for the restart backoff to
	// start again from its minimum.
	healthyRun = 30 * time.Second
	// bootstrapWaitDelay bounds how long the agent waits for a dead
	// bootstrap's output pipes, which a child of the handler may still hold.
	bootstrapWaitDelay = time.Second
	// failureTail is how much of a dead bootstrap's stderr its status carries.
	failureTail = 1 << 10
)

// upstreamKey carries a request's bootstrap address from ServeHTTP to the
// proxy's Rewrite.
type upstreamKey struct{}

// httpHandler supervises one long-running bootstrap process and
// reverse-proxies every invocation to it (of-watchdog's http mode).
type httpHandler struct {
	cfg    *protocol.Config
	opts   Options
	con    *console
	log    *slog.Logger
	flog   *funcLog
	reqs   *requestTracker
	env    []string
	prefix string
	boot   bootstrap.Bootstrap

	transport *http.Transport
	proxy     *httputil.ReverseProxy

	mu         sync.Mutex
	st         Status
	addr       string             // where the running bootstrap listens
	pid        int                // the running bootstrap's pid; 0 when none
	restores   int                // restore notifications sent (names the ack file)
	restarting bool               // the bootstrap was killed to start afresh (RestartOnRestore)
	cancel     context.CancelFunc // ends the supervisor
	supervisor chan struct{}      // closed when the supervisor has returned
}

var _ handler = (*httpHandler)(nil)

func newHTTPHandler(cfg *protocol.Config, opts Options, con *console, log *slog.Logger, flog *funcLog) *httpHandler {
	h := &httpHandler{
		cfg:    cfg,
		opts:   opts,
		con:    con,
		log:    log,
		flog:   flog,
		reqs:   newRequestTracker(),
		env:    mergeEnv(opts.Env, cfg.Env),
		prefix: consolePrefix(cfg.Name),
		st:     Status{State: StateStarting},
	}
	boot, err := bootstrap.For(cfg.Runtime)
	if err != nil {
		h.st = Status{State: StateFailed, Error: err.Error()}
	}
	h.boot = boot
	h.transport = &http.Transport{
		Proxy:               nil, // the bootstrap is local; no proxy variable may redirect it
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		// Shorter than any keep-alive timeout of the bootstraps, so the agent
		// closes idle connections before the bootstrap does.
		IdleConnTimeout:    60 * time.Second,
		DisableCompression: true,
	}
	h.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			addr, _ := pr.In.Context().Value(upstreamKey{}).(string)
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = addr
			pr.Out.Host = pr.In.Host
			pr.Out.Header.Del(protocol.SecretHeader)
			pr.Out.Header.Del(protocol.ControlHeader)
			// Rewrite drops X-Forwarded-*; the host's gateway set them and
			// the handler should see who called it.
			for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
				if v := pr.In.Header.Values(h); len(v) > 0 {
					pr.Out.Header[h] = v
				}
			}
		},
		Transport: h.transport,
		// FlushInterval 0: what streams (SSE, unknown length) is flushed
		// as it comes, the rest is buffered.
		BufferPool: newBufferPool(),
		ModifyResponse: func(resp *http.Response) error {
			resp.Header.Del(protocol.AgentErrorHeader) // only the agent may claim a response
			return nil
		},
		ErrorHandler: h.proxyError,
		ErrorLog:     slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return h
}

func (h *httpHandler) status() Status {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.st
}

func (h *httpHandler) setStatus(st Status) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.st = st
}

// start launches the supervisor, which runs the bootstrap until ctx ends or
// stop is called, restarting it with backoff when it dies.
func (h *httpHandler) start(ctx context.Context) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.st.State == StateFailed || h.supervisor != nil {
		return // no bootstrap for this runtime, or started already
	}
	ctx, h.cancel = context.WithCancel(ctx)
	h.supervisor = make(chan struct{})
	go h.supervise(ctx, h.supervisor)
}

// stop ends the supervisor, which stops the bootstrap.
func (h *httpHandler) stop(ctx context.Context) error {
	h.mu.Lock()
	cancel, done := h.cancel, h.supervisor
	h.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the bootstrap to stop: %w", ctx.Err())
	}
}

func (h *httpHandler) supervise(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	script, err := h.writeBootstrap()
	if err != nil {
		h.setStatus(Status{State: StateFailed, Error: err.Error()})
		h.log.Error("bootstrap cannot start", "step", "bootstrap", "err", err)
		return
	}
	backoff := h.opts.RestartMin
	for {
		began := time.Now()
		err := h.runOnce(ctx, script)
		if ctx.Err() != nil {
			return
		}
		h.mu.Lock()
		restart := h.restarting
		h.restarting = false
		h.mu.Unlock()
		if restart {
			h.log.Info("bootstrap restarted after a restore", "step", "restore")
			continue
		}
		if time.Since(began) >= healthyRun {
			backoff = h.opts.RestartMin
		}
		h.setStatus(Status{State: StateFailed, Error: fmt.Sprintf("%v (restarting in %s)", err, backoff)})
		h.log.Warn("bootstrap died", "step", "bootstrap", "err", err, "restart_in", backoff)
		timer := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		backoff = min(2*backoff, h.opts.RestartMax)
	}
}

// writeBootstrap writes the bootstrap's source to the run directory.
func (h *httpHandler) writeBootstrap() (string, error) {
	src, err := h.boot.Source()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(h.opts.RunDir, 0o755); err != nil {
		return "", fmt.Errorf("creating bootstrap directory: %w", err)
	}
	p := filepath.Join(h.opts.RunDir, h.boot.File)
	if err := os.WriteFile(p, src, 0o644); err != nil {
		return "", fmt.Errorf("writing bootstrap: %w", err)
	}
	return p, nil
}

// runOnce starts the bootstrap, marks it ready once its port accepts
// connections, and returns when it exits (why) or once ctx ended and it
// has been stopped.
func (h *httpHandler) runOnce(ctx context.Context, script string) error {
	interp, err := resolveCommand(h.boot.Interpreter, h.opts.CodeDir, lookupEnv(h.env, "PATH"))
	if err != nil {
		return fmt.Errorf("finding the %s interpreter: %w", h.boot.Runtime, err)
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))

	cmd := exec.Command(interp, append(slices.Clone(h.boot.Flags), script)...)
	cmd.Args[0] = h.boot.Interpreter
	cmd.Dir = h.opts.CodeDir
	cmd.Env = append(slices.Clip(h.env), h.boot.Env...)
	cmd.Env = append(cmd.Env,
		"FAAS_BOOTSTRAP_PORT="+strconv.Itoa(port),
		"FAAS_HANDLER="+h.cfg.Handler,
		"FAAS_CODE_DIR="+h.opts.CodeDir,
	)
	cmd.Env = append(cmd.Env, contractEnv(h.cfg)...)
	tail := newTailBuffer(failureTail)
	stdout := &lineWriter{c: h.con, prefix: h.prefix, flog: h.flog, stream: protocol.StreamStdout, requestID: h.reqs.current}
	stderr := &lineWriter{c: h.con, prefix: h.prefix, flog: h.flog, stream: protocol.StreamStderr, requestID: h.reqs.current}
	cmd.Stdout = stdout
	cmd.Stderr = io.MultiWriter(tail, stderr)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = bootstrapWaitDelay

	release, err := h.opts.Spawner.Spawn(cmd)
	if err != nil {
		return fmt.Errorf("starting the %s bootstrap: %w", h.boot.Runtime, err)
	}
	pid := cmd.Process.Pid
	exited := make(chan struct{})
	var waitErr error
	go func() {
		defer close(exited)
		waitErr = cmd.Wait()
		release()
		_ = killGroup(pid, syscall.SIGKILL) // the handler's own children go too
		_ = stdout.Close()
		_ = stderr.Close()
	}()
	h.transport.CloseIdleConnections() // connections to an earlier bootstrap are dead
	h.mu.Lock()
	h.st = Status{State: StateStarting}
	h.addr = addr
	h.pid = pid
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		if h.pid == pid {
			h.pid = 0
		}
		h.mu.Unlock()
	}()
	h.log.Info("bootstrap started", "step", "bootstrap", "pid", pid, "addr", addr)

	if err := waitListening(ctx, addr, exited); err == nil {
		h.setStatus(Status{State: StateReady})
		h.log.Info("handler ready", "step", "bootstrap", "pid", pid)
	}
	select {
	case <-exited:
		msg := fmt.Sprintf("%s bootstrap exited: %v", h.boot.Runtime, waitErr)
		if t := lastLines(tail.String()); t != "" {
			msg += ": " + t
		}
		return errors.New(msg)
	case <-ctx.Done():
		err := stopGroups(context.WithoutCancel(ctx), h.opts.StopGrace, map[int]<-chan struct{}{pid: exited})
		h.setStatus(Status{State: StateFailed, Error: "handler stopped"})
		if err != nil {
			h.log.Warn("stopping bootstrap", "step", "bootstrap", "err", err)
		}
		return ctx.Err()
	}
}

// Restore notification of the bootstrap: the agent writes restoreInfoFile
// in the run directory, sends restoreSignal, and waits up to restoreHookWait
// for the bootstrap to write restore-<n>.done (empty, or the hook's error).
const (
	restoreInfoFile = "restore.json"
	restoreSignal   = syscall.SIGUSR2
	restoreHookWait = 5 * time.Second
	restorePoll     = 2 * time.Millisecond
)

// restored tells the running bootstrap it was restored: it reseeds the
// language's PRNG from the (already reseeded) kernel RNG and calls the
// handler's on_restore hook. It returns the hook's failure, "" if none.
func (h *httpHandler) restored(ctx context.Context, r *protocol.Restore) string {
	h.mu.Lock()
	pid := h.pid
	h.restores++
	n := h.restores
	h.mu.Unlock()
	if pid == 0 {
		return "" // nothing runs yet: a bootstrap started from now on starts fresh
	}
	if h.boot.RestartOnRestore {
		// The clone gets a bootstrap of its own: until it listens, the
		// handler is starting (not failed) and health checks wait.
		h.mu.Lock()
		h.restarting = true
		h.st = Status{State: StateStarting}
		h.mu.Unlock()
		if err := killGroup(pid, syscall.SIGKILL); err != nil {
			return "restarting the bootstrap: " + err.Error()
		}
		return ""
	}
	info, _ := json.Marshal(map[string]any{"n": n, "name": r.Name, "vmId": r.VMID})
	done := filepath.Join(h.opts.RunDir, fmt.Sprintf("restore-%d.done", n))
	if err := os.WriteFile(filepath.Join(h.opts.RunDir, restoreInfoFile), info, 0o644); err != nil {
		return "writing the restore notice: " + err.Error()
	}
	if err := syscall.Kill(pid, restoreSignal); err != nil {
		return "signalling the bootstrap: " + err.Error()
	}
	ctx, cancel := context.WithTimeout(ctx, restoreHookWait)
	defer cancel()
	tick := time.NewTicker(restorePoll)
	defer tick.Stop()
	for {
		if b, err := os.ReadFile(done); err == nil {
			_ = os.Remove(done)
			return strings.TrimSpace(string(b))
		}
		select {
		case <-ctx.Done():
			return fmt.Sprintf("the bootstrap did not confirm the restore within %s", restoreHookWait)
		case <-tick.C:
		}
	}
}

// lastLines trims a stderr tail to its last lines, the likeliest to say why.
func lastLines(s string) string {
	s = strings.TrimSpace(s)
	lines := strings.Split(s, "\n")
	if len(lines) > 3 {
		lines = lines[len(lines)-3:]
	}
	return strings.Join(lines, " | ")
}

// freePort asks the kernel for a free loopback port for the bootstrap.
func freePort() (int, error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("choosing a bootstrap port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("choosing a bootstrap port: %w", err)
	}
	return port, nil
}

// waitListening returns nil once addr accepts a connection, or an error
// once the process exited or ctx ended.
func waitListening(ctx context.Context, addr string, exited <-chan struct{}) error {
	d := net.Dialer{Timeout: 250 * time.Millisecond}
	tick := time.NewTicker(readyPoll)
	defer tick.Stop()
	for {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			_ = c.Close() // only the handshake mattered
			return nil
		}
		select {
		case <-exited:
			return errors.New("bootstrap exited before it listened")
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func (h *httpHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	st, addr := h.st, h.addr
	h.mu.Unlock()
	switch st.State {
	case StateStarting:
		writeError(w, http.StatusServiceUnavailable, "handler is starting")
		return
	case StateFailed:
		writeError(w, http.StatusBadGateway, "handler is not running: "+st.Error)
		return
	}
	defer h.reqs.begin(r.Header.Get(protocol.RequestIDHeader))()
	ctx, cancel := context.WithTimeout(r.Context(), time.Duration(h.cfg.Timeout))
	defer cancel()
	ctx = context.WithValue(ctx, upstreamKey{}, addr)
	h.proxy.ServeHTTP(w, r.WithContext(ctx))
}

// proxyError maps a failed proxy round trip to the agent's error responses.
func (h *httpHandler) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(r.Context().Err(), context.DeadlineExceeded):
		writeError(w, http.StatusGatewayTimeout, fmt.Sprintf("handler did not answer within %s", time.Duration(h.cfg.Timeout)))
	case r.Context().Err() != nil:
		h.log.Debug("client closed request", "path", r.URL.Path)
		writeError(w, 499, "client closed request")
	default:
		h.log.Warn("handler unreachable", "err", err)
		writeError(w, http.StatusBadGateway, "handler unreachable: "+err.Error())
	}
}
