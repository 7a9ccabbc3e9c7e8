package main

import (
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParseStat(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		wantState byte
		wantPPID  int
		wantErr   bool
	}{
		{name: "plain", in: "42 (sleep) S 1 42 42 0 -1 4194560", wantState: 'S', wantPPID: 1},
		{name: "zombie", in: "77 (python3) Z 1 77 77 0 -1", wantState: 'Z', wantPPID: 1},
		{name: "command with spaces and parens", in: "9 (my (odd) name) Z 5 9 9", wantState: 'Z', wantPPID: 5},
		{name: "no command", in: "9 Z 5", wantErr: true},
		{name: "truncated", in: "9 (x) Z", wantErr: true},
		{name: "bad ppid", in: "9 (x) Z one", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state, ppid, err := parseStat(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseStat(%q): got error %v, want error %v", tt.in, err, tt.wantErr)
			}
			if !tt.wantErr && (state != tt.wantState || ppid != tt.wantPPID) {
				t.Errorf("parseStat(%q): got %c %d, want %c %d", tt.in, state, ppid, tt.wantState, tt.wantPPID)
			}
		})
	}
}

func TestZombieChildren(t *testing.T) {
	proc := t.TempDir()
	for pid, stat := range map[string]string{
		"10":   "10 (a) Z 1 10 10",   // zombie child: wanted
		"11":   "11 (b) S 1 11 11",   // running child
		"12":   "12 (c) Z 7 12 12",   // someone else's zombie
		"13":   "13 (d d) Z 1 13 13", // zombie child with a space in its name
		"self": "1 (init) S 0 1 1",   // not a pid directory
	} {
		if err := os.MkdirAll(filepath.Join(proc, pid), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(proc, pid, "stat"), []byte(stat), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := zombieChildren(proc, 1)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if want := []int{10, 13}; !slices.Equal(got, want) {
		t.Errorf("zombieChildren: got %v, want %v", got, want)
	}
}

// waitZombie waits until pid is a zombie child of parent.
func waitZombie(t *testing.T, pid, parent int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
		if err == nil {
			if state, ppid, err := parseStat(string(b)); err == nil && state == 'Z' && ppid == parent {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d did not become a zombie child of %d (stat %q, err %v)", pid, parent, b, err)
		}
		time.Sleep(5 * time.Millisecond) // nothing signals another process's exit to us
	}
}

// TestReaper runs the reaper for real: the test process becomes a child
// subreaper, so orphans reparent to it as they would to PID 1.
func TestReaper(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Skipf("cannot become a child subreaper: %v", err)
	}
	t.Cleanup(func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	self := os.Getpid()
	r := newReaper(slog.New(slog.NewTextHandler(io.Discard, nil)), "/proc", self)

	t.Run("leaves a spawned process to its Cmd.Wait", func(t *testing.T) {
		cmd := exec.Command("sh", "-c", "exit 7")
		release, err := r.Spawn(cmd)
		if err != nil {
			t.Fatal(err)
		}
		waitZombie(t, cmd.Process.Pid, self)
		if reaped := r.reap(); slices.Contains(reaped, cmd.Process.Pid) {
			t.Errorf("reap: took the tracked process %d", cmd.Process.Pid)
		}
		err = cmd.Wait()
		release()
		if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 7 {
			t.Errorf("Cmd.Wait: got %v (state %v), want exit status 7", err, cmd.ProcessState)
		}
	})

	t.Run("reaps an orphan", func(t *testing.T) {
		// The shell exits at once; its background child is orphaned to us,
		// exits soon after and stays a zombie until someone reaps it.
		cmd := exec.Command("sh", "-c", "sleep 0.2 & echo $!")
		cmd.Stderr = os.Stderr
		var out strings.Builder
		cmd.Stdout = &out
		release, err := r.Spawn(cmd)
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatal(err)
		}
		release()
		orphan, err := strconv.Atoi(strings.TrimSpace(out.String()))
		if err != nil {
			t.Fatalf("orphan pid %q: %v", out.String(), err)
		}
		waitZombie(t, orphan, self)
		if reaped := r.reap(); !slices.Contains(reaped, orphan) {
			t.Fatalf("reap: got %v, want the orphan %d among them", reaped, orphan)
		}
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(orphan))); !os.IsNotExist(err) {
			t.Errorf("orphan %d: still in /proc after reaping (err %v)", orphan, err)
		}
	})
}
