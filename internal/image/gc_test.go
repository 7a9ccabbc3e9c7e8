package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// entryPath makes a fake cache entry sub/<hex of seed><ext> with an old
// modification time and returns its path.
func entryPath(t *testing.T, c *Cache, sub, seed, ext string, age time.Duration) string {
	t.Helper()
	sum := sha256.Sum256([]byte(seed))
	p := filepath.Join(c.Dir(), sub, hex.EncodeToString(sum[:])+ext)
	mustWrite(t, p, "entry "+seed, 0o444)
	old := time.Now().Add(-age)
	if err := os.Chtimes(p, old, old); err != nil {
		t.Fatal(err)
	}
	return p
}

func present(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func TestCollect(t *testing.T) {
	c := newTestCache(t, "", nil)
	c.gcGrace = time.Minute
	const old = time.Hour

	referenced := entryPath(t, c, "code", "referenced", ".ext4", old)
	unused := entryPath(t, c, "code", "unused", ".ext4", old)
	mustWrite(t, unused+metaSuffix, "{}", 0o644)
	if err := os.Chtimes(unused+metaSuffix, time.Now().Add(-old), time.Now().Add(-old)); err != nil {
		t.Fatal(err)
	}
	fresh := entryPath(t, c, "code", "fresh", ".ext4", time.Second) // just made
	handedOut := entryPath(t, c, "deps", "handed out", ".ext4", old)
	c.used(handedOut)
	// Handed out by another process sharing the cache: only its sidecar
	// says so.
	otherProcess := entryPath(t, c, "code", "other process", ".ext4", old)
	mustWrite(t, otherProcess+metaSuffix, "{}", 0o644)
	openOne := entryPath(t, c, "code", "open", ".ext4", old)
	f, err := os.Open(openOne)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	oldRootFS := entryPath(t, c, "rootfs", "old runtime build", ".ext4", old)
	runtimeRootFS := entryPath(t, c, "rootfs", "current runtime build", ".ext4", old)
	id := "sha256:" + filepath.Base(runtimeRootFS)[:64]
	mustWrite(t, filepath.Join(c.Dir(), "rootfs", "runtime-python3.id"), id+"\n", 0o600)
	oldInitrd := entryPath(t, c, "initramfs", "old agent", ".cpio", old)
	foreign := filepath.Join(c.Dir(), "code", "notes.txt")
	mustWrite(t, foreign, "not ours", 0o644)
	orphanMeta := filepath.Join(c.Dir(), "deps", filepath.Base(entryPath(t, c, "deps", "gone", ".ext4", old))+metaSuffix)
	mustWrite(t, orphanMeta, "{}", 0o644)
	os.Remove(filepath.Join(c.Dir(), "deps", filepath.Base(orphanMeta[:len(orphanMeta)-len(metaSuffix)])))

	if err := c.Collect(context.Background(), []string{referenced, "relative/ignored.ext4", ""}); err != nil {
		t.Fatalf("Collect: %v", err)
	}
	for _, tc := range []struct {
		name string
		path string
		want bool
	}{
		{"referenced", referenced, true},
		{"unreferenced", unused, false},
		{"its sidecar", unused + metaSuffix, false},
		{"made within the grace", fresh, true},
		{"handed out within the grace", handedOut, true},
		{"handed out by another process within the grace", otherProcess, true},
		{"open by a process", openOne, true},
		{"an old runtime build", oldRootFS, false},
		{"the runtime's current build", runtimeRootFS, true},
		{"an old initramfs", oldInitrd, false},
		{"a file the cache does not make", foreign, true},
		{"an orphan sidecar", orphanMeta, false},
	} {
		if got := present(tc.path); got != tc.want {
			t.Errorf("%s (%s): present %v, want %v", tc.name, tc.path, got, tc.want)
		}
	}
	res := c.LastGC()
	slices.Sort(res.Removed)
	want := []string{unused, oldRootFS, oldInitrd}
	slices.Sort(want)
	if !slices.Equal(res.Removed, want) {
		t.Errorf("removed: got %v, want %v", res.Removed, want)
	}
	if res.Freed <= 0 {
		t.Errorf("freed: got %d bytes, want more than 0", res.Freed)
	}
	if !slices.Contains(res.Busy, openOne) {
		t.Errorf("busy: got %v, want it to name %s", res.Busy, openOne)
	}

	// Past the grace, what was recent goes too.
	c.gcGrace = time.Nanosecond
	f.Close()
	if err := c.Collect(context.Background(), nil); err != nil {
		t.Fatalf("Collect: %v", err)
	}
	for _, p := range []string{fresh, handedOut, otherProcess, openOne, referenced} {
		if present(p) {
			t.Errorf("%s: still present after a collection that no longer keeps it", p)
		}
	}
	if !present(runtimeRootFS) || !present(foreign) {
		t.Errorf("the runtime's root filesystem or a foreign file went")
	}
}

func TestCollectKeepsWhatAMakerHandsOut(t *testing.T) {
	// A code disk made now is kept through a collection that does not name
	// it (the controller may not have recorded it yet), and goes once its
	// grace is over.
	c := newTestCache(t, "", nil)
	c.gcGrace = time.Hour
	path, err := c.CodeDisk(context.Background(), writeCodeTree(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Collect(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if !present(path) {
		t.Fatalf("a code disk just made was collected")
	}
	c.gcGrace = time.Nanosecond
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.lastUse[path] = old
	c.mu.Unlock()
	if err := c.Collect(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if present(path) || present(path+metaSuffix) {
		t.Fatalf("an unreferenced code disk past its grace (or its sidecar) is still there")
	}
}

func TestCollectWaitsForOtherUsers(t *testing.T) {
	// Another live user of the cache (a second Cache here: its own lock)
	// holds paths this one cannot know: nothing is collected until it goes.
	c := newTestCache(t, "", nil)
	c.gcGrace = time.Nanosecond
	unused := entryPath(t, c, "code", "unused", ".ext4", time.Hour)
	other := newTestCache(t, c.Dir(), nil)
	if err := c.Collect(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if !present(unused) {
		t.Fatalf("collected while another process used the cache")
	}
	other.user.Close() // as if its process died
	if err := c.Collect(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if present(unused) {
		t.Errorf("not collected once the other user was gone")
	}
	if present(other.user.Name()) {
		t.Errorf("the dead user's file %s is still there", other.user.Name())
	}
}

func TestIsEntryName(t *testing.T) {
	h := hex.EncodeToString(make([]byte, 32))
	for _, tc := range []struct {
		sub, name string
		want      bool
	}{
		{"code", h + ".ext4", true},
		{"initramfs", h + ".cpio", true},
		{"initramfs", h + ".ext4", false},
		{"code", h, false},
		{"code", h[:63] + ".ext4", false},
		{"code", h[:63] + "G.ext4", false},
		{"rootfs", "runtime-python3.id", false},
		{"code", h + ".ext4.meta", false},
	} {
		if got := isEntryName(tc.sub, tc.name); got != tc.want {
			t.Errorf("isEntryName(%q, %q): got %v, want %v", tc.sub, tc.name, got, tc.want)
		}
	}
}
