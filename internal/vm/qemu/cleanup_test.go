package qemu

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestMain lets the test binary stand in for QEMU: with
// FAAS_QEMU_TEST_HELPER=block it blocks until killed (a leftover QEMU for
// Cleanup); with FAAS_QEMU_TEST_HELPER=qemu it is fakeQEMUMain.
func TestMain(m *testing.M) {
	switch os.Getenv(envHelper) {
	case "block":
		for { // until killed (a bare select{} would be reported as a deadlock)
			time.Sleep(time.Hour)
		}
	case "qemu":
		fakeQEMUMain()
	}
	os.Exit(m.Run())
}

// child is a process started by a test, reaped in the background.
type child struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startChild starts cmd and kills it when the test ends.
func startChild(t *testing.T, cmd *exec.Cmd) *child {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %v: %v", cmd.Args, err)
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(c.done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-c.done })
	return c
}

// running reports whether the child is alive and not a zombie.
func (c *child) running(t *testing.T) bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(c.cmd.Process.Pid), "stat"))
	return err == nil && procState(b) != 'Z' && procState(b) != 'X'
}

// fakeQEMU starts the test binary with argv[0] "qemu-system-x86_64" and an
// argument inside dir, like a QEMU started for that VM directory.
func fakeQEMU(t *testing.T, dir string) *child {
	t.Helper()
	return fakeQEMUNamed(t, "qemu-system-x86_64", dir)
}

// fakeQEMUNamed is fakeQEMU with argv[0] argv0.
func fakeQEMUNamed(t *testing.T, argv0, dir string) *child {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := &exec.Cmd{
		Path: exe,
		Args: []string{argv0, "-pidfile", filepath.Join(dir, qemuPidName)},
		Env:  append(os.Environ(), envHelper+"=block"),
	}
	return startChild(t, cmd)
}

func writePid(t *testing.T, path string, pid int) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strconv.Itoa(pid)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestCleanup(t *testing.T) {
	tests := []struct {
		name string
		// qemu is the configured QEMU binary's base name cleanup matches;
		// "" runs the package's Cleanup (stock qemu-system-* names).
		qemu string
		// setup makes one leftover VM dir and returns the child that must
		// be killed (nil: none) and one that must survive (nil: none).
		setup func(t *testing.T, dir string) (killed, survives *child)
	}{
		{
			name: "qemu of this dir is killed",
			setup: func(t *testing.T, dir string) (*child, *child) {
				q := fakeQEMU(t, dir)
				writePid(t, filepath.Join(dir, qemuPidName), q.cmd.Process.Pid)
				return q, nil
			},
		},
		{
			name: "pid reused by another program survives",
			setup: func(t *testing.T, dir string) (*child, *child) {
				s := startChild(t, exec.Command("sleep", "300"))
				writePid(t, filepath.Join(dir, qemuPidName), s.cmd.Process.Pid)
				return nil, s
			},
		},
		{
			name: "qemu of another dir survives",
			setup: func(t *testing.T, dir string) (*child, *child) {
				q := fakeQEMU(t, filepath.Join(filepath.Dir(dir), "some-other-vm"))
				writePid(t, filepath.Join(dir, qemuPidName), q.cmd.Process.Pid)
				return nil, q
			},
		},
		{
			name: "configured qemu binary is killed",
			qemu: "qemu-kvm",
			setup: func(t *testing.T, dir string) (*child, *child) {
				q := fakeQEMUNamed(t, "/usr/libexec/qemu-kvm", dir)
				writePid(t, filepath.Join(dir, qemuPidName), q.cmd.Process.Pid)
				return q, nil
			},
		},
		{
			name: "stock name not matched when another binary is configured",
			qemu: "qemu-kvm",
			setup: func(t *testing.T, dir string) (*child, *child) {
				q := fakeQEMU(t, dir)
				writePid(t, filepath.Join(dir, qemuPidName), q.cmd.Process.Pid)
				return nil, q
			},
		},
		{
			name: "package Cleanup does not match a custom binary",
			setup: func(t *testing.T, dir string) (*child, *child) {
				q := fakeQEMUNamed(t, "qemu-kvm", dir)
				writePid(t, filepath.Join(dir, qemuPidName), q.cmd.Process.Pid)
				return nil, q
			},
		},
		{
			name: "no pid files",
			setup: func(t *testing.T, dir string) (*child, *child) {
				return nil, nil
			},
		},
		{
			name: "garbled pid file",
			setup: func(t *testing.T, dir string) (*child, *child) {
				if err := os.WriteFile(filepath.Join(dir, qemuPidName), []byte("not a pid"), 0o600); err != nil {
					t.Fatal(err)
				}
				return nil, nil
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state := t.TempDir()
			dir := filepath.Join(state, "vms", "0b1d4c9e-leftover")
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, consoleLogName), []byte("boot log"), 0o600); err != nil {
				t.Fatal(err)
			}
			killed, survives := tt.setup(t, dir)

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var (
				los []Leftover
				err error
			)
			if tt.qemu == "" {
				los, err = Cleanup(ctx, state)
			} else {
				los, err = cleanup(ctx, state, tt.qemu)
			}
			if err != nil {
				t.Fatalf("Cleanup: %v", err)
			}
			if len(los) != 1 || los[0].Dir != dir {
				t.Fatalf("Cleanup: got leftovers %+v, want one for %s", los, dir)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("after Cleanup: stat %s: got %v, want not-exist", dir, err)
			}
			if killed != nil {
				if !slices.Contains(los[0].Killed, killed.cmd.Process.Pid) {
					t.Errorf("Killed: got %v, want it to hold %d", los[0].Killed, killed.cmd.Process.Pid)
				}
				select {
				case <-killed.done:
				case <-ctx.Done():
					t.Fatalf("pid %d still running after Cleanup", killed.cmd.Process.Pid)
				}
			}
			if survives != nil {
				if len(los[0].Killed) != 0 {
					t.Errorf("Killed: got %v, want none", los[0].Killed)
				}
				if !survives.running(t) {
					t.Errorf("pid %d (%v): got killed, want it left alone", survives.cmd.Process.Pid, survives.cmd.Args)
				}
			}
		})
	}
}

func TestCleanupNoStateYet(t *testing.T) {
	los, err := Cleanup(context.Background(), filepath.Join(t.TempDir(), "never-created"))
	if err != nil || len(los) != 0 {
		t.Errorf("Cleanup of a missing state dir: got %v, %v; want nothing, nil", los, err)
	}
}

func TestProcState(t *testing.T) {
	tests := []struct {
		stat string
		want byte
	}{
		{"1234 (qemu-system-x86) S 1 1234 1234 0 -1", 'S'},
		{"1234 (a) (b)) Z 1 1234", 'Z'},
		{"garbage", 0},
	}
	for _, tt := range tests {
		if got := procState([]byte(tt.stat)); got != tt.want {
			t.Errorf("procState(%q): got %q, want %q", tt.stat, got, tt.want)
		}
	}
}
