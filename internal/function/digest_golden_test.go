package function

import (
	"os"
	"path/filepath"
	"testing"
)

// TestDigestPinned pins the digest format: a change to it changes every
// function's version, so it must be deliberate.
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
	tr, err := scanTree(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	const want = "ca716ac4e93deaeef04975045b4180caf1f9ef393ae4eb46ffeb9b2f00faddd6"
	if tr.digest != want {
		t.Errorf("digest: got %s, want %s", tr.digest, want)
	}
}
