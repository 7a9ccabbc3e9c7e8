package image

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestCodeDigestPinned pins the code digest format: a change to it renames
// every cached code disk, so it must be deliberate.
func TestCodeDigestPinned(t *testing.T) {
	dir := writeCodeTree(t)
	mustWrite(t, filepath.Join(dir, "lib", "a.b"), "dot\n", 0o644)
	symlink(t, "lib", filepath.Join(dir, "libdir"))
	symlink(t, "../util.py", filepath.Join(dir, "lib", "data", "up.py"))
	symlink(t, "not-yet", filepath.Join(dir, "later"))
	if err := os.Chmod(filepath.Join(dir, "lib", "util.py"), 0o640); err != nil {
		t.Fatal(err)
	}
	entries, err := readCodeTree(context.Background(), dir, "", DefaultCodeSizeLimit)
	if err != nil {
		t.Fatal(err)
	}
	const want = "a6967ac60553e9ddf88c6bc17c52e793a4d8f2da38062344228662fa5b557733"
	if got := codeDigest(entries); got != want {
		t.Errorf("digest: got %s, want %s", got, want)
	}
}
