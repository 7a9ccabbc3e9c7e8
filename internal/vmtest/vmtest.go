// Package vmtest gives tests that boot real VMs the assets they need, from
// the same settings the appliance reads (FAAS_KERNEL_DIR, FAAS_AGENT_BIN,
// FAAS_STATE_DIR, FAAS_RUNTIMES_DIR). `make test` prepares all of them; a
// test run without them fails and says so, it never skips.
package vmtest

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"

	"strings"
	"sync"
	"testing"

	"github.com/faasvm/appliance/internal/image"
)

// Assets are the boot assets and the disk cache of one test binary.
type Assets struct {
	Kernel   string // vmlinux
	Initrd   string // initramfs with the guest agent
	StateDir string
	Disks    image.FunctionDisks
}

// Load finds and prepares the assets, failing tb with what to run when
// something is missing.
//
// Under -short (`make unit`, an explicit request for unit tests only) the
// calling test is skipped; `make test` and CI never pass -short.
func Load(tb testing.TB) *Assets {
	tb.Helper()
	if testing.Short() {
		tb.Skip("-short: real-VM test not run (make test runs it)")
	}
	env := func(name string) string {
		v := os.Getenv(name)
		if v == "" {
			tb.Fatalf("%s is not set: real-VM tests need the assets `make test` prepares (run `make test`, "+
				"or export FAAS_KERNEL_DIR, FAAS_AGENT_BIN, FAAS_STATE_DIR and FAAS_RUNTIMES_DIR as scripts/test.sh does)", name)
		}
		return v
	}
	kernel, err := image.LoadKernel(env("FAAS_KERNEL_DIR"))
	if err != nil {
		tb.Fatalf("guest kernel: %v (run `make test`, which runs scripts/fetch-kernel.sh)", err)
	}
	ctx := context.Background()
	docker, err := image.DialDocker(ctx)
	if err != nil {
		tb.Fatalf("docker engine: %v (run `make test`, which starts one with scripts/docker-engine.sh)", err)
	}
	stateDir := env("FAAS_STATE_DIR")
	cache, err := image.New(image.Config{Dir: image.CacheDir(stateDir), Docker: docker, Logger: Logger(tb)})
	if err != nil {
		tb.Fatalf("image cache: %v", err)
	}
	initrd, err := cache.Initramfs(ctx, env("FAAS_AGENT_BIN"), kernel)
	if err != nil {
		tb.Fatalf("initramfs: %v (run `make agent`)", err)
	}
	return &Assets{
		Kernel:   kernel.VMLinux,
		Initrd:   initrd,
		StateDir: stateDir,
		Disks:    image.FunctionDisks{Cache: cache, RuntimesDir: env("FAAS_RUNTIMES_DIR")},
	}
}

// ShortDir returns a new directory with a short path (QMP socket paths are
// limited to 107 bytes, and t.TempDir paths can be long), removed at the end
// of the test.
func ShortDir(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "fvm")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// WriteFiles creates a folder with the given files (name → content) and
// returns its path.
func WriteFiles(tb testing.TB, files map[string]string) string {
	tb.Helper()
	dir := tb.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}

// Logger logs through tb when -v is given, and discards otherwise.
func Logger(tb testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// ProcessesWith returns the pids of processes whose command line contains s.
func ProcessesWith(s string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), s) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// RSSKiB returns a process's resident set size in KiB (0 if unknown).
func RSSKiB(pid int) int { return procKiB(pid, "status", "VmRSS:") }

// PSSKiB returns a process's proportional set size in KiB (its private
// pages plus its share of pages mapped by others), from smaps_rollup (0 if
// unknown).
func PSSKiB(pid int) int { return procKiB(pid, "smaps_rollup", "Pss:") }

// procKiB returns the "key: N kB" figure of /proc/<pid>/<file>.
func procKiB(pid int, file, key string) int {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), file))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == key {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// ProcessCredentials returns a process's real uid and gid, its
// supplementary groups and its seccomp mode (0 none, 2 filter), from
// /proc/<pid>/status.
func ProcessCredentials(tb testing.TB, pid int) (uid, gid int, groups []int, seccomp int) {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		tb.Fatalf("reading the status of pid %d: %v", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 1 {
			continue
		}
		switch f[0] {
		case "Uid:":
			uid, _ = strconv.Atoi(f[1])
		case "Gid:":
			gid, _ = strconv.Atoi(f[1])
		case "Groups:":
			for _, g := range f[1:] {
				n, _ := strconv.Atoi(g)
				groups = append(groups, n)
			}
		case "Seccomp:":
			seccomp, _ = strconv.Atoi(f[1])
		}
	}
	return uid, gid, groups, seccomp
}

// LogBuffer is a log sink safe for concurrent writers (a VM's goroutines
// log while the test reads).
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// NewLogger returns a debug-level text logger writing into buf.
func NewLogger(buf *LogBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
