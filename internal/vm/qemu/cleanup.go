package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Leftover is one VM directory an earlier run left behind.
type Leftover struct {
	// Dir is the VM directory, now removed.
	Dir string
	// Killed lists the QEMU processes of that VM that were still running
	// and have been killed.
	Killed []int
}

// Cleanup removes what an earlier run of the engine left under stateDir: for
// each VM directory it kills the QEMU process named by its pid file, after
// checking in /proc that the pid really is that program
// started for that directory (a pid may have been reused), then removes the
// directory. Call it before starting any VM with the same state dir.
//
// A QEMU process is recognised by the base name of its argv[0] starting
// with "qemu-system" (DefaultQEMUPath's family); Engine.Cleanup matches the
// engine's configured QEMU binary instead.
func Cleanup(ctx context.Context, stateDir string) ([]Leftover, error) {
	return cleanup(ctx, stateDir, qemuSystemPrefix)
}

// qemuSystemPrefix starts the name of every stock QEMU system emulator.
const qemuSystemPrefix = "qemu-system"

// cleanup is Cleanup for QEMU processes whose argv[0] base name starts
// with qemuProgram.
func cleanup(ctx context.Context, stateDir, qemuProgram string) ([]Leftover, error) {
	root := filepath.Join(stateDir, "vms")
	entries, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cleaning up %s: %w", root, err)
	}
	var (
		out  []Leftover
		errs []error
	)
	for _, ent := range entries {
		if !ent.IsDir() {
			continue
		}
		lo, err := cleanupDir(ctx, filepath.Join(root, ent.Name()), qemuProgram)
		if err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
			continue
		}
		out = append(out, lo)
	}
	if len(errs) > 0 {
		return out, fmt.Errorf("cleaning up %s: %w", root, errors.Join(errs...))
	}
	return out, nil
}

// Cleanup runs the package's Cleanup on the engine's state dir, matching
// QEMU processes by the base name of the configured QEMU binary, and logs
// what it found.
func (e *Engine) Cleanup(ctx context.Context) error {
	los, err := cleanup(ctx, e.cfg.StateDir, filepath.Base(e.cfg.QEMUPath))
	for _, lo := range los {
		e.log.Warn("removed a vm left by an earlier run", "dir", lo.Dir, "killed_pids", lo.Killed)
	}
	return err
}

// cleanupDir kills the VM processes of one directory (QEMU recognised by
// qemuProgram, see isVMProcess) and removes it.
func cleanupDir(ctx context.Context, dir, qemuProgram string) (Leftover, error) {
	lo := Leftover{Dir: dir}
	for _, pf := range []struct{ file, program string }{
		{qemuPidName, qemuProgram},
	} {
		pid, ok := readPidFile(filepath.Join(dir, pf.file))
		if !ok || !isVMProcess(pid, pf.program, dir) {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			if errors.Is(err, syscall.ESRCH) {
				continue
			}
			return lo, fmt.Errorf("killing %s pid %d of %s: %w", pf.program, pid, dir, err)
		}
		lo.Killed = append(lo.Killed, pid)
	}
	for _, pid := range lo.Killed {
		if err := waitGone(ctx, pid); err != nil {
			return lo, fmt.Errorf("waiting for pid %d of %s to end: %w", pid, dir, err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return lo, fmt.Errorf("removing %s: %w", dir, err)
	}
	return lo, nil
}

// readPidFile reads a pid file; ok is false if it is missing or garbled.
func readPidFile(path string) (pid int, ok bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, false
	}
	return pid, true
}

// isVMProcess reports whether pid runs program (the base name of its argv[0]
// starts with it) with an argument naming a file in dir.
func isVMProcess(pid int, program, dir string) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil || len(b) == 0 {
		return false
	}
	args := strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
	if !strings.HasPrefix(filepath.Base(args[0]), program) {
		return false
	}
	for _, a := range args[1:] {
		if strings.Contains(a, dir+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

// waitGone waits until pid no longer runs: its /proc entry is gone, or it
// is a zombie (dead, waiting for its parent to reap it).
func waitGone(ctx context.Context, pid int) error {
	stat := filepath.Join("/proc", strconv.Itoa(pid), "stat")
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		b, err := os.ReadFile(stat)
		if err != nil || procState(b) == 'Z' || procState(b) == 'X' {
			return nil
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-tick.C:
		}
	}
}

// procState returns the state letter of a /proc/<pid>/stat line
// ("pid (comm) S ..."; comm may itself hold spaces and parentheses).
func procState(stat []byte) byte {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return 0
	}
	return stat[i+2]
}
