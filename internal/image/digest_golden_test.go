package image

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestCodeDigestPinned pins the code digest format, read from the name of
// the code disk CodeDisk makes: a change to it renames every cached code
// disk, so it must be deliberate.
func TestCodeDigestPinned(t *testing.T) {
	dir := writeCodeTree(t)
	mustWrite(t, filepath.Join(dir, "lib", "a.b"), "dot\n", 0o644)
	symlink(t, "lib", filepath.Join(dir, "libdir"))
	symlink(t, "../util.py", filepath.Join(dir, "lib", "data", "up.py"))
	symlink(t, "not-yet", filepath.Join(dir, "later"))
	if err := os.Chmod(filepath.Join(dir, "lib", "util.py"), 0o640); err != nil {
		t.Fatal(err)
	}
	path, err := newTestCache(t, "", nil).CodeDisk(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	const want = "a6967ac60553e9ddf88c6bc17c52e793a4d8f2da38062344228662fa5b557733"
	if got := digestOfDisk(path); got != want {
		t.Errorf("digest: got %s (%s), want %s", got, path, want)
	}
}
