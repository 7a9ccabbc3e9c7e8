// Package natstest runs a real, separate nats-server process for tests of
// the external-server path (FAAS_NATS_URL). The binary is built from the
// module the appliance itself requires (so no download beyond the module
// cache) and kept in <repo>/.cache/bin/nats-server-<version>.
package natstest

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const module = "github.com/nats-io/nats-server/v2"

// Binary builds the nats-server binary once per version and returns its path.
func Binary(tb testing.TB) string {
	tb.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}\n{{.Version}}", module).Output()
	if err != nil {
		tb.Fatalf("go list -m %s: %v", module, err)
	}
	_, version, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		tb.Fatalf("go env GOMOD: %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	bin := filepath.Join(root, ".cache", "bin", "nats-server-"+version)
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		tb.Fatal(err)
	}
	tmp := fmt.Sprintf("%s.%d.tmp", bin, os.Getpid())
	build := exec.Command("go", "build", "-o", tmp, module)
	build.Dir = root
	if b, err := build.CombinedOutput(); err != nil {
		tb.Fatalf("building %s: %v\n%s", module, err, b)
	}
	if err := os.Rename(tmp, bin); err != nil {
		tb.Fatal(err)
	}
	return bin
}

var listeningRE = regexp.MustCompile(`Listening for client connections on (\S+:\d+)`)

// Start runs a JetStream-enabled nats-server on 127.0.0.1 (a free port),
// its store in a temporary directory, until the test ends. It returns the
// server's URL.
func Start(tb testing.TB) string {
	tb.Helper()
	bin := Binary(tb)
	cmd := exec.Command(bin, "-js", "-sd", tb.TempDir(), "-a", "127.0.0.1", "-p", "-1", "-n", "faasvm-test")
	log := &lockedBuffer{}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("starting nats-server: %v", err)
	}
	addr := make(chan string, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if m := listeningRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
	}()
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		<-done
		if tb.Failed() {
			tb.Logf("nats-server log:\n%s", log.String())
		}
	})
	select {
	case a := <-addr:
		return "nats://" + a
	case <-done:
		tb.Fatalf("nats-server exited before listening:\n%s", log.String())
	case <-time.After(30 * time.Second):
		tb.Fatalf("nats-server did not listen within 30s:\n%s", log.String())
	}
	return ""
}

// lockedBuffer is the server's log, written by the reader goroutine and
// read by failure messages.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) WriteString(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.WriteString(s)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
