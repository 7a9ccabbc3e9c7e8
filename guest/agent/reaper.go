package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/faasvm/appliance/guest/agent/server"
)

// reaper collects the zombies PID 1 inherits (orphaned grandchildren of
// handlers and bootstraps) without stealing the exit status of a process
// the agent itself waits for.
//
// The usual PID-1 loop, wait4(-1, WNOHANG) on SIGCHLD, would race
// exec.Cmd.Wait: whichever reaps a handler first wins, and Cmd.Wait then
// fails with ECHILD and loses the exit code. Instead the reaper reaps by pid:
// on every SIGCHLD it lists the zombies whose parent is the agent (from
// /proc/<pid>/stat) and reaps each one the agent did not start itself.
// Processes the agent starts go through Spawn, which starts them and records
// their pids under the same lock the reaper holds while it scans, so a
// process that exits the instant it starts is already known to be someone
// else's to wait for. Its pid is released after Cmd.Wait has returned.
type reaper struct {
	log     *slog.Logger
	procDir string
	self    int

	mu      sync.Mutex
	tracked map[int]struct{}
}

var _ server.Spawner = (*reaper)(nil)

func newReaper(log *slog.Logger, procDir string, self int) *reaper {
	return &reaper{log: log, procDir: procDir, self: self, tracked: make(map[int]struct{})}
}

// Spawn starts cmd as a process the reaper leaves alone until release.
func (r *reaper) Spawn(cmd *exec.Cmd) (func(), error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	pid := cmd.Process.Pid
	r.tracked[pid] = struct{}{}
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		delete(r.tracked, pid)
	}, nil
}

// run reaps on every SIGCHLD until ctx ends.
func (r *reaper) run(ctx context.Context) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGCHLD)
	defer signal.Stop(sig)
	r.reap() // whatever died before the handler was installed
	for {
		select {
		case <-ctx.Done():
			return
		case <-sig:
			r.reap()
		}
	}
}

// reap collects every untracked zombie child and returns their pids.
func (r *reaper) reap() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	zombies, err := zombieChildren(r.procDir, r.self)
	if err != nil {
		r.log.Warn("listing zombies", "step", "reap", "err", err)
	}
	var reaped []int
	for _, pid := range zombies {
		if _, ok := r.tracked[pid]; ok {
			continue // its Cmd.Wait collects it
		}
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if err != nil || got != pid {
			continue // gone meanwhile, or not ours after all
		}
		reaped = append(reaped, pid)
		r.log.Debug("reaped orphan", "step", "reap", "pid", pid, "status", ws.ExitStatus())
	}
	return reaped
}

// zombieChildren lists the processes in procDir that are zombies and
// children of parent.
func zombieChildren(procDir string, parent int) ([]int, error) {
	entries, err := os.ReadDir(procDir)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", procDir, err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue // not a process
		}
		b, err := os.ReadFile(filepath.Join(procDir, e.Name(), "stat"))
		if err != nil {
			continue // exited and reaped meanwhile
		}
		state, ppid, err := parseStat(string(b))
		if err != nil {
			continue
		}
		if state == 'Z' && ppid == parent {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// parseStat reads the state and parent pid from a /proc/<pid>/stat line:
// "pid (comm) S ppid ...". comm may hold spaces and parentheses, so the
// fields are counted from the last ')'.
func parseStat(s string) (state byte, ppid int, err error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, errors.New("stat: no command name")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 || len(f[0]) != 1 {
		return 0, 0, fmt.Errorf("stat: malformed %q", s)
	}
	ppid, err = strconv.Atoi(f[1])
	if err != nil {
		return 0, 0, fmt.Errorf("stat: parent pid: %w", err)
	}
	return f[0][0], ppid, nil
}
