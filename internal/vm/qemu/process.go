package qemu

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// process is a child process (QEMU) and the news of its end.
type process struct {
	name string // "qemu", for messages
	pid  int
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // why it exited (nil: status 0); read only after done
}

// startProcess starts cmd in its own process group, as the user cred names
// (nil: the engine's own), to be killed with SIGKILL should the engine's
// process die, and reaps it in the background.
//
// Pdeathsig is delivered when the *thread* that forked the child exits, not
// the process, and the Go runtime retires the thread of any goroutine that
// ends while locked to it. So the child is forked from a goroutine that
// locks its OS thread and stays on it, blocked in Wait, for the child's
// whole life: the signal then fires only when the engine's process dies.
// The goroutine never unlocks, so its thread is retired once the child is
// reaped, which is harmless. The cost is one OS thread per running child.
// (The user changes in the forked child before Pdeathsig is set and
// before exec, so the signal stays armed.)
//
// The child is not tied to any context: a VM outlives the boot context.
func startProcess(name string, cmd *exec.Cmd, cred *syscall.Credential) (*process, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: cred}
	p := &process{name: name, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		p.pid = cmd.Process.Pid
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	return p, nil
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL to the process group unless the process has already
// been reaped. (While the leader lives the group ID cannot be reused; the
// window between the check and the signal is a few instructions.)
func (p *process) kill() {
	if !p.exited() {
		syscall.Kill(-p.pid, syscall.SIGKILL)
	}
}

// killAndWait kills the process and waits up to limit for it to be reaped.
func (p *process) killAndWait(limit time.Duration) error {
	p.kill()
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
		return fmt.Errorf("%s pid %d still running %s after SIGKILL", p.name, p.pid, limit)
	}
}

// exitError describes how the process ended, with the tail of its stderr
// file when there is one.
func (p *process) exitError(stderrPath string) error {
	status := "status 0"
	if p.err != nil {
		status = p.err.Error()
	}
	if tail := tailFile(stderrPath, tailBytes); tail != "" {
		return fmt.Errorf("%s exited (%s): %s", p.name, status, tail)
	}
	return fmt.Errorf("%s exited (%s)", p.name, status)
}

// tailBytes is how much of a log an error message quotes.
const tailBytes = 2048

// tailFile returns up to the last n bytes of the file at path, trimmed,
// starting at a line boundary when it was cut, or "" if there is nothing.
func tailFile(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(fi.Size()-n, 0)
	b, err := io.ReadAll(io.NewSectionReader(f, off, fi.Size()-off))
	if err != nil {
		return ""
	}
	if off > 0 {
		if i := bytes.IndexByte(b, '\n'); i >= 0 && i < len(b)-1 {
			b = b[i+1:]
		}
	}
	return strings.TrimSpace(strings.ToValidUTF8(string(b), "?"))
}
