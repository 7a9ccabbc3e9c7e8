// Package server is the guest agent's HTTP API, in two handlers for two
// listeners. The data handler (Server itself) checks the per-VM data secret
// and invokes the function for every path and method, either as one process
// per request (exec mode) or behind a long-running per-language bootstrap
// (http mode). The control handler (Server.Control) checks the per-VM
// control secret and reports the handler's health or powers the VM off;
// nothing that reaches the data handler can get there.
//
// It knows nothing about being PID 1: the caller passes the code directory,
// a Spawner (so a zombie reaper can stay away from the processes started
// here) and the function that finally powers the machine off. Tests point
// the code directory at a temporary folder.
package server

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/faasvm/appliance/guest/protocol"
)

// States reported by the health endpoint.
const (
	StateStarting = "starting"
	StateReady    = "ready"
	StateFailed   = "failed"
)

// Status is the handler's health as the health endpoint reports it.
type Status struct {
	State string `json:"status"`
	Error string `json:"error,omitempty"`
}

// Spawner starts cmd. As PID 1 the agent passes one that registers the
// process with its zombie reaper, so the reaper never collects an exit status
// that cmd.Wait is due to collect; release is called once cmd.Wait returned.
type Spawner interface {
	Spawn(cmd *exec.Cmd) (release func(), err error)
}

// directSpawner starts processes with no reaper to coordinate with.
type directSpawner struct{}

func (directSpawner) Spawn(cmd *exec.Cmd) (func(), error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return func() {}, nil
}

var _ Spawner = directSpawner{}

// Defaults for the zero values of Options.
const (
	DefaultStopGrace  = 5 * time.Second
	DefaultMaxOutput  = 32 << 20
	DefaultMaxBody    = 32 << 20
	DefaultRestartMin = 100 * time.Millisecond
	DefaultRestartMax = 10 * time.Second
)

// stderrTailSize is how much of a handler's stderr an error response carries.
const stderrTailSize = 4 << 10

// Options are the host-independent parts of the agent's environment.
type Options struct {
	// CodeDir holds the function's code (protocol.CodeDir in the guest).
	// Handlers run with it as their working directory.
	CodeDir string
	// RunDir is a writable directory for the http-mode bootstrap (/run/faas
	// in the guest).
	RunDir string
	// Env is the base environment of handler processes; nil means the
	// agent's own.
	Env []string
	// Console receives handler log lines, prefixed with the function name;
	// nil means os.Stdout (the serial console in the guest).
	Console io.Writer
	// Logger is the agent's own log; nil means slog.Default().
	Logger *slog.Logger
	// Spawner starts handler processes; nil starts them directly.
	Spawner Spawner
	// Poweroff is called after a poweroff request, once the handler has
	// stopped. Nil means the handler is only stopped.
	Poweroff func(ctx context.Context) error
	// StopGrace is how long a handler has between SIGTERM and SIGKILL.
	StopGrace time.Duration
	// MaxOutput bounds the stdout an exec-mode handler may produce.
	MaxOutput int64
	// MaxBody bounds the request body an exec-mode handler is given.
	MaxBody int64
	// RestartMin and RestartMax bound the backoff between restarts of a
	// crashed http-mode bootstrap.
	RestartMin, RestartMax time.Duration
	// Reseed, called for a restore request before anything else, sets the
	// guest's wall clock to t and adds entropy to the kernel RNG, then
	// reseeds it; it returns how far the clock was stepped. Nil (tests,
	// a development agent): the clock and RNG are left alone.
	Reseed func(t time.Time, entropy []byte) (time.Duration, error)
}

func (o *Options) setDefaults() {
	if o.Env == nil {
		o.Env = os.Environ()
	}
	if o.Console == nil {
		o.Console = os.Stdout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Spawner == nil {
		o.Spawner = directSpawner{}
	}
	if o.StopGrace <= 0 {
		o.StopGrace = DefaultStopGrace
	}
	if o.MaxOutput <= 0 {
		o.MaxOutput = DefaultMaxOutput
	}
	if o.MaxBody <= 0 {
		o.MaxBody = DefaultMaxBody
	}
	if o.RestartMin <= 0 {
		o.RestartMin = DefaultRestartMin
	}
	if o.RestartMax < o.RestartMin {
		o.RestartMax = max(DefaultRestartMax, o.RestartMin)
	}
}

// handler runs the function in one of the modes.
type handler interface {
	http.Handler
	// restored tells the handler's processes that the VM was restored
	// from a snapshot (http mode: the bootstrap reseeds and calls
	// on_restore); it returns the hook's failure, "" if none.
	restored(ctx context.Context, r *protocol.Restore) string
	// start begins whatever runs for the agent's lifetime (ctx).
	start(ctx context.Context)
	status() Status
	// stop ends every handler process: SIGTERM, then SIGKILL after the grace.
	stop(ctx context.Context) error
}

// Server is the agent's HTTP API. Start it, serve it, Stop it.
type Server struct {
	cfg        protocol.Config
	secrets    atomic.Pointer[secretPair] // replaced by a restore
	reseed     func(time.Time, []byte) (time.Duration, error)
	restoreMu  sync.Mutex // one restore at a time
	log        *slog.Logger
	handler    handler
	poweroff   func(ctx context.Context) error
	grace      time.Duration
	powerOnce  sync.Once
	poweredOff chan struct{} // closed once the poweroff sequence has run
	flog       *funcLog      // the function's output, for LogsPath
	endLogs    chan struct{} // closed when poweroff begins: log streams end
}

// New validates cfg and prepares the handler; nothing runs before Start.
// A runtime without a bootstrap is not an error here: the health endpoint
// reports it as failed, so the host sees why.
func New(cfg *protocol.Config, opts Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.CodeDir == "" {
		return nil, errors.New("agent server: no code directory")
	}
	if cfg.Mode == protocol.ModeHTTP && opts.RunDir == "" {
		return nil, errors.New("agent server: http mode needs a run directory for the bootstrap")
	}
	codeDir, err := filepath.Abs(opts.CodeDir)
	if err != nil {
		return nil, fmt.Errorf("agent server: code directory: %w", err)
	}
	opts.CodeDir = codeDir
	opts.setDefaults()
	s := &Server{
		cfg:        *cfg,
		log:        opts.Logger.With("function", cfg.Name, "mode", cfg.Mode),
		poweroff:   opts.Poweroff,
		reseed:     opts.Reseed,
		grace:      opts.StopGrace,
		poweredOff: make(chan struct{}),
		flog:       newFuncLog(),
		endLogs:    make(chan struct{}),
	}
	s.secrets.Store(&secretPair{data: cfg.Secret, control: cfg.ControlSecret})
	con := &console{w: opts.Console}
	switch cfg.Mode {
	case protocol.ModeExec:
		s.handler = newExecHandler(&s.cfg, opts, con, s.log, s.flog)
	case protocol.ModeHTTP:
		s.handler = newHTTPHandler(&s.cfg, opts, con, s.log, s.flog)
	}
	return s, nil
}

// Start launches the handler (the bootstrap in http mode). ctx bounds the
// handler's lifetime, not just the start.
func (s *Server) Start(ctx context.Context) {
	s.handler.start(ctx)
}

// Stop ends the handler's processes, forcing them after the stop grace; ctx
// bounds the wait.
func (s *Server) Stop(ctx context.Context) error {
	return s.handler.stop(ctx)
}

// ServeHTTP is the data handler: it checks the data secret, removes it (and
// any control header) from the request, and hands every request to the
// function, whatever its path: there are no reserved paths.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !secretMatches(r.Header.Values(protocol.SecretHeader), s.secrets.Load().data) {
		writeError(w, http.StatusForbidden, "missing or wrong "+protocol.SecretHeader+" header")
		return
	}
	r.Header.Del(protocol.SecretHeader)
	r.Header.Del(protocol.ControlHeader)
	s.handler.ServeHTTP(w, r)
}

// Control returns the control handler, for the control listener: with the
// control secret, GET protocol.HealthPath, POST protocol.PoweroffPath and
// GET protocol.LogsPath; 404 for any other path.
func (s *Server) Control() http.Handler {
	return http.HandlerFunc(s.serveControl)
}

func (s *Server) serveControl(w http.ResponseWriter, r *http.Request) {
	if !secretMatches(r.Header.Values(protocol.ControlHeader), s.secrets.Load().control) {
		writeError(w, http.StatusForbidden, "missing or wrong "+protocol.ControlHeader+" header")
		return
	}
	// Exact paths only: no cleaning, no unescaping, no prefix matching.
	switch r.URL.EscapedPath() {
	case protocol.HealthPath:
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			writeError(w, http.StatusMethodNotAllowed, "health wants GET")
			return
		}
		s.serveHealth(w)
	case protocol.PoweroffPath:
		if r.Method != http.MethodPost {
			writeError(w, http.StatusMethodNotAllowed, "poweroff wants POST")
			return
		}
		s.servePoweroff(w)
	case protocol.RestorePath:
		if r.Method != http.MethodPost {
			writeError(w, http.StatusMethodNotAllowed, "restore wants POST")
			return
		}
		s.serveRestore(w, r)
	case protocol.LogsPath:
		if r.Method != http.MethodGet {
			writeError(w, http.StatusMethodNotAllowed, "logs wants GET")
			return
		}
		s.flog.serve(w, r, s.endLogs)
	default:
		writeError(w, http.StatusNotFound, "no control operation at "+r.URL.EscapedPath())
	}
}

// secretPair is the VM's two secrets.
type secretPair struct{ data, control string }

// maxRestoreBody bounds a restore request's body.
const maxRestoreBody = 16 << 10

// serveRestore makes a VM restored from a snapshot its own machine: clock,
// kernel RNG, secrets, then the handler's processes (see
// protocol.RestorePath). The request carried the old control secret; the
// answer is the last thing that secret gets.
func (s *Server) serveRestore(w http.ResponseWriter, r *http.Request) {
	s.restoreMu.Lock()
	defer s.restoreMu.Unlock()
	var req protocol.Restore
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRestoreBody+1))
	switch {
	case err != nil:
		writeError(w, http.StatusBadRequest, "reading restore request: "+err.Error())
		return
	case len(body) > maxRestoreBody:
		writeError(w, http.StatusRequestEntityTooLarge, "restore request too large")
		return
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, "decoding restore request: "+err.Error())
		return
	}
	if err := req.Validate(); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var res protocol.RestoreResult
	if s.reseed != nil {
		step, err := s.reseed(time.Unix(0, req.TimeUnixNano), req.Entropy)
		if err != nil {
			// A clone with the snapshot's RNG or clock must not serve.
			s.log.Error("restore: reseeding", "step", "restore", "err", err)
			writeError(w, http.StatusInternalServerError, "reseeding the guest: "+err.Error())
			return
		}
		res.ClockStepMs = step.Milliseconds()
	}
	s.secrets.Store(&secretPair{data: req.Secret, control: req.ControlSecret})
	res.Hook = s.handler.restored(r.Context(), &req)
	s.log.Info("restored from a snapshot", "step", "restore", "vm_id", req.VMID, "clock_step_ms", res.ClockStepMs, "hook_error", res.Hook)
	writeJSON(w, http.StatusOK, res)
}

// secretMatches reports whether got is exactly one value equal to want
// (compared in constant time); an empty want matches nothing.
func secretMatches(got []string, want string) bool {
	return len(got) == 1 && want != "" && subtle.ConstantTimeCompare([]byte(got[0]), []byte(want)) == 1
}

func (s *Server) serveHealth(w http.ResponseWriter) {
	st := s.handler.status()
	code := http.StatusOK
	if st.State != StateReady {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, st)
}

// servePoweroff answers first, then stops the handler and powers off in the
// background: the host learns the request was accepted, then sees the VM exit.
func (s *Server) servePoweroff(w http.ResponseWriter) {
	w.Header().Set("Connection", "close")
	writeJSON(w, http.StatusAccepted, map[string]string{"status": "powering off"})
	go s.powerOff()
}

func (s *Server) powerOff() {
	s.powerOnce.Do(func() {
		defer close(s.poweredOff)
		// Streams would hold the control server's shutdown for its whole
		// grace: end them first.
		close(s.endLogs)
		// Not the request's context: the request is answered before this runs.
		ctx, cancel := context.WithTimeout(context.Background(), s.grace+5*time.Second)
		defer cancel()
		s.log.Info("powering off", "step", "poweroff")
		if err := s.Stop(ctx); err != nil {
			s.log.Error("stopping handler before poweroff", "step", "poweroff", "err", err)
		}
		if s.poweroff == nil {
			return
		}
		if err := s.poweroff(ctx); err != nil {
			s.log.Error("powering off", "step", "poweroff", "err", err)
		}
	})
}

// PoweredOff is closed once a poweroff request has been carried out (in the
// guest the machine is gone by then; tests can wait on it).
func (s *Server) PoweredOff() <-chan struct{} { return s.poweredOff }

// writeJSON writes v as a JSON response.
func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(fmt.Sprintf(`{"error":%q}`, "encoding response: "+err.Error()))
		code = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n')) // the client may be gone; nothing to do about it
}

// agentError is the body of every response the agent writes itself.
type agentError struct {
	Error string `json:"error"`
	// Stderr is the tail of a failed exec-mode handler's stderr.
	Stderr *string `json:"stderr,omitempty"`
}

// writeError writes an agent-generated error.
func writeError(w http.ResponseWriter, code int, msg string) {
	writeAgentError(w, code, agentError{Error: msg})
}

func writeAgentError(w http.ResponseWriter, code int, e agentError) {
	w.Header().Set(protocol.AgentErrorHeader, "1")
	writeJSON(w, code, e)
}
