// Package pywheel writes tiny Python wheels for tests: no package index is
// reachable from the test machines.
package pywheel

import (
	"archive/zip"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Wheelhouse writes a folder holding one pure-Python wheel, pkg-version,
// whose module pkg is init (its __init__.py), and returns the folder: a
// pip --find-links source (FAAS_PIP_INDEX_URL=file://<folder>), since no
// package index is reachable from the test machines.
func Wheelhouse(tb testing.TB, pkg, version, init string) string {
	tb.Helper()
	dir := tb.TempDir()
	name := fmt.Sprintf("%s-%s-py3-none-any.whl", pkg, version)
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	zw := zip.NewWriter(f)
	info := fmt.Sprintf("%s-%s.dist-info", pkg, version)
	files := [][2]string{
		{pkg + "/__init__.py", init},
		{info + "/METADATA", fmt.Sprintf("Metadata-Version: 2.1\nName: %s\nVersion: %s\n", pkg, version)},
		{info + "/WHEEL", "Wheel-Version: 1.0\nGenerator: faasvm-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"},
	}
	var record strings.Builder
	for _, fl := range files {
		w, err := zw.Create(fl[0])
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := w.Write([]byte(fl[1])); err != nil {
			tb.Fatal(err)
		}
		sum := sha256.Sum256([]byte(fl[1]))
		fmt.Fprintf(&record, "%s,sha256=%s,%d\n", fl[0], base64.RawURLEncoding.EncodeToString(sum[:]), len(fl[1]))
	}
	fmt.Fprintf(&record, "%s/RECORD,,\n", info)
	w, err := zw.Create(info + "/RECORD")
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := w.Write([]byte(record.String())); err != nil {
		tb.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	// Readable by the install container's unprivileged user once copied.
	if err := os.Chmod(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	return dir
}
