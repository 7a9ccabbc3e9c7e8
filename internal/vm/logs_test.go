package vm

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestKeepLog(t *testing.T) {
	tests := []struct {
		name     string
		src      string // content of the source log; "" for no file
		dir      func(t *testing.T, base string) string
		want     string // content of the kept log; "" for none
		wantErr  string
		wantGone bool // the source does not exist afterwards
	}{
		{
			name: "moved into an existing dir", src: "boot ok\n",
			dir:  func(t *testing.T, base string) string { return mkdir(t, base, "keep") },
			want: "boot ok\n", wantGone: true,
		},
		{
			name: "dir created", src: "boot ok\n",
			dir:  func(_ *testing.T, base string) string { return filepath.Join(base, "a", "b") },
			want: "boot ok\n", wantGone: true,
		},
		{
			name: "no log: nothing kept, no error",
			dir:  func(t *testing.T, base string) string { return mkdir(t, base, "keep") }, wantGone: true,
		},
		{
			name: "dir is a file", src: "boot ok\n",
			dir: func(t *testing.T, base string) string {
				p := filepath.Join(base, "file")
				if err := os.WriteFile(p, nil, 0o600); err != nil {
					t.Fatal(err)
				}
				return p
			},
			wantErr: "keeping console log",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			src := filepath.Join(base, "console.log")
			if tt.src != "" {
				if err := os.WriteFile(src, []byte(tt.src), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			dir := tt.dir(t, base)
			err := KeepLog(src, dir, "hello", "uid")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("KeepLog: %v", err)
			}
			got, err := os.ReadFile(filepath.Join(dir, "hello-uid.console.log"))
			switch {
			case tt.want == "" && !errors.Is(err, os.ErrNotExist):
				t.Errorf("kept log: got %q (error %v), want none", got, err)
			case tt.want != "" && string(got) != tt.want:
				t.Errorf("kept log: got %q (error %v), want %q", got, err, tt.want)
			}
			if _, err := os.Stat(src); tt.wantGone != errors.Is(err, os.ErrNotExist) {
				t.Errorf("source gone: got %v, want %v", errors.Is(err, os.ErrNotExist), tt.wantGone)
			}
		})
	}
}

// TestKeepLogAcrossFileSystems moves a log from the temp dir to /dev/shm
// when they are different file systems, which takes the copy fallback.
func TestKeepLogAcrossFileSystems(t *testing.T) {
	shm, err := os.MkdirTemp("/dev/shm", "keeplog")
	if err != nil {
		t.Skipf("no /dev/shm to move across: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	src := filepath.Join(t.TempDir(), "console.log")
	if err := os.WriteFile(src, []byte("last words\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(src, filepath.Join(shm, "probe")); err == nil {
		t.Skip("the temp dir and /dev/shm are one file system: no EXDEV to fall back from")
	}
	if err := KeepLog(src, shm, "kept", "uid"); err != nil {
		t.Fatalf("KeepLog: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(shm, "kept-uid.console.log"))
	if err != nil || string(got) != "last words\n" {
		t.Errorf("kept log: got %q (error %v), want %q", got, err, "last words\n")
	}
}

func mkdir(t *testing.T, base, name string) string {
	t.Helper()
	p := filepath.Join(base, name)
	if err := os.Mkdir(p, 0o700); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRemoveVMDir(t *testing.T) {
	tests := []struct {
		name     string
		keepLogs bool
		wantKept bool
	}{
		{name: "log removed with the dir"},
		{name: "log kept", keepLogs: true, wantKept: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			dir := mkdir(t, base, "vm")
			console := filepath.Join(dir, "console.log")
			if err := os.WriteFile(console, []byte("boot ok\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			keep := ""
			if tt.keepLogs {
				keep = filepath.Join(base, "keep")
			}
			if err := RemoveVMDir(dir, console, keep, "hello", "uid"); err != nil {
				t.Fatalf("RemoveVMDir: %v", err)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("vm dir: got stat error %v, want it gone", err)
			}
			if tt.keepLogs {
				got, err := os.ReadFile(filepath.Join(keep, "hello-uid.console.log"))
				if err != nil || string(got) != "boot ok\n" {
					t.Errorf("kept log: got %q (error %v), want %q", got, err, "boot ok\n")
				}
			}
		})
	}
}

func TestPruneLogs(t *testing.T) {
	const (
		u1 = "0b1d4c9e-0000-4000-8000-000000000001"
		u2 = "0b1d4c9e-0000-4000-8000-000000000002"
		u3 = "0b1d4c9e-0000-4000-8000-000000000003"
		u4 = "0b1d4c9e-0000-4000-8000-000000000004"
	)
	tests := []struct {
		name  string
		files []string // oldest first
		keep  int
		want  []string // what is left, sorted
	}{
		{
			name:  "under the bound: nothing removed",
			files: []string{"hello-" + u1 + ".console.log", "hello-" + u2 + ".console.log"},
			keep:  2,
			want:  []string{"hello-" + u1 + ".console.log", "hello-" + u2 + ".console.log"},
		},
		{
			name: "oldest removed",
			files: []string{"hello-" + u1 + ".console.log", "hello-" + u2 + ".console.log",
				"hello-" + u3 + ".console.log", "hello-" + u4 + ".console.log"},
			keep: 2,
			want: []string{"hello-" + u3 + ".console.log", "hello-" + u4 + ".console.log"},
		},
		{
			name: "bound is per vm name, hyphenated names apart",
			files: []string{"hello-world-" + u1 + ".console.log", "hello-" + u1 + ".console.log",
				"hello-world-" + u2 + ".console.log", "hello-" + u2 + ".console.log",
				"hello-world-" + u3 + ".console.log"},
			keep: 1,
			want: []string{"hello-" + u2 + ".console.log", "hello-world-" + u3 + ".console.log"},
		},
		{
			name:  "ids that are not uuids: the name ends at the last hyphen",
			files: []string{"fn-a-1.console.log", "fn-a-2.console.log", "fn-b-3.console.log"},
			keep:  1,
			want:  []string{"fn-a-2.console.log", "fn-b-3.console.log"},
		},
		{
			name: "other files left alone",
			files: []string{"notes.txt", "console.log", "x.console.log", "hello-" + u1 + ".console.log",
				"hello-" + u2 + ".console.log"},
			keep: 1,
			want: []string{"console.log", "hello-" + u2 + ".console.log", "notes.txt", "x.console.log"},
		},
		{
			name:  "keep 0 removes every kept log",
			files: []string{"hello-" + u1 + ".console.log", "notes.txt"},
			keep:  0,
			want:  []string{"notes.txt"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeAged(t, dir, tt.files...)
			if err := PruneLogs(dir, tt.keep); err != nil {
				t.Fatalf("PruneLogs: %v", err)
			}
			if got := listDir(t, dir); !slices.Equal(got, tt.want) {
				t.Errorf("left: got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestPruneLogsMissingDir(t *testing.T) {
	if err := PruneLogs(filepath.Join(t.TempDir(), "never-made"), 1); err != nil {
		t.Errorf("PruneLogs of a missing dir: got %v, want nil", err)
	}
}

// TestKeepLogPrunes checks that keeping a log bounds the directory to
// DefaultKeptLogs per VM name, the new log among them.
func TestKeepLogPrunes(t *testing.T) {
	dir := t.TempDir()
	var old []string
	for i := range DefaultKeptLogs + 3 {
		old = append(old, KeptLogName("hello", "old"+string(rune('a'+i))))
	}
	writeAged(t, dir, old...)
	writeAged(t, dir, KeptLogName("other", "x"))
	src := filepath.Join(t.TempDir(), "console.log")
	if err := os.WriteFile(src, []byte("new\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := KeepLog(src, dir, "hello", "new"); err != nil {
		t.Fatalf("KeepLog: %v", err)
	}
	want := append(slices.Clone(old[len(old)-DefaultKeptLogs+1:]), KeptLogName("hello", "new"), KeptLogName("other", "x"))
	slices.Sort(want)
	if got := listDir(t, dir); !slices.Equal(got, want) {
		t.Errorf("left: got %q, want %q", got, want)
	}
}

// writeAged writes files into dir with modification times one minute
// apart, in order, all in the past.
func writeAged(t *testing.T, dir string, files ...string) {
	t.Helper()
	base := time.Now().Add(-time.Hour)
	for i, f := range files {
		p := filepath.Join(dir, f)
		if err := os.WriteFile(p, []byte(f), 0o600); err != nil {
			t.Fatal(err)
		}
		at := base.Add(time.Duration(i) * time.Minute)
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
	}
}

// listDir returns the sorted names in dir.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}
