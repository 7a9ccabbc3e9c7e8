package ignite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// CommandError is a CLI call that did not succeed: it exited non-zero,
// was killed, or could not be started.
type CommandError struct {
	// Command is the program and subcommand, e.g. "ignite run".
	Command string
	// Args are all arguments the program got.
	Args []string
	// ExitCode is the exit status, -1 if the program did not exit by
	// itself (killed, or never started).
	ExitCode int
	// Stderr and Stdout are the ends of what the program wrote (trimmed,
	// at most outputLimit bytes each). Ignite v0.10 logs everything,
	// its fatal error included, to stdout; other programs use stderr.
	Stderr, Stdout string
	// Err is the underlying error (an *exec.ExitError, or a start error).
	Err error
}

func (e *CommandError) Error() string {
	msg := fmt.Sprintf("%s: %v", e.Command, e.Err)
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	if e.Stdout != "" {
		msg += ": " + e.Stdout
	}
	return msg
}

func (e *CommandError) Unwrap() error { return e.Err }

// output is what the program wrote, stderr then stdout.
func (e *CommandError) output() string { return e.Stderr + "\n" + e.Stdout }

// outputLimit is how much of each of a command's outputs an error keeps.
const outputLimit = 4096

// killGrace is how long a killed command's output pipes may stay open
// (held by a grandchild) before Wait gives up on them.
const killGrace = 2 * time.Second

// runner runs CLI commands, each bounded by a timeout.
type runner struct{}

// run executes path with args and returns its stdout. The command runs in
// its own process group, which is killed when ctx ends or timeout passes;
// the error then wraps the context's error and names the command. A
// non-zero exit gives a *CommandError carrying the end of stderr and
// stdout.
func (runner) run(ctx context.Context, timeout time.Duration, path string, args []string) ([]byte, error) {
	name := commandName(path, args)
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, context.Cause(ctx))
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The whole group: ignite runs mount, tar, dmsetup... as children.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = killGrace
	err := cmd.Run()
	if ctx.Err() != nil {
		// Killed for the deadline or cancellation, whatever the exit said.
		return nil, &CommandError{
			Command: name, Args: args, ExitCode: -1,
			Stderr: tail(stderr.Bytes(), outputLimit), Stdout: tail(stdout.Bytes(), outputLimit),
			Err: fmt.Errorf("killed after %w", context.Cause(ctx)),
		}
	}
	if err != nil {
		code := -1
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		return nil, &CommandError{
			Command: name, Args: args, ExitCode: code,
			Stderr: tail(stderr.Bytes(), outputLimit), Stdout: tail(stdout.Bytes(), outputLimit),
			Err: err,
		}
	}
	return stdout.Bytes(), nil
}

// commandName is "ignite run", "docker logs", ...: the program's base name
// and its first argument that is not a flag.
func commandName(path string, args []string) string {
	prog := path[strings.LastIndexByte(path, '/')+1:]
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--namespace" { // ctr's global flag takes a value
			i++
			continue
		}
		if !strings.HasPrefix(a, "-") {
			return prog + " " + a
		}
	}
	return prog
}

// tail returns the last n bytes of b, trimmed, cut at a line start when
// it had to be cut.
func tail(b []byte, n int) string {
	b = bytes.TrimSpace(b)
	if len(b) > n {
		b = b[len(b)-n:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 && i < len(b)-1 {
			b = b[i+1:]
		}
	}
	return strings.ToValidUTF8(string(b), "?")
}
