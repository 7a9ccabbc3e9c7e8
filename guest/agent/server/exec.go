package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/faasvm/appliance/guest/protocol"
)

// pipeDrain is how long the agent waits, after a handler exited and its
// process group was killed, for processes that escaped the group (setsid) to
// let go of its stdout and stderr.
const pipeDrain = time.Second

// execHandler runs Config.Command once per request, like OpenFaaS's classic
// watchdog: the request body on stdin, request metadata in Http_* variables,
// stdout as the response body.
type execHandler struct {
	cfg    *protocol.Config
	opts   Options
	con    *console
	log    *slog.Logger
	flog   *funcLog
	env    []string // the base environment with Config.Env applied
	prefix string   // console prefix of handler lines

	mu       sync.Mutex
	path     string // resolved executable; "" until it resolves
	active   map[int]<-chan struct{}
	stopping bool
}

var _ handler = (*execHandler)(nil)

func newExecHandler(cfg *protocol.Config, opts Options, con *console, log *slog.Logger, flog *funcLog) *execHandler {
	return &execHandler{
		cfg:    classicConfig(cfg, opts.RunDir),
		opts:   opts,
		con:    con,
		log:    log,
		flog:   flog,
		env:    append(mergeEnv(opts.Env, cfg.Env), contractEnv(cfg)...),
		prefix: consolePrefix(cfg.Name),
		active: make(map[int]<-chan struct{}),
	}
}

func consolePrefix(name string) string {
	if name == "" {
		name = "handler"
	}
	return "[" + name + "] "
}

// start has nothing to launch: exec mode is ready once the command
// resolves. A classic template's runner is written to the run directory.
func (e *execHandler) start(context.Context) {
	if e.cfg.Template != protocol.TemplateOpenFaaSClassic {
		return
	}
	if err := writeClassicRunner(e.opts.RunDir, e.cfg.Command[1]); err != nil {
		e.log.Error("writing the classic template's runner", "err", err)
	}
}

// restored does nothing: every request runs a new process, which starts
// from the reseeded kernel RNG.
func (e *execHandler) restored(context.Context, *protocol.Restore) string { return "" }

func (e *execHandler) status() Status {
	e.mu.Lock()
	stopping := e.stopping
	e.mu.Unlock()
	if stopping {
		return Status{State: StateFailed, Error: "handler stopped"}
	}
	if _, err := e.executable(); err != nil {
		return Status{State: StateFailed, Error: err.Error()}
	}
	return Status{State: StateReady}
}

// executable resolves the command once; until it does, every call tries again.
func (e *execHandler) executable() (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.path != "" {
		return e.path, nil
	}
	p, err := resolveCommand(e.cfg.Command[0], e.opts.CodeDir, lookupEnv(e.env, "PATH"))
	if err != nil {
		return "", fmt.Errorf("resolving command: %w", err)
	}
	e.path = p
	return p, nil
}

func (e *execHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path, err := e.executable()
	if err != nil {
		writeError(w, http.StatusBadGateway, "handler is not runnable: "+err.Error())
		return
	}
	timeout := time.Duration(e.cfg.Timeout)
	// One budget covers reading the body and running the handler.
	deadline := time.Now().Add(timeout)
	// The body is read whole before the handler starts (as the classic
	// watchdog does), within the invocation's time budget, so that no
	// goroutine reads the request after the response is written.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(deadline) // not every writer supports deadlines
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, e.opts.MaxBody))
	// Lift the deadline again: once it passes, the server would take the
	// connection for dead and cancel the request's context.
	_ = rc.SetReadDeadline(time.Time{})
	if err != nil {
		// The rest of the body is not read: close the connection rather
		// than let the server drain a client that stalls, with no deadline.
		w.Header().Set("Connection", "close")
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", tooBig.Limit))
		case errors.Is(err, os.ErrDeadlineExceeded):
			writeError(w, http.StatusRequestTimeout, fmt.Sprintf("request body did not arrive within %s", timeout))
		default:
			writeError(w, http.StatusBadRequest, "reading request body: "+err.Error())
		}
		return
	}

	ctx, cancelTimeout := context.WithDeadline(r.Context(), deadline)
	defer cancelTimeout()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	env := requestEnv(e.env, r, len(body))
	if slices.ContainsFunc(env[len(e.env):], func(v string) bool { return strings.IndexByte(v, 0) >= 0 }) {
		// A process environment cannot carry a NUL (exec refuses it).
		writeError(w, http.StatusBadRequest, "the request's path, query or headers contain a NUL byte, which the handler's environment cannot carry")
		return
	}
	res := e.run(ctx, cancel, path, env, body, r.Header.Get(protocol.RequestIDHeader))
	switch {
	case res.startErr != nil:
		e.log.Error("starting handler", "err", res.startErr)
		writeError(w, http.StatusInternalServerError, res.startErr.Error())
	case errors.Is(context.Cause(ctx), errOutputTooLarge):
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("handler wrote more than %d bytes to stdout", e.opts.MaxOutput))
	case r.Context().Err() != nil:
		// The client went away; its handler was killed and nobody reads this.
		e.log.Debug("client closed request", "path", r.URL.Path)
		writeError(w, 499, "client closed request")
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		writeError(w, http.StatusGatewayTimeout, fmt.Sprintf("handler did not finish within %s", timeout))
	case res.waitErr != nil:
		tail := res.stderr
		writeAgentError(w, http.StatusInternalServerError, agentError{Error: describeExit(res.waitErr), Stderr: &tail})
	default:
		ct := e.cfg.ContentType
		if ct == "" {
			ct = http.DetectContentType(res.stdout)
		}
		w.Header().Set("Content-Type", ct)
		w.Header().Set("Content-Length", strconv.Itoa(len(res.stdout)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(res.stdout) // the client may be gone; nothing to do about it
	}
}

// describeExit says why a handler process failed.
func describeExit(err error) string {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return "running handler: " + err.Error()
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return fmt.Sprintf("handler was killed by signal %d (%s)", int(ws.Signal()), ws.Signal())
	}
	return fmt.Sprintf("handler exited with status %d", ee.ExitCode())
}

// requestEnv is the environment of one invocation: base, then the request
// as Http_* variables (OpenFaaS classic watchdog names). The secret headers
// are not passed on (ServeHTTP has removed them already).
func requestEnv(base []string, r *http.Request, bodyLen int) []string {
	env := slices.Clip(base)
	names := make([]string, 0, len(r.Header))
	for name := range r.Header {
		if strings.EqualFold(name, protocol.SecretHeader) || strings.EqualFold(name, protocol.ControlHeader) ||
			strings.ContainsAny(name, "=\x00") {
			continue // no variable can be named so
		}
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		env = append(env, "Http_"+strings.ReplaceAll(name, "-", "_")+"="+strings.Join(r.Header.Values(name), ", "))
	}
	// Last, so that headers named Method, Path, Query or ContentLength
	// cannot override them (exec keeps the last of repeated variables).
	return append(env,
		"Http_Method="+r.Method,
		"Http_Path="+r.URL.Path,
		"Http_Query="+r.URL.RawQuery,
		"Http_ContentLength="+strconv.Itoa(bodyLen),
	)
}

type execResult struct {
	startErr error
	waitErr  error
	stdout   []byte
	stderr   string // the last stderrTailSize bytes
}

// run starts one handler process and waits for it. ctx ends it early (the
// process group is killed); cancel is called with errOutputTooLarge when the
// handler writes too much. Its stderr lines are the function's output,
// tagged with requestID.
func (e *execHandler) run(ctx context.Context, cancel context.CancelCauseFunc, path string, env []string, body []byte, requestID string) execResult {
	var pipes [3][2]*os.File // stdin, stdout, stderr: {read end, write end}
	defer func() {
		for _, p := range pipes {
			for _, f := range p {
				if f != nil {
					_ = f.Close() // most are closed already; a second Close only reports that
				}
			}
		}
	}()
	for i := range pipes {
		r, w, err := os.Pipe()
		if err != nil {
			return execResult{startErr: fmt.Errorf("creating handler pipes: %w", err)}
		}
		pipes[i] = [2]*os.File{r, w}
	}
	stdinR, stdinW := pipes[0][0], pipes[0][1]
	stdoutR, stdoutW := pipes[1][0], pipes[1][1]
	stderrR, stderrW := pipes[2][0], pipes[2][1]

	cmd := exec.CommandContext(ctx, path, e.cfg.Command[1:]...)
	cmd.Args[0] = e.cfg.Command[0]
	cmd.Dir = e.opts.CodeDir
	cmd.Env = env
	// Files, not writers: os/exec then starts no copying goroutines, and
	// Wait returns as soon as the handler itself exits.
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdinR, stdoutW, stderrW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return killGroup(cmd.Process.Pid, syscall.SIGKILL) }

	done := make(chan struct{})
	defer close(done)
	release, err := e.spawn(cmd, done)
	if err != nil {
		return execResult{startErr: fmt.Errorf("starting handler %s: %w", e.cfg.Command[0], err)}
	}
	pid := cmd.Process.Pid
	defer e.untrack(pid)
	// The child holds its ends now.
	_ = stdinR.Close()
	_ = stdoutW.Close()
	_ = stderrW.Close()

	stdinDone := make(chan struct{})
	go func() {
		defer close(stdinDone)
		_, _ = stdinW.Write(body) // EPIPE when the handler does not read its input: fine
		_ = stdinW.Close()
	}()
	stdout := &cappedBuffer{max: e.opts.MaxOutput, overflow: func() { cancel(errOutputTooLarge) }}
	tail := newTailBuffer(stderrTailSize)
	lines := &lineWriter{c: e.con, prefix: e.prefix, flog: e.flog, stream: protocol.StreamStderr, requestID: func() string { return requestID }}
	var readers sync.WaitGroup
	readers.Go(func() {
		_, _ = io.Copy(stdout, stdoutR) // stops at EOF, at the capture limit or when stdoutR is closed
	})
	readers.Go(func() {
		_, _ = io.Copy(io.MultiWriter(tail, lines), stderrR)
		_ = lines.Close()
	})

	waitErr := cmd.Wait()
	release()
	// Whatever the handler left running in its group goes with it.
	if err := killGroup(pid, syscall.SIGKILL); err != nil {
		e.log.Warn("killing handler leftovers", "err", err)
	}
	readersDone := make(chan struct{})
	go func() { readers.Wait(); close(readersDone) }()
	select {
	case <-readersDone:
	case <-time.After(pipeDrain):
		// Something outside the group still holds the pipes.
		_ = stdoutR.Close()
		_ = stderrR.Close()
		<-readersDone
	}
	_ = stdinW.Close()
	<-stdinDone
	return execResult{waitErr: waitErr, stdout: stdout.buf.Bytes(), stderr: tail.String()}
}

// spawn starts cmd and records it for stop; done is closed once it has been
// waited for.
func (e *execHandler) spawn(cmd *exec.Cmd, done <-chan struct{}) (func(), error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopping {
		return nil, errors.New("the agent is stopping")
	}
	release, err := e.opts.Spawner.Spawn(cmd)
	if err != nil {
		return nil, err
	}
	e.active[cmd.Process.Pid] = done
	return release, nil
}

func (e *execHandler) untrack(pid int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.active, pid)
}

// stop refuses new invocations and ends the running ones.
func (e *execHandler) stop(ctx context.Context) error {
	e.mu.Lock()
	e.stopping = true
	procs := maps.Clone(e.active)
	e.mu.Unlock()
	if len(procs) == 0 {
		return nil
	}
	return stopGroups(ctx, e.opts.StopGrace, procs)
}
