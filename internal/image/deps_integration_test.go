package image

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/faasvm/appliance/guest/protocol"
	"github.com/faasvm/appliance/internal/vmtest/pywheel"
)

// TestIntegrationDepsDisk installs a requirements.txt naming a wheel from
// a local folder (no index is reachable here) through the real engine, on
// the python3 runtime image, and reads the disk it makes.
func TestIntegrationDepsDisk(t *testing.T) {
	c, d := integrationCache(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	fs, err := c.RuntimeRootFS(ctx, "python3", "../../guest/runtimes/python3")
	if err != nil {
		t.Fatal(err)
	}
	house := pywheel.Wheelhouse(t, "tinypkg", "1.0", "VALUE = 'from a wheel'\n")
	c.depsCfg = DepsConfig{PipIndexURL: "file://" + house, Timeout: 5 * time.Minute}
	c.depsDocker = d.Docker.(DepsDocker) // the counting wrapper has only the rootfs calls

	nonce := fmt.Sprint(time.Now().UnixNano()) // a cold install every run
	folder := t.TempDir()
	mustWrite(t, filepath.Join(folder, "requirements.txt"), "# "+nonce+"\ntinypkg==1.0\n", 0o644)
	start := time.Now()
	disk, err := c.DepsDisk(ctx, "python3", fs.ImageID, folder)
	if err != nil {
		t.Fatalf("DepsDisk: %v", err)
	}
	t.Logf("cold install: %s", time.Since(start).Round(time.Millisecond))
	if label, err := ext4Label(disk); err != nil || label != protocol.DepsLabel {
		t.Fatalf("label: got %q %v, want %q", label, err, protocol.DepsLabel)
	}
	if out, _ := debugfs(t, disk, "cat /python/tinypkg/__init__.py"); !strings.Contains(out, "from a wheel") {
		t.Errorf("the disk's /python/tinypkg/__init__.py: got %q, want the wheel's module", out)
	}
	before := c.DepsStats()
	start = time.Now()
	again, err := c.DepsDisk(ctx, "python3", fs.ImageID, folder)
	if err != nil || again != disk {
		t.Fatalf("second DepsDisk: got %q %v, want the cached %q", again, err, disk)
	}
	t.Logf("cached: %s", time.Since(start).Round(time.Millisecond))
	if after := c.DepsStats(); after.Installs != before.Installs || after.Cached != before.Cached+1 {
		t.Errorf("stats: got %+v after %+v, want one more cached and no install", after, before)
	}

	t.Run("a folder without a manifest has no disk", func(t *testing.T) {
		if d, err := c.DepsDisk(ctx, "python3", fs.ImageID, t.TempDir()); d != "" || err != nil {
			t.Errorf("got %q %v, want none", d, err)
		}
	})
	t.Run("a bad requirement fails with pip's reason", func(t *testing.T) {
		bad := t.TempDir()
		mustWrite(t, filepath.Join(bad, "requirements.txt"), "# "+nonce+"\nno-such-package-here==9.9\n", 0o644)
		_, err := c.DepsDisk(ctx, "python3", fs.ImageID, bad)
		if err == nil || !strings.Contains(err.Error(), "exited with status") || !strings.Contains(err.Error(), "no-such-package-here") {
			t.Fatalf("got %v, want the installer's failure naming the package", err)
		}
		t.Logf("reason: %v", err)
	})
	t.Run("over the size limit", func(t *testing.T) {
		small := newTestCache(t, c.dir, d)
		small.codeLimit = 10
		small.depsCfg, small.depsDocker = c.depsCfg, c.depsDocker
		folder := t.TempDir()
		mustWrite(t, filepath.Join(folder, "requirements.txt"), "# "+nonce+" small\ntinypkg==1.0\n", 0o644)
		_, err := small.DepsDisk(ctx, "python3", fs.ImageID, folder)
		if err == nil || !strings.Contains(err.Error(), "over the function size limit") {
			t.Fatalf("got %v, want the size limit", err)
		}
	})
}
