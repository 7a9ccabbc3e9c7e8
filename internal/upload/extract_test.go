package upload

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ent is one archive entry for the test builders.
type ent struct {
	name   string
	typ    byte // tar type flag; for zip: '0' file, '5' dir, '2' symlink, '6' fifo, '3' char device
	body   string
	size   int // for a file of zeros when body is empty
	target string
	mode   int64
}

func tarGz(t *testing.T, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Linkname: e.target}
		if e.mode != 0 {
			h.Mode = e.mode
		}
		var data []byte
		if e.typ == tar.TypeReg {
			data = []byte(e.body)
			if e.size > 0 {
				data = make([]byte, e.size)
			}
			h.Size = int64(len(data))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("tar header %s: %v", e.name, err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatalf("tar body %s: %v", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zipOf(t *testing.T, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range ents {
		h := &zip.FileHeader{Name: e.name, Method: zip.Deflate}
		data := []byte(e.body)
		if e.size > 0 {
			data = make([]byte, e.size)
		}
		switch e.typ {
		case '5':
			h.SetMode(fs.ModeDir | 0o755)
			data = nil
		case '2':
			h.SetMode(fs.ModeSymlink | 0o777)
			data = []byte(e.target)
		case '6':
			h.SetMode(fs.ModeNamedPipe | 0o644)
		case '3':
			h.SetMode(fs.ModeDevice | fs.ModeCharDevice | 0o644)
		default:
			h.SetMode(0o644)
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatalf("zip header %s: %v", e.name, err)
		}
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func extractBytes(t *testing.T, data []byte, lim Limits) (string, error) {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "archive")
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "out")
	if err := os.Mkdir(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	return dst, Extract(context.Background(), src, dst, lim)
}

var testLimits = Limits{MaxSize: 4 << 20, MaxFiles: 20, MaxRatio: 50}

func TestExtractRefusesHostileArchives(t *testing.T) {
	handler := ent{name: "handler.py", typ: tar.TypeReg, body: "print('hi')\n"}
	many := []ent{}
	for i := range 21 {
		many = append(many, ent{name: "f" + strings.Repeat("x", i), typ: tar.TypeReg, body: "x"})
	}
	var manyZip []ent
	for _, e := range many {
		manyZip = append(manyZip, ent{name: e.name, body: e.body})
	}
	tests := []struct {
		name     string
		tar      []ent
		zip      []ent // when set, the same case as a zip
		entry    string
		reason   string
		tooLarge bool
	}{
		{name: "absolute path", tar: []ent{{name: "/etc/passwd", typ: tar.TypeReg, body: "x"}},
			zip: []ent{{name: "/etc/passwd", body: "x"}}, entry: "/etc/passwd", reason: "absolute path"},
		{name: "dot dot", tar: []ent{handler, {name: "../evil", typ: tar.TypeReg, body: "x"}},
			zip: []ent{{name: "a/../../evil", body: "x"}}, entry: "..", reason: `".."`},
		{name: "dot dot inside", tar: []ent{{name: "a/../b", typ: tar.TypeReg, body: "x"}}, entry: "a/../b", reason: `".."`},
		{name: "backslash", tar: []ent{{name: `..\evil`, typ: tar.TypeReg, body: "x"}},
			zip: []ent{{name: `..\evil`, body: "x"}}, entry: `..\evil`, reason: "backslash"},
		{name: "absolute symlink", tar: []ent{{name: "l", typ: tar.TypeSymlink, target: "/etc/passwd"}},
			zip: []ent{{name: "l", typ: '2', target: "/etc/passwd"}}, entry: "l", reason: "absolute"},
		{name: "symlink leaving", tar: []ent{{name: "a/l", typ: tar.TypeSymlink, target: "../../x"}},
			zip: []ent{{name: "a/l", typ: '2', target: "../../x"}}, entry: "a/l", reason: "leaves the folder"},
		{name: "symlink leaving through a symlink", tar: []ent{
			{name: "s", typ: tar.TypeSymlink, target: "."},
			{name: "d/x", typ: tar.TypeReg, body: "x"},
			{name: "d/l", typ: tar.TypeSymlink, target: "../s/../x"},
		}, entry: "d/l", reason: "inside the folder"},
		{name: "write below a symlink", tar: []ent{
			{name: "s", typ: tar.TypeSymlink, target: "."},
			{name: "s/x", typ: tar.TypeReg, body: "x"},
		}, entry: "s/x", reason: "below the symlink"},
		{name: "hard link", tar: []ent{handler, {name: "h", typ: tar.TypeLink, target: "handler.py"}}, entry: "h", reason: "hard links"},
		{name: "char device", tar: []ent{{name: "null", typ: tar.TypeChar}},
			zip: []ent{{name: "null", typ: '3'}}, entry: "null", reason: "device"},
		{name: "block device", tar: []ent{{name: "sda", typ: tar.TypeBlock}}, entry: "sda", reason: "device"},
		{name: "fifo", tar: []ent{{name: "p", typ: tar.TypeFifo}},
			zip: []ent{{name: "p", typ: '6'}}, entry: "p", reason: "FIFOs"},
		{name: "duplicate", tar: []ent{handler, handler},
			zip: []ent{{name: "a", body: "1"}, {name: "a", body: "2"}}, entry: "", reason: "twice"},
		{name: "too large", tar: []ent{{name: "big", typ: tar.TypeReg, size: 5 << 20}},
			zip: []ent{{name: "big", size: 5 << 20}}, entry: "big", reason: "function size limit", tooLarge: true},
		{name: "too many files", tar: many, entry: "f" + strings.Repeat("x", 20), reason: "more than 20 entries", tooLarge: true},
		{name: "too many zip entries", zip: manyZip, entry: "(central directory)", reason: "more than 20 entries", tooLarge: true},
		{name: "bomb", tar: []ent{{name: "zeros", typ: tar.TypeReg, size: 3 << 20}},
			zip: []ent{{name: "zeros", size: 3 << 20}}, entry: "zeros", reason: "compression bomb", tooLarge: true},
	}
	for _, tt := range tests {
		for _, format := range []string{"tar.gz", "zip"} {
			ents := tt.tar
			if format == "tar.gz" && ents == nil {
				continue
			}
			if format == "zip" {
				if tt.zip == nil {
					continue
				}
				ents = tt.zip
			}
			t.Run(tt.name+"/"+format, func(t *testing.T) {
				var data []byte
				if format == "zip" {
					data = zipOf(t, ents...)
				} else {
					data = tarGz(t, ents...)
				}
				_, err := extractBytes(t, data, testLimits)
				var ee *EntryError
				if !errors.As(err, &ee) {
					t.Fatalf("got error %v, want an EntryError", err)
				}
				if !strings.Contains(ee.Entry, tt.entry) {
					t.Errorf("got entry %q, want it to name %q", ee.Entry, tt.entry)
				}
				if !strings.Contains(ee.Reason, tt.reason) {
					t.Errorf("got reason %q, want it to contain %q", ee.Reason, tt.reason)
				}
				if ee.TooLarge != tt.tooLarge {
					t.Errorf("got TooLarge %v, want %v", ee.TooLarge, tt.tooLarge)
				}
			})
		}
	}
}

func TestExtractRefusesGarbage(t *testing.T) {
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"text", []byte("hello world, not an archive")},
		{"truncated gzip", tarGz(t, ent{name: "a", typ: tar.TypeReg, body: strings.Repeat("abc", 1000)})[:40]},
		{"truncated zip", zipOf(t, ent{name: "a", body: "abc"})[:20]},
		{"gzip of text", func() []byte {
			var b bytes.Buffer
			zw := gzip.NewWriter(&b)
			zw.Write([]byte(strings.Repeat("not a tar ", 100)))
			zw.Close()
			return b.Bytes()
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := extractBytes(t, tt.data, testLimits)
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("got %v, want ErrFormat", err)
			}
		})
	}
}

func TestExtractAccepts(t *testing.T) {
	ents := []ent{
		{name: "./", typ: tar.TypeDir},
		{name: "handler.py", typ: tar.TypeReg, body: "print('hi')\n"},
		{name: "run.sh", typ: tar.TypeReg, body: "echo\n", mode: 0o700},
		{name: "lib/util.py", typ: tar.TypeReg, body: "X = 1\n"},
		{name: "lib/link.py", typ: tar.TypeSymlink, target: "util.py"},
		{name: "zeros", typ: tar.TypeReg, size: 512 << 10}, // compresses well but is below the bomb floor
	}
	for _, format := range []string{"tar.gz", "zip"} {
		t.Run(format, func(t *testing.T) {
			var data []byte
			if format == "zip" {
				data = zipOf(t, ent{name: "handler.py", body: "print('hi')\n"}, ent{name: "lib/", typ: '5'},
					ent{name: "lib/util.py", body: "X = 1\n"}, ent{name: "lib/link.py", typ: '2', target: "util.py"},
					ent{name: "zeros", size: 512 << 10})
			} else {
				data = tarGz(t, ents...)
			}
			dst, err := extractBytes(t, data, testLimits)
			if err != nil {
				t.Fatalf("got %v, want it extracted", err)
			}
			b, err := os.ReadFile(filepath.Join(dst, "lib", "link.py"))
			if err != nil || string(b) != "X = 1\n" {
				t.Errorf("lib/link.py: got %q, %v; want X = 1", b, err)
			}
			if format == "tar.gz" {
				fi, err := os.Stat(filepath.Join(dst, "run.sh"))
				if err != nil || fi.Mode().Perm() != 0o755 {
					t.Errorf("run.sh: got %v, %v; want mode 0755", fi.Mode(), err)
				}
			}
		})
	}
}
