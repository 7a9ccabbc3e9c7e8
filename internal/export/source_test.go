package export

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/faasvm/appliance/internal/function"
)

// TestLoadSource checks the private copy the image is made from: the
// appliance's spec and version, modes as on a code disk, links inside
// kept, and the appliance's own reasons for an invalid folder.
func TestLoadSource(t *testing.T) {
	d, template := applianceSettings(t)
	dir := writeFolder(t, "copyme", map[string]string{
		"handler.sh":    "#!/bin/bash\nsource lib/greet.sh\n",
		"lib/greet.sh":  "echo hi\n",
		"function.yaml": "runtime: bash\n",
	})
	if err := os.Chmod(filepath.Join(dir, "handler.sh"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "lib", "greet.sh"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("lib/greet.sh", filepath.Join(dir, "greet.sh")); err != nil {
		t.Fatal(err)
	}
	src, err := loadSource(context.Background(), dir, t.TempDir(), d, template)
	if err != nil {
		t.Fatal(err)
	}
	want := loadSpec(t, dir)
	if src.spec.Digest != want.Digest || src.spec.Dir != dir || filepath.Base(src.code) != "copyme" {
		t.Errorf("got digest %s dir %s code %s, want the folder's digest %s, its path, a copy named copyme", src.spec.Digest, src.spec.Dir, src.code, want.Digest)
	}
	modes := map[string]fs.FileMode{"handler.sh": 0o755, "lib/greet.sh": 0o644, "lib": fs.ModeDir | 0o755}
	for rel, mode := range modes {
		fi, err := os.Lstat(filepath.Join(src.code, rel))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", rel, fi.Mode(), mode)
		}
	}
	if target, err := os.Readlink(filepath.Join(src.code, "greet.sh")); err != nil || target != "lib/greet.sh" {
		t.Errorf("symlink: got %q (%v), want lib/greet.sh", target, err)
	}

	outside := writeFolder(t, "leaky", map[string]string{"handler.py": "print(1)"})
	if err := os.Symlink("/etc/passwd", filepath.Join(outside, "passwd")); err != nil {
		t.Fatal(err)
	}
	_, err = loadSource(context.Background(), outside, t.TempDir(), d, template)
	_, loadErr := function.Load(outside, d, template, function.EngineQEMU)
	if !errors.Is(err, function.ErrInvalid) || loadErr == nil || err.Error() != loadErr.Error() {
		t.Errorf("symlink out of the folder: got %v, want the appliance's %v", err, loadErr)
	}
}
