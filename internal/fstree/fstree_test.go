package fstree

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// build makes a folder from files: slash paths to content, where content
// "->x" makes a symlink to x and a path ending in "/" a folder.
func build(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for rel, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(strings.TrimSuffix(rel, "/")))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch target, link := strings.CutPrefix(content, "->"); {
		case strings.HasSuffix(rel, "/"):
			err = os.Mkdir(p, 0o755)
		case link:
			err = os.Symlink(target, p)
		default:
			err = os.WriteFile(p, []byte(content), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestTypeOf(t *testing.T) {
	tests := []struct {
		mode fs.FileMode
		want Type
		name string
	}{
		{0o644, Regular, ""},
		{fs.ModeDir | 0o755, Dir, ""},
		{fs.ModeSymlink | 0o777, Symlink, ""},
		{fs.ModeNamedPipe, Special, "named pipe"},
		{fs.ModeSocket, Special, "socket"},
		{fs.ModeDevice, Special, "device"},
		{fs.ModeDevice | fs.ModeCharDevice, Special, "device"},
		{fs.ModeIrregular, Special, "special file"},
	}
	for _, tt := range tests {
		if got := TypeOf(tt.mode); got != tt.want {
			t.Errorf("TypeOf(%v) = %v, want %v", tt.mode, got, tt.want)
		}
		if tt.want == Special {
			if got := KindName(tt.mode); got != tt.name {
				t.Errorf("KindName(%v) = %q, want %q", tt.mode, got, tt.name)
			}
		}
	}
}

func TestWalkAccepts(t *testing.T) {
	tests := []struct {
		name     string
		files    map[string]string
		dangling bool
		maxSize  int64
		want     []string // Rel, type letter and target, in visiting order
	}{
		{
			name:  "walk order: a folder before what it holds, lexical within",
			files: map[string]string{"b": "", "a.b": "", "a/c": "", "a/b/": ""},
			want:  []string{"a d", "a/b d", "a/c f", "a.b f", "b f"},
		},
		{
			name:  "links inside, by text and resolved",
			files: map[string]string{"sub/f": "x", "f": "->sub/f", "sub/g": "->../f", "alias": "->sub", "deep": "->alias/f"},
			want:  []string{"alias l sub", "deep l alias/f", "f l sub/f", "sub d", "sub/f f", "sub/g l ../f"},
		},
		{
			name:     "dangling link allowed when asked",
			files:    map[string]string{"later": "->not-yet"},
			dangling: true,
			want:     []string{"later l not-yet"},
		},
		{
			name:    "exactly at the size limit",
			files:   map[string]string{"a": "12345", "b": "12345"},
			maxSize: 10,
			want:    []string{"a f", "b f"},
		},
		{
			name:  "empty folder",
			files: map[string]string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := build(t, tt.files)
			w := &Walker{MaxSize: tt.maxSize, AllowDangling: tt.dangling}
			var got []string
			err := w.Walk(context.Background(), dir, func(e Entry) error {
				s := e.Rel + " " + string("?fdl"[e.Type])
				if e.Target != "" {
					s += " " + e.Target
				}
				if e.Path != filepath.Join(dir, filepath.FromSlash(e.Rel)) {
					t.Errorf("%s: Path %s, want it below %s", e.Rel, e.Path, dir)
				}
				got = append(got, s)
				return nil
			})
			if err != nil {
				t.Fatalf("Walk: %v", err)
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("entries:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestWalkRefuses(t *testing.T) {
	tests := []struct {
		name     string
		files    map[string]string
		prepare  func(t *testing.T, dir string)
		dangling bool
		maxSize  int64
		want     Error // Err and Resolved are not compared; Resolved only for being set
		wantMsg  string
	}{
		{
			name:    "absolute symlink",
			files:   map[string]string{"pw": "->/etc/passwd"},
			want:    Error{Kind: ErrAbsolute, Rel: "pw", Target: "/etc/passwd"},
			wantMsg: "symlink pw points to the absolute path /etc/passwd",
		},
		{
			name:    "symlink to the parent",
			files:   map[string]string{"up": "->.."},
			want:    Error{Kind: ErrOutside, Rel: "up", Target: ".."},
			wantMsg: "symlink up -> .. points outside the folder",
		},
		{
			name:    "symlink climbing out of a subfolder",
			files:   map[string]string{"sub/s": "->../../secret"},
			want:    Error{Kind: ErrOutside, Rel: "sub/s", Target: "../../secret"},
			wantMsg: "symlink sub/s -> ../../secret points outside the folder",
		},
		{
			name:    "symlink leading out through another symlink",
			files:   map[string]string{"here": "->.", "sneaky": "->here/.."},
			want:    Error{Kind: ErrOutside, Rel: "sneaky", Target: "here/..", Resolved: "set"},
			wantMsg: "symlink sneaky -> here/.. points outside the folder",
		},
		{
			name:    "dangling symlink by default",
			files:   map[string]string{"gone": "->missing"},
			want:    Error{Kind: ErrUnresolved, Rel: "gone", Target: "missing"},
			wantMsg: "symlink gone -> missing does not resolve to anything inside the folder",
		},
		{
			name:     "symlink loop even when dangling is allowed",
			files:    map[string]string{"a": "->b", "b": "->a"},
			dangling: true,
			want:     Error{Kind: ErrUnresolved, Rel: "a", Target: "b"},
			wantMsg:  "symlink a -> b does not resolve",
		},
		{
			name:    "named pipe",
			prepare: func(t *testing.T, dir string) { mkfifo(t, filepath.Join(dir, "fifo")) },
			want:    Error{Kind: ErrSpecial, Rel: "fifo", Mode: fs.ModeNamedPipe},
			wantMsg: "fifo is a named pipe; a function folder may hold only files, folders and symlinks",
		},
		{
			name: "socket",
			prepare: func(t *testing.T, dir string) {
				l, err := net.Listen("unix", filepath.Join(dir, "sock"))
				if err != nil {
					t.Skipf("unix socket: %v", err)
				}
				l.(*net.UnixListener).SetUnlinkOnClose(false)
				l.Close()
			},
			want:    Error{Kind: ErrSpecial, Rel: "sock", Mode: fs.ModeSocket},
			wantMsg: "sock is a socket;",
		},
		{
			name: "hard link",
			prepare: func(t *testing.T, dir string) {
				if err := os.WriteFile(filepath.Join(dir, "one"), []byte("x"), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Link(filepath.Join(dir, "one"), filepath.Join(t.TempDir(), "elsewhere")); err != nil {
					t.Fatal(err)
				}
			},
			want:    Error{Kind: ErrHardLink, Rel: "one"},
			wantMsg: "one is a hard link (2 names for one file)",
		},
		{
			name:    "over the size limit",
			files:   map[string]string{"a": "123456", "b": "12345"},
			maxSize: 10,
			want:    Error{Kind: ErrTooLarge, Rel: "b", Limit: 10},
			wantMsg: "folder holds more than the 10 bytes a function may have (at b)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := build(t, tt.files)
			if tt.prepare != nil {
				tt.prepare(t, dir)
			}
			w := &Walker{MaxSize: tt.maxSize, AllowDangling: tt.dangling}
			err := w.Walk(context.Background(), dir, func(Entry) error { return nil })
			var got *Error
			if !errors.As(err, &got) {
				t.Fatalf("got error %v, want an *Error", err)
			}
			if got.Kind != tt.want.Kind || got.Rel != tt.want.Rel || got.Target != tt.want.Target ||
				got.Limit != tt.want.Limit || got.Mode&fs.ModeType != tt.want.Mode ||
				(got.Resolved != "") != (tt.want.Resolved != "") {
				t.Errorf("got %+v, want %+v", *got, tt.want)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("got message %q, want one containing %q", err, tt.wantMsg)
			}
		})
	}
}

func TestWalkStops(t *testing.T) {
	dir := build(t, map[string]string{"a": "", "b": ""})
	stop := errors.New("stop")
	var n int
	err := (&Walker{}).Walk(context.Background(), dir, func(Entry) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("fn's error: got %v after %d calls, want %v after 1", err, n, stop)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := (&Walker{}).Walk(ctx, dir, func(Entry) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: got %v, want context.Canceled", err)
	}
	if err := (&Walker{}).Walk(context.Background(), filepath.Join(dir, "gone"), func(Entry) error { return nil }); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing root: got %v, want fs.ErrNotExist", err)
	}
}

// hashOne walks dir and hashes the entry rel from inside the walk, after
// before (nil: nothing) has run.
func hashOne(t *testing.T, w *Walker, dir, rel string, before func(), dst *bytes.Buffer) ([32]byte, int64, error) {
	t.Helper()
	var (
		sum   [32]byte
		n     int64
		err   error
		found bool
	)
	werr := w.Walk(context.Background(), dir, func(e Entry) error {
		if e.Rel != rel {
			return nil
		}
		found = true
		if before != nil {
			before()
		}
		var out io.Writer
		if dst != nil {
			out = dst
		}
		sum, n, err = w.Hash(e, out)
		return nil
	})
	if werr != nil {
		t.Fatalf("Walk: %v", werr)
	}
	if !found {
		t.Fatalf("Walk: no entry %s", rel)
	}
	return sum, n, err
}

func TestHash(t *testing.T) {
	tests := []struct {
		name    string
		maxSize int64
		files   []string // contents, hashed in order
		wantErr int      // index of the file that fails, -1: none
	}{
		{"no limit", 0, []string{"hello", "world"}, -1},
		{"within", 10, []string{"hello", "world"}, -1},
		{"grew past the limit", 9, []string{"hello", "world"}, 1},
		{"empty", 1, []string{""}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			w := &Walker{MaxSize: tt.maxSize}
			p := filepath.Join(dir, "f")
			for i, content := range tt.files {
				if err := os.WriteFile(p, []byte(""), 0o644); err != nil {
					t.Fatal(err)
				}
				var copied bytes.Buffer
				// The file grows after the walk saw it empty.
				grow := func() {
					if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				sum, n, err := hashOne(t, w, dir, "f", grow, &copied)
				if i == tt.wantErr {
					var rule *Error
					if !errors.As(err, &rule) || rule.Kind != ErrTooLarge || rule.Limit != tt.maxSize {
						t.Fatalf("file %d: got %v, want ErrTooLarge with limit %d", i, err, tt.maxSize)
					}
					return
				}
				if err != nil {
					t.Fatalf("file %d: %v", i, err)
				}
				if sum != sha256.Sum256([]byte(content)) || n != int64(len(content)) || copied.String() != content {
					t.Errorf("file %d: got %x %d %q, want the sha256, length and a copy of %q", i, sum, n, copied.String(), content)
				}
			}
			if tt.wantErr >= 0 {
				t.Errorf("got no error, want one at file %d", tt.wantErr)
			}
		})
	}
}

func TestHashOutsideWalk(t *testing.T) {
	if _, _, err := (&Walker{}).Hash(Entry{Rel: "f"}, nil); err == nil || !strings.Contains(err.Error(), "not an entry from Walk") {
		t.Errorf("got %v, want a refusal", err)
	}
}

// TestHashRefusesSwaps replaces a walked file between the walk seeing it
// and reading it: for a pipe, for a symlink leading outside or inside, for
// a hard link; its folder for a symlink leading outside. Hash must read
// none of them.
func TestHashRefusesSwaps(t *testing.T) {
	outsideDir := t.TempDir()
	secret := filepath.Join(outsideDir, "secret")
	if err := os.WriteFile(secret, []byte("TOP SECRET"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		rel     string // the walked file to read
		swap    func(t *testing.T, dir string)
		wantMsg string
	}{
		{name: "file swapped for a symlink outside", rel: "a.txt", swap: func(t *testing.T, dir string) {
			replace(t, filepath.Join(dir, "a.txt"), func(p string) error { return os.Symlink(secret, p) })
		}},
		{name: "file swapped for a symlink inside", rel: "a.txt", swap: func(t *testing.T, dir string) {
			replace(t, filepath.Join(dir, "a.txt"), func(p string) error { return os.Symlink("sub/secret", p) })
		}, wantMsg: "replaced by another file"},
		{name: "file swapped for a pipe", rel: "a.txt", swap: func(t *testing.T, dir string) {
			replace(t, filepath.Join(dir, "a.txt"), func(p string) error { return syscall.Mkfifo(p, 0o644) })
		}, wantMsg: "no longer a regular file"},
		{name: "file hard-linked after the walk", rel: "a.txt", swap: func(t *testing.T, dir string) {
			if err := os.Link(filepath.Join(dir, "a.txt"), filepath.Join(outsideDir, "alias")); err != nil {
				t.Fatal(err)
			}
		}, wantMsg: "hard link"},
		{name: "folder swapped for a symlink outside", rel: "sub/secret", swap: func(t *testing.T, dir string) {
			replace(t, filepath.Join(dir, "sub"), func(p string) error { return os.Symlink(outsideDir, p) })
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range []string{"a.txt", "sub/secret"} {
				p := filepath.Join(dir, f)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte("inside"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var got bytes.Buffer
			_, _, err := hashOne(t, &Walker{}, dir, tt.rel, func() { tt.swap(t, dir) }, &got)
			if err == nil || strings.Contains(got.String(), "SECRET") || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("Hash after the swap: got %v and %q, want a refusal (%q) and nothing read", err, got.String(), tt.wantMsg)
			}
		})
	}
}

// replace removes p and makes something else there with mk.
func replace(t *testing.T, p string, mk func(string) error) {
	t.Helper()
	if err := os.RemoveAll(p); err != nil {
		t.Fatal(err)
	}
	if err := mk(p); err != nil {
		t.Fatal(err)
	}
}

// TestWalkFolderSwappedMidWalk swaps a folder the walk has listed but not
// yet entered for a symlink to an outside folder: the walk must see the
// symlink (and refuse it), never what is outside.
func TestWalkFolderSwappedMidWalk(t *testing.T) {
	outsideDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(outsideDir, "secret"), []byte("TOP SECRET"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := build(t, map[string]string{"a": "first", "z/inner": "x"})
	var seen []string
	err := (&Walker{}).Walk(context.Background(), dir, func(e Entry) error {
		seen = append(seen, e.Rel)
		if e.Rel == "a" {
			replace(t, filepath.Join(dir, "z"), func(p string) error { return os.Symlink(outsideDir, p) })
		}
		return nil
	})
	var rule *Error
	if !errors.As(err, &rule) || rule.Kind != ErrAbsolute || rule.Rel != "z" {
		t.Errorf("Walk: got %v, want the swapped-in symlink refused", err)
	}
	for _, s := range seen {
		if strings.Contains(s, "secret") {
			t.Errorf("the walk listed %s from outside the folder", s)
		}
	}
}

func TestOpenFolder(t *testing.T) {
	real := build(t, map[string]string{"f": "x"})
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
		want ErrorKind
	}{
		{"a folder", real, 0},
		{"a symlink to a folder", link, ErrRootSymlink},
		{"a file", filepath.Join(real, "f"), ErrRootNotFolder},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := OpenFolder(tt.path)
			if tt.want == 0 {
				if err != nil {
					t.Fatalf("OpenFolder: %v", err)
				}
				r.Close()
				return
			}
			var rule *Error
			if !errors.As(err, &rule) || rule.Kind != tt.want {
				t.Errorf("OpenFolder: got %v, want kind %d", err, tt.want)
			}
			if err := (&Walker{}).Walk(context.Background(), tt.path, func(Entry) error { return nil }); !errors.As(err, &rule) || rule.Kind != tt.want {
				t.Errorf("Walk: got %v, want kind %d", err, tt.want)
			}
		})
	}
}

func TestCopy(t *testing.T) {
	src := build(t, map[string]string{"run.sh": "#!/bin/sh\n", "lib/u.py": "X = 1\n", "alias": "->lib/u.py", "lib/empty/": ""})
	for p, m := range map[string]os.FileMode{"run.sh": 0o700, "lib/u.py": 0o600, "lib": 0o700} {
		if err := os.Chmod(filepath.Join(src, p), m); err != nil {
			t.Fatal(err)
		}
	}
	dst := t.TempDir()
	got, err := (&Walker{}).Copy(context.Background(), src, dst)
	if err != nil {
		t.Fatal(err)
	}
	want := []Copied{
		{Rel: "alias", Type: Symlink, Mode: fs.ModeSymlink | 0o777, Target: "lib/u.py"},
		{Rel: "lib", Type: Dir, Mode: fs.ModeDir | 0o755},
		{Rel: "lib/empty", Type: Dir, Mode: fs.ModeDir | 0o755},
		{Rel: "lib/u.py", Type: Regular, Mode: 0o644, Size: 6, Sum: sha256.Sum256([]byte("X = 1\n"))},
		{Rel: "run.sh", Type: Regular, Mode: 0o755, Size: 10, Sum: sha256.Sum256([]byte("#!/bin/sh\n"))},
	}
	if len(got) != len(want) {
		t.Fatalf("Copy: got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d: got %+v, want %+v", i, got[i], want[i])
		}
		fi, err := os.Lstat(filepath.Join(dst, filepath.FromSlash(want[i].Rel)))
		if err != nil || fi.Mode() != want[i].Mode {
			t.Errorf("%s in the copy: got %v, %v; want mode %v", want[i].Rel, fi.Mode(), err, want[i].Mode)
		}
	}
	if fi, err := os.Stat(dst); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("the copy's root: got %v, %v; want 0755", fi.Mode(), err)
	}
	// The copy stays what it was.
	if err := os.WriteFile(filepath.Join(src, "lib/u.py"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "lib/u.py")); string(b) != "X = 1\n" {
		t.Errorf("the copy changed with the source: %q", b)
	}
}

func mkfifo(t *testing.T, path string) {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Fatal(err)
	}
}
