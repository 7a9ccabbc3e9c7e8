package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// Fuzz targets of what the guest's file writers read: the initramfs's cpio
// entries, the tar an install container hands back for a dependency disk,
// and the files of a function folder a code disk is made from (names,
// modes, sizes). Run by scripts/fuzz.sh; seeds and crashers live in
// testdata/fuzz/<Target>/.

// FuzzWriteCPIO: entries are written or refused; what is written reads
// back, entry for entry, the way the kernel reads it.
func FuzzWriteCPIO(f *testing.F) {
	f.Add("init", uint32(0o100755), []byte("#!/bin/sh\n"), "lib/modules", uint32(0o040755))
	f.Add("a", uint32(0o120777), []byte("target"), "a", uint32(0o100644))
	f.Add("../x", uint32(0o100644), []byte{}, "./y", uint32(0o100644))
	f.Add("TRAILER!!!", uint32(0), []byte{1}, "dev/console", uint32(0o020600))
	f.Add("a\x00b", uint32(0o100644), []byte("x"), "b/", uint32(0o040755))
	f.Fuzz(func(t *testing.T, name1 string, mode1 uint32, data []byte, name2 string, mode2 uint32) {
		entries := []cpioEntry{{Name: name1, Mode: mode1, Data: data}, {Name: name2, Mode: mode2}}
		var buf bytes.Buffer
		if err := writeCPIO(&buf, entries); err != nil {
			return
		}
		got, err := readCPIO(buf.Bytes())
		if err != nil {
			t.Fatalf("writeCPIO(%q, %q) wrote an archive that does not read back: %v", name1, name2, err)
		}
		if len(got) != 3 || got[2].name != cpioTrailer {
			t.Fatalf("read back %d entries, want 2 and the trailer", len(got))
		}
		for _, e := range got[:2] {
			if strings.ContainsRune(e.name, 0) || e.name != path.Clean(e.name) || strings.HasPrefix(e.name, "/") || e.name == ".." || strings.HasPrefix(e.name, "../") {
				t.Fatalf("writeCPIO accepted the name %q", e.name)
			}
			if e.name == name1 && !bytes.Equal(e.data, data) {
				t.Fatalf("%s: data differs", e.name)
			}
		}
	})
}

// tarOf builds a tar of (name, type, link, content) quadruples.
func tarOf(f *testing.F, entries ...[4]string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e[0], Typeflag: e[1][0], Linkname: e[2], Mode: 0o644, Size: int64(len(e[3]))}
		if hdr.Typeflag != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			f.Fatal(err)
		}
		if hdr.Typeflag == tar.TypeReg {
			io.WriteString(tw, e[3])
		}
	}
	tw.Close()
	return buf.Bytes()
}

// FuzzRebaseTar: whatever tar an install container returns, the tar made
// for the dependency disk holds only relative names inside it (and hard
// links into it), and no more content than the limit.
func FuzzRebaseTar(f *testing.F) {
	reg, dir, link, sym := string(tar.TypeReg), string(tar.TypeDir), string(tar.TypeLink), string(tar.TypeSymlink)
	f.Add(tarOf(f, [4]string{"faas-deps/", dir, "", ""}, [4]string{"faas-deps/lib/a.py", reg, "", "x = 1\n"}))
	f.Add(tarOf(f, [4]string{"faas-deps/../../etc/passwd", reg, "", "root"}))
	f.Add(tarOf(f, [4]string{"faas-deps/..", dir, "", ""}, [4]string{"faas-deps/x", link, "../../etc/shadow", ""}))
	f.Add(tarOf(f, [4]string{"/abs/file", reg, "", "a"}, [4]string{"faas-deps/s", sym, "/etc/passwd", ""}))
	f.Add(tarOf(f, [4]string{"faas-deps/big", reg, "", strings.Repeat("z", 5000)}))
	f.Add([]byte("not a tar at all"))
	f.Fuzz(func(t *testing.T, in []byte) {
		const limit = 4096
		var out bytes.Buffer
		if err := rebaseTar(&out, bytes.NewReader(in), "faas-deps", limit); err != nil {
			return
		}
		tr := tar.NewReader(&out)
		var total int64
		for {
			hdr, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("rebaseTar wrote a tar that does not read back: %v", err)
			}
			name := strings.TrimSuffix(hdr.Name, "/")
			if escapes(name) {
				t.Fatalf("entry %q leaves the tree", hdr.Name)
			}
			if hdr.Typeflag == tar.TypeLink && escapes(hdr.Linkname) {
				t.Fatalf("hard link %q -> %q leaves the tree", hdr.Name, hdr.Linkname)
			}
			if hdr.Uid != 0 || hdr.Gid != 0 {
				t.Fatalf("entry %q owned by %d:%d", hdr.Name, hdr.Uid, hdr.Gid)
			}
			if hdr.Typeflag == tar.TypeReg {
				total += hdr.Size
			}
		}
		if total > limit {
			t.Fatalf("%d bytes of content passed the %d-byte limit", total, limit)
		}
	})
}

// escapes reports whether the slash path p is not a clean relative path
// inside its tree.
func escapes(p string) bool {
	return p == "" || p == ".." || strings.HasPrefix(p, "/") || strings.HasPrefix(p, "../") || path.Clean(p) != p
}

// FuzzCodeTree: a function folder with fuzzed file names, modes and sizes
// is copied and described (the input of the code disk) or refused; the
// description never names a path outside the folder, and the copy holds
// exactly what it describes.
func FuzzCodeTree(f *testing.F) {
	f.Add("handler.py", uint32(0o644), uint16(10), "lib/util.py", uint32(0o755), "link", "handler.py")
	f.Add("a b/ü.txt", uint32(0o4777), uint16(0), "x/y/z", uint32(0), "l", "../../etc/passwd")
	f.Add(".hidden", uint32(0o200), uint16(5000), "-rf", uint32(0o111), "abs", "/etc/passwd")
	f.Add("d/e", uint32(0o644), uint16(1), "d", uint32(0o644), "d/e2", "e")
	f.Fuzz(func(t *testing.T, name1 string, mode1 uint32, size1 uint16, name2 string, mode2 uint32, link, target string) {
		src := filepath.Join(t.TempDir(), "fn")
		if err := os.Mkdir(src, 0o755); err != nil {
			t.Fatal(err)
		}
		made := 0
		for _, e := range []struct {
			name string
			mode uint32
			size int
		}{{name1, mode1, int(size1)}, {name2, mode2, 3}} {
			if !fsName(e.name) {
				continue
			}
			p := filepath.Join(src, e.name)
			if os.MkdirAll(filepath.Dir(p), 0o755) != nil || os.WriteFile(p, bytes.Repeat([]byte{'x'}, e.size), 0o600) != nil {
				continue
			}
			os.Chmod(p, os.FileMode(e.mode&0o7777)|0o400)
			made++
		}
		if fsName(link) && target != "" && !strings.ContainsRune(target, 0) && len(target) < 256 {
			p := filepath.Join(src, link)
			if os.MkdirAll(filepath.Dir(p), 0o755) == nil {
				os.Symlink(target, p)
			}
		}
		dst := filepath.Join(t.TempDir(), "copy")
		if err := os.Mkdir(dst, 0o755); err != nil {
			t.Fatal(err)
		}
		entries, err := readCodeTree(context.Background(), src, dst, 1<<20)
		if err != nil {
			return
		}
		for _, e := range entries {
			if escapes(e.rel) {
				t.Fatalf("entry %q leaves the folder", e.rel)
			}
			fi, err := os.Lstat(filepath.Join(dst, filepath.FromSlash(e.rel)))
			if err != nil {
				t.Fatalf("entry %q is not in the copy: %v", e.rel, err)
			}
			if e.mode.IsRegular() && fi.Size() != e.size {
				t.Fatalf("entry %q: %d bytes in the copy, described %d", e.rel, fi.Size(), e.size)
			}
			if e.mode&os.ModeSymlink != 0 {
				resolved := path.Join(path.Dir(e.rel), e.target)
				if path.IsAbs(e.target) || escapes(resolved) {
					t.Fatalf("symlink %q -> %q leaves the folder", e.rel, e.target)
				}
			}
		}
		_ = codeDigest(entries)
		_ = made
	})
}

// fsName reports whether s can name a file below a folder in a test: a
// clean relative path of at most a few short elements.
func fsName(s string) bool {
	if s == "" || len(s) > 200 || strings.ContainsRune(s, 0) || escapes(s) || s == "." {
		return false
	}
	for _, el := range strings.Split(s, "/") {
		if len(el) > 100 || el == "." {
			return false
		}
	}
	return true
}
