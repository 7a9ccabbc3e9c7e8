package export

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
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
	if src.spec.Digest != want.Digest || src.spec.Dir != dir || src.code != src.spec.Snapshot || src.code == "" {
		t.Errorf("got digest %s dir %s code %s, want the folder's digest %s, its path, Load's snapshot", src.spec.Digest, src.spec.Dir, src.code, want.Digest)
	}

	// The build context gives the code a code disk's modes, owned by root.
	var ctxTar bytes.Buffer
	if err := writeContext(&ctxTar, []byte("FROM x\n"), []byte("{}"), os.Args[0], src.code); err != nil {
		t.Fatal(err)
	}
	wantTar := map[string]string{
		"Dockerfile": "-644", "function.json": "-644", "agent": "-755",
		"code/": "d755", "code/handler.sh": "-755", "code/lib/": "d755", "code/lib/greet.sh": "-644",
		"code/function.yaml": "-644", "code/greet.sh": "l777->lib/greet.sh",
	}
	got := map[string]string{}
	tr := tar.NewReader(&ctxTar)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s: owner %d:%d, want root", h.Name, h.Uid, h.Gid)
		}
		kind := map[byte]string{tar.TypeReg: "-", tar.TypeDir: "d", tar.TypeSymlink: "l"}[h.Typeflag]
		v := fmt.Sprintf("%s%o", kind, h.Mode)
		if h.Linkname != "" {
			v += "->" + h.Linkname
		}
		got[h.Name] = v
	}
	if fmt.Sprint(got) != fmt.Sprint(wantTar) {
		t.Errorf("build context:\n got %v\nwant %v", got, wantTar)
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
