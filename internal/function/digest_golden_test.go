package function

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestDigestPinned pins the digest format: a change to it changes every
// function's version, so it must be deliberate. (It last changed when the
// digest moved to the snapshot's bytes: permission bits as the copy has
// them, 0640 and 0600 files hash as 0644.)
func TestDigestPinned(t *testing.T) {
	dir := makeFunc(t, "pinned", map[string]string{
		"handler.py":     "def handle(req):\n    return req\n",
		"run.sh":         "#!/bin/sh\necho hi\n",
		"lib/util.py":    "X = 1\n",
		"lib/a.b":        "dot\n",
		"lib/data/t.csv": "a,b\n",
		"alias.py":       "->lib/util.py",
		"libdir":         "->lib",
		"lib/data/up.py": "->../util.py",
	})
	for p, mode := range map[string]os.FileMode{"run.sh": 0o755, "handler.py": 0o644, "lib/util.py": 0o640, "lib/a.b": 0o644, "lib/data/t.csv": 0o600} {
		if err := os.Chmod(filepath.Join(dir, filepath.FromSlash(p)), mode); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"", "lib", "lib/data"} {
		if err := os.Chmod(filepath.Join(dir, filepath.FromSlash(d)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	tr, err := snapshotTree(context.Background(), dir, t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	const want = "c86c26f277b05ae4da2feb6ff61cd44b84e731065eec20c2f024a32fc9cbb1e7"
	if tr.digest != want {
		t.Errorf("digest: got %s, want %s", tr.digest, want)
	}
}
