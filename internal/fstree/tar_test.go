package fstree

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestWriteTar(t *testing.T) {
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "sub", "deep"), 0o755))
	must(os.MkdirAll(filepath.Join(dir, ".git"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "handler.py"), []byte("print(1)\n"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "sub", "run.sh"), []byte("#!/bin/sh\n"), 0o755))
	must(os.WriteFile(filepath.Join(dir, ".git", "HEAD"), []byte("ref\n"), 0o644))
	must(os.Symlink("../handler.py", filepath.Join(dir, "sub", "link")))

	type entry struct {
		Name, Link string
		Type       byte
		Mode       int64
		Uid        int
		Body       string
	}
	tests := []struct {
		name string
		skip func(string, fs.DirEntry) bool
		want []string
	}{
		{"everything", nil, []string{".git/", ".git/HEAD", "handler.py", "sub/", "sub/deep/", "sub/link", "sub/run.sh"}},
		{"without .git", func(_ string, d fs.DirEntry) bool { return d.IsDir() && d.Name() == ".git" },
			[]string{"handler.py", "sub/", "sub/deep/", "sub/link", "sub/run.sh"}},
		{"without one file", func(rel string, _ fs.DirEntry) bool { return rel == filepath.Join("sub", "run.sh") },
			[]string{".git/", ".git/HEAD", "handler.py", "sub/", "sub/deep/", "sub/link"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			n, err := WriteTar(tw, dir, tt.skip)
			if err != nil {
				t.Fatal(err)
			}
			must(tw.Close())
			got := map[string]entry{}
			var names []string
			tr := tar.NewReader(&buf)
			for {
				h, err := tr.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				must(err)
				b, err := io.ReadAll(tr)
				must(err)
				names = append(names, h.Name)
				got[h.Name] = entry{h.Name, h.Linkname, h.Typeflag, h.Mode & 0o777, h.Uid, string(b)}
			}
			if n != len(names) || !reflect.DeepEqual(names, tt.want) {
				t.Fatalf("entries: n=%d %q, want %q", n, names, tt.want)
			}
			if e := got["sub/link"]; e.Type != tar.TypeSymlink || e.Link != "../handler.py" {
				t.Errorf("symlink: %+v", e)
			}
			if e := got["handler.py"]; e.Body != "print(1)\n" || e.Mode != 0o644 || e.Uid != 0 {
				t.Errorf("handler.py: %+v", e)
			}
			if e, ok := got["sub/run.sh"]; ok && e.Mode != 0o755 {
				t.Errorf("run.sh mode %o, want 755", e.Mode)
			}
		})
	}
}

func TestWriteTarMissingDir(t *testing.T) {
	tw := tar.NewWriter(io.Discard)
	if _, err := WriteTar(tw, filepath.Join(t.TempDir(), "nope"), nil); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("got %v, want a not-exist error", err)
	}
}
