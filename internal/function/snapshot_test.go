package function

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSnapshot: Load reads one private copy of the folder; what happens to
// the folder afterwards (edited, swapped for a symlink to a folder holding
// a secret) changes neither the copy nor the version, and the digest is
// the copy's.
func TestSnapshot(t *testing.T) {
	d := testDefaults(t)
	dir := makeFunc(t, "snap", map[string]string{
		"handler.py":    "print('inside')\n",
		"lib/util.py":   "X = 1\n",
		"function.yaml": "timeout: 5s\n",
	})
	s, err := Load(dir, d, nil, EngineQEMU)
	if err != nil {
		t.Fatal(err)
	}
	if s.Snapshot == "" || !strings.HasPrefix(s.Snapshot, d.SnapshotDir) {
		t.Fatalf("Snapshot: got %q, want a folder in %s", s.Snapshot, d.SnapshotDir)
	}

	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "handler.py"), []byte("print(open('/etc/shadow').read())  # SECRET\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	moved := dir + ".moved"
	if err := os.Rename(dir, moved); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, dir); err != nil {
		t.Fatal(err)
	}

	b, err := os.ReadFile(filepath.Join(s.Snapshot, "handler.py"))
	if err != nil || string(b) != "print('inside')\n" {
		t.Errorf("the snapshot's handler after the swap: got %q, %v; want the original", b, err)
	}
	again, err := snapshotTree(context.Background(), s.Snapshot, t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if again.digest != s.Digest {
		t.Errorf("digest of the snapshot: got %s, want the version's %s", again.digest, s.Digest)
	}
	// Loading the swapped folder is refused: it is a symlink now.
	if _, err := Load(dir, d, nil, EngineQEMU); err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "is a symlink") {
		t.Errorf("Load of the swapped folder: got %v, want it refused as a symlink", err)
	}
	if err := s.RemoveSnapshot(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.Snapshot); s.Snapshot != "" || (err != nil && !errors.Is(err, fs.ErrNotExist)) {
		t.Errorf("after RemoveSnapshot: Snapshot %q, stat %v", s.Snapshot, err)
	}
	if err := s.RemoveSnapshot(); err != nil {
		t.Errorf("second RemoveSnapshot: %v", err)
	}
	// Failed loads leave no snapshot behind.
	if _, err := Load(moved, d, nil, EngineQEMU); err == nil {
		t.Fatal("Load of a folder whose name is not a function name: got no error")
	}
	if _, err := Load(makeFunc(t, "broken", map[string]string{"function.yaml": "mode: sideways\n"}), d, nil, EngineQEMU); err == nil {
		t.Fatal("Load of a broken folder: got no error")
	}
	if ents, _ := os.ReadDir(d.SnapshotDir); len(ents) != 0 {
		t.Errorf("snapshots left after failed loads: %v", ents)
	}
}
