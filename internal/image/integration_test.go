package image

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/faasvm/appliance/guest/protocol"
)

// These tests use the real Docker engine. `make test` starts it
// (scripts/docker-engine.sh) and makes the base image
// (scripts/base-images.sh); without an engine they fail, they do not skip.

// countingDocker counts the exports made through a real engine.
type countingDocker struct {
	Docker
	exports atomic.Int32
}

func (d *countingDocker) ContainerExport(ctx context.Context, id string) (io.ReadCloser, error) {
	d.exports.Add(1)
	return d.Docker.ContainerExport(ctx, id)
}

// integrationCache returns a cache on the real engine. Root filesystems are
// slow to make, so they are kept in $FAAS_STATE_DIR across runs when set.
func integrationCache(t *testing.T) (*Cache, *countingDocker) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs the Docker engine: runs in `make test`, not with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli, err := DialDocker(ctx)
	if err != nil {
		t.Fatalf("%v\nrun `make test`, which starts the engine (scripts/docker-engine.sh) and makes the base image (scripts/base-images.sh)", err)
	}
	t.Cleanup(func() { cli.Close() })
	dir := ""
	if state := os.Getenv("FAAS_STATE_DIR"); state != "" {
		dir = CacheDir(state)
	}
	d := &countingDocker{Docker: cli}
	return newTestCache(t, dir, d), d
}

func TestIntegrationRuntimeRootFS(t *testing.T) {
	c, d := integrationCache(t)
	tests := []struct {
		runtime string
		file    string // a file the runtime must hold
	}{
		{"bash", "/bin/bash"},
		{"python3", "/usr/bin/python3.11"}, // /usr/bin/python3 is a symlink to it
		{"node", "/usr/bin/node"},
	}
	for _, tt := range tests {
		t.Run(tt.runtime, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			dir := filepath.Join("..", "..", "guest", "runtimes", tt.runtime)
			fs, err := c.RuntimeRootFS(ctx, tt.runtime, dir)
			if err != nil {
				t.Fatalf("RuntimeRootFS(%s): %v", tt.runtime, err)
			}
			if label, err := ext4Label(fs.Path); err != nil || label != protocol.RootFSLabel {
				t.Errorf("superblock label: got %q (%v), want %q", label, err, protocol.RootFSLabel)
			}
			dumpe2fs, err := lookSbin("dumpe2fs")
			if err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(dumpe2fs, "-h", fs.Path).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "Filesystem volume name:   "+protocol.RootFSLabel+"\n") {
				t.Errorf("dumpe2fs -h: got %v\n%s\nwant volume name %s", err, out, protocol.RootFSLabel)
			}
			if stat, errOut := debugfs(t, fs.Path, "stat "+tt.file); !strings.Contains(stat, "Type: regular") {
				t.Errorf("debugfs stat %s: got\n%s%s\nwant a regular file", tt.file, stat, errOut)
			}
			if fi, err := os.Stat(fs.Path); err != nil || fi.Mode().Perm() != 0o444 {
				t.Errorf("mode: got %v (%v), want -r--r--r--", fi.Mode(), err)
			}

			exports := d.exports.Load()
			again, err := c.RuntimeRootFS(ctx, tt.runtime, dir)
			if err != nil || again != fs {
				t.Errorf("second call: got %+v, %v, want %+v", again, err, fs)
			}
			if n := d.exports.Load(); n != exports {
				t.Errorf("exports during the second call: got %d, want 0 (cache hit)", n-exports)
			}
		})
	}
}

func TestIntegrationImageRootFS(t *testing.T) {
	c, _ := integrationCache(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	fs, err := c.ImageRootFS(ctx, "debian:bookworm-slim")
	if err != nil {
		t.Fatalf("ImageRootFS: %v", err)
	}
	if out, errOut := debugfs(t, fs.Path, "cat /etc/debian_version"); !strings.HasPrefix(out, "12.") {
		t.Errorf("/etc/debian_version: got %q (%s), want 12.x", out, errOut)
	}
	// Only the file system travels: the engine's placeholders are empty.
	if out, _ := debugfs(t, fs.Path, "stat /.dockerenv"); !strings.Contains(out, "Size: 0") {
		t.Errorf("/.dockerenv: got\n%s\nwant an empty file", out)
	}
}
