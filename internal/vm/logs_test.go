package vm

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
			err := KeepLog(src, dir, "hello-uid.console.log")
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
	if err := KeepLog(src, shm, "kept.log"); err != nil {
		t.Fatalf("KeepLog: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(shm, "kept.log"))
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
			if err := RemoveVMDir(dir, console, keep, "hello-uid.console.log"); err != nil {
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
