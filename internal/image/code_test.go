package image

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/faasvm/appliance/guest/protocol"
)

// writeCodeTree makes a small function folder and returns its path.
func writeCodeTree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "handler.py"), "def handle(req):\n    return req\n", 0o644)
	mustWrite(t, filepath.Join(dir, "run.sh"), "#!/bin/sh\necho hi\n", 0o755)
	mustWrite(t, filepath.Join(dir, "lib", "util.py"), "X = 1\n", 0o644)
	mustWrite(t, filepath.Join(dir, "lib", "data", "table.csv"), "a,b\n1,2\n", 0o600)
	mustMkdir(t, filepath.Join(dir, "empty"))
	if err := os.Symlink("lib/util.py", filepath.Join(dir, "util.py")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// digestOf is the digest CodeDisk gives the folder dir, without making an
// image.
func digestOf(t *testing.T, dir string) string {
	t.Helper()
	entries, err := readCodeTree(context.Background(), dir, t.TempDir(), DefaultCodeSizeLimit)
	if err != nil {
		t.Fatalf("readCodeTree: %v", err)
	}
	return codeDigest(entries)
}

// digestOfDisk is the digest naming the code disk at path.
func digestOfDisk(path string) string {
	return strings.TrimSuffix(filepath.Base(path), ".ext4")
}

func TestCodeDigest(t *testing.T) {
	base := digestOf(t, writeCodeTree(t))
	tests := []struct {
		name   string
		change func(t *testing.T, dir string)
		same   bool
	}{
		{"same tree elsewhere", func(*testing.T, string) {}, true},
		{"mtimes changed", func(t *testing.T, dir string) {
			old := time.Unix(1e9, 0)
			for _, p := range []string{"handler.py", "lib", "lib/util.py"} {
				if err := os.Chtimes(filepath.Join(dir, p), old, old); err != nil {
					t.Fatal(err)
				}
			}
		}, true},
		{"group write bit (not in the image)", func(t *testing.T, dir string) {
			if err := os.Chmod(filepath.Join(dir, "handler.py"), 0o664); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"content changed", func(t *testing.T, dir string) {
			mustWrite(t, filepath.Join(dir, "lib", "util.py"), "X = 2\n", 0o644)
		}, false},
		{"content changed, same size", func(t *testing.T, dir string) {
			mustWrite(t, filepath.Join(dir, "handler.py"), "def handle(req):\n    return REQ\n", 0o644)
		}, false},
		{"made executable", func(t *testing.T, dir string) {
			if err := os.Chmod(filepath.Join(dir, "handler.py"), 0o755); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"file renamed", func(t *testing.T, dir string) {
			if err := os.Rename(filepath.Join(dir, "run.sh"), filepath.Join(dir, "run2.sh")); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"file added", func(t *testing.T, dir string) {
			mustWrite(t, filepath.Join(dir, "new.txt"), "", 0o644)
		}, false},
		{"empty directory added", func(t *testing.T, dir string) {
			mustMkdir(t, filepath.Join(dir, "empty", "more"))
		}, false},
		{"symlink retargeted", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "util.py")
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("handler.py", p); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"file moved into a directory", func(t *testing.T, dir string) {
			if err := os.Rename(filepath.Join(dir, "run.sh"), filepath.Join(dir, "empty", "run.sh")); err != nil {
				t.Fatal(err)
			}
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeCodeTree(t)
			tt.change(t, dir)
			got := digestOf(t, dir)
			if (got == base) != tt.same {
				t.Fatalf("digest equal to the original's: got %v, want %v (%s vs %s)", got == base, tt.same, got, base)
			}
		})
	}
}

func TestCodeTreeRefuses(t *testing.T) {
	tests := []struct {
		name    string
		limit   int64
		prepare func(t *testing.T, dir string)
		wantErr error  // errors.Is target, or nil
		want    string // substring of the message
	}{
		{
			name:    "absolute symlink",
			prepare: func(t *testing.T, dir string) { symlink(t, "/etc/passwd", filepath.Join(dir, "pw")) },
			wantErr: ErrSymlinkOutside,
			want:    "pw -> /etc/passwd",
		},
		{
			name:    "symlink to the parent",
			prepare: func(t *testing.T, dir string) { symlink(t, "..", filepath.Join(dir, "up")) },
			wantErr: ErrSymlinkOutside,
			want:    "up -> ..",
		},
		{
			name: "symlink climbing out of a subdirectory",
			prepare: func(t *testing.T, dir string) {
				mustMkdir(t, filepath.Join(dir, "sub"))
				symlink(t, "../../secret", filepath.Join(dir, "sub", "s"))
			},
			wantErr: ErrSymlinkOutside,
			want:    "sub/s -> ../../secret",
		},
		{
			name: "symlink leading out through another symlink",
			prepare: func(t *testing.T, dir string) {
				symlink(t, ".", filepath.Join(dir, "here"))
				symlink(t, "here/..", filepath.Join(dir, "sneaky"))
			},
			wantErr: ErrSymlinkOutside,
			want:    "sneaky -> here/.. resolves to",
		},
		{
			name:    "named pipe",
			prepare: func(t *testing.T, dir string) { mkfifo(t, filepath.Join(dir, "fifo")) },
			want:    "fifo is a named pipe",
		},
		{
			name:  "over the size limit",
			limit: 10,
			prepare: func(t *testing.T, dir string) {
				mustWrite(t, filepath.Join(dir, "a"), "123456", 0o644)
				mustWrite(t, filepath.Join(dir, "b"), "12345", 0o644)
			},
			wantErr: ErrCodeTooLarge,
			want:    "more than 10 bytes",
		},
		{
			name:    "not a directory",
			prepare: func(t *testing.T, dir string) { mustWrite(t, filepath.Join(dir, "f"), "", 0o644) },
			want:    "is not a folder",
		},
		{
			name: "the folder is a symlink (swapped for one) to a folder holding a secret",
			prepare: func(t *testing.T, dir string) {
				outside := t.TempDir()
				mustWrite(t, filepath.Join(outside, "secret"), "TOP SECRET", 0o644)
				symlink(t, outside, filepath.Join(dir, "f"))
			},
			want: "is a symlink",
		},
		{
			name: "hard link",
			prepare: func(t *testing.T, dir string) {
				mustWrite(t, filepath.Join(dir, "a"), "x", 0o644)
				if err := os.Link(filepath.Join(dir, "a"), filepath.Join(t.TempDir(), "b")); err != nil {
					t.Fatal(err)
				}
			},
			want: "a is a hard link",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.prepare(t, dir)
			if _, err := os.Lstat(filepath.Join(dir, "f")); err == nil {
				dir = filepath.Join(dir, "f") // the folder under test is f
			}
			limit := tt.limit
			if limit == 0 {
				limit = DefaultCodeSizeLimit
			}
			_, err := readCodeTree(context.Background(), dir, t.TempDir(), limit)
			if err == nil {
				t.Fatalf("got no error, want one containing %q", tt.want)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("got error %v, want one wrapping %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got error %q, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestCodeTreeAccepts(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, dir string)
	}{
		{"symlink within", func(t *testing.T, dir string) {
			mustWrite(t, filepath.Join(dir, "sub", "f"), "x", 0o644)
			symlink(t, "sub/f", filepath.Join(dir, "f"))
			symlink(t, "../f", filepath.Join(dir, "sub", "g"))
		}},
		{"symlink to a directory within", func(t *testing.T, dir string) {
			mustMkdir(t, filepath.Join(dir, "sub"))
			symlink(t, "sub", filepath.Join(dir, "alias"))
		}},
		{"dangling symlink within", func(t *testing.T, dir string) {
			symlink(t, "not-yet", filepath.Join(dir, "later"))
		}},
		{"exactly at the size limit", func(t *testing.T, dir string) {
			mustWrite(t, filepath.Join(dir, "a"), "12345", 0o644)
			mustWrite(t, filepath.Join(dir, "b"), "12345", 0o644)
		}},
		{"empty folder", func(*testing.T, string) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.prepare(t, dir)
			if _, err := readCodeTree(context.Background(), dir, t.TempDir(), 10); err != nil {
				t.Fatalf("got error %v, want none", err)
			}
		})
	}
}

func symlink(t *testing.T, target, path string) {
	t.Helper()
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
}

func mkfifo(t *testing.T, path string) {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCodeDisk makes a real ext4 image with mke2fs and reads it back with
// debugfs.
func TestCodeDisk(t *testing.T) {
	ctx := context.Background()
	c := newTestCache(t, "", nil)
	src := writeCodeTree(t)
	before := snapshotMeta(t, src)

	path, err := c.CodeDisk(ctx, src)
	if err != nil {
		t.Fatalf("CodeDisk: %v", err)
	}
	digest := digestOf(t, src)
	if want := filepath.Join(c.Dir(), "code", digest+".ext4"); path != want {
		t.Errorf("path: got %s, want %s", path, want)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o444 {
		t.Errorf("mode: got %v (%v), want -r--r--r--", fi.Mode(), err)
	}
	if label, err := ext4Label(path); err != nil || label != protocol.CodeLabel {
		t.Errorf("label: got %q (%v), want %q", label, err, protocol.CodeLabel)
	}
	if after := snapshotMeta(t, src); after != before {
		t.Errorf("the source folder changed:\n got %s\nwant %s", after, before)
	}

	files := []struct {
		path, content string
		mode          string // as debugfs prints it
	}{
		{"/handler.py", "def handle(req):\n    return req\n", "0644"},
		{"/run.sh", "#!/bin/sh\necho hi\n", "0755"},
		{"/lib/util.py", "X = 1\n", "0644"},
		{"/lib/data/table.csv", "a,b\n1,2\n", "0644"}, // 0600 in the folder: readable by all in the image
	}
	for _, f := range files {
		t.Run(f.path, func(t *testing.T) {
			out, errOut := debugfs(t, path, "cat "+f.path)
			if out != f.content {
				t.Errorf("content: got %q, want %q (%s)", out, f.content, errOut)
			}
			stat, _ := debugfs(t, path, "stat "+f.path)
			if !strings.Contains(stat, "Mode:  "+f.mode) || !strings.Contains(stat, "User:     0   Group:     0") {
				t.Errorf("stat: got\n%s\nwant mode %s, owner 0:0", stat, f.mode)
			}
		})
	}
	if link, _ := debugfs(t, path, "stat /util.py"); !strings.Contains(link, `Fast link dest: "lib/util.py"`) {
		t.Errorf("symlink: got\n%s\nwant a link to lib/util.py", link)
	}

	again, err := c.CodeDisk(ctx, src)
	if err != nil || again != path {
		t.Errorf("second call: got %s %v, want %s", again, err, path)
	}
	mustWrite(t, filepath.Join(src, "handler.py"), "changed\n", 0o644)
	changed, err := c.CodeDisk(ctx, src)
	if err != nil || changed == path || digestOfDisk(changed) == digest {
		t.Errorf("after an edit: got %s %v, want a new image", changed, err)
	}
	if out, _ := debugfs(t, changed, "cat /handler.py"); out != "changed\n" {
		t.Errorf("edited content: got %q, want %q", out, "changed\n")
	}
	if left, _ := os.ReadDir(filepath.Join(c.Dir(), "tmp")); len(left) != 0 {
		t.Errorf("tmp: got %d leftovers, want 0", len(left))
	}
}

func TestCodeDiskRefusesLeavesNothing(t *testing.T) {
	c := newTestCache(t, "", nil)
	src := writeCodeTree(t)
	symlink(t, "/etc", filepath.Join(src, "etc"))
	if _, err := c.CodeDisk(context.Background(), src); !errors.Is(err, ErrSymlinkOutside) {
		t.Fatalf("got error %v, want ErrSymlinkOutside", err)
	}
	for _, d := range []string{"code", "tmp"} {
		if left, _ := os.ReadDir(filepath.Join(c.Dir(), d)); len(left) != 0 {
			t.Errorf("%s: got %d entries, want 0", d, len(left))
		}
	}
}

// snapshotMeta describes a tree's names, sizes, modes and mtimes.
func snapshotMeta(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		b.WriteString(p + " " + fi.Mode().String() + " " + fi.ModTime().String() + "\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestCodeDiskSizeLimitFromConfig(t *testing.T) {
	c, err := New(Config{Dir: t.TempDir(), Logger: testLogger(t), CodeSizeLimit: 16})
	if err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	mustWrite(t, filepath.Join(src, "big"), strings.Repeat("x", 17), 0o644)
	if _, err := c.CodeDisk(context.Background(), src); !errors.Is(err, ErrCodeTooLarge) || !strings.Contains(err.Error(), "more than 16 bytes") {
		t.Fatalf("got error %v, want ErrCodeTooLarge naming the 16-byte limit", err)
	}
}
