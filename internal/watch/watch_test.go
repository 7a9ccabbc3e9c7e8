package watch

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// debounce is short enough for quick tests and long enough that a burst of
// writes from one loop lands inside it.
const debounce = 150 * time.Millisecond

// eventTimeout bounds the wait for an expected event.
const eventTimeout = 5 * time.Second

// quiet is how long a test listens to be sure no (further) event comes: the
// debounce plus generous slack for a busy machine.
const quiet = debounce + 500*time.Millisecond

func write(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// start runs a watcher on a fresh functions directory holding the given
// files, and returns the directory and the event channel.
func start(t *testing.T, files map[string]string) (string, <-chan string) {
	t.Helper()
	return startWith(t, debounce, files)
}

func startWith(t *testing.T, debounce time.Duration, files map[string]string) (string, <-chan string) {
	t.Helper()
	dir := t.TempDir()
	for rel, content := range files {
		write(t, filepath.Join(dir, rel), content)
	}
	w, err := New(dir, debounce, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return dir, w.Events()
}

// expect waits for the next events and checks they are want, in any order,
// and that nothing else follows within quiet.
func expect(t *testing.T, events <-chan string, want ...string) {
	t.Helper()
	got := map[string]int{}
	for range want {
		select {
		case name := <-events:
			got[name]++
		case <-time.After(eventTimeout):
			t.Fatalf("got events %v, want %v: timed out after %s", got, want, eventTimeout)
		}
	}
	wantCount := map[string]int{}
	for _, n := range want {
		wantCount[n]++
	}
	if !reflect.DeepEqual(got, wantCount) {
		t.Fatalf("got events %v, want %v", got, wantCount)
	}
	expectNone(t, events)
}

func expectNone(t *testing.T, events <-chan string) {
	t.Helper()
	select {
	case name := <-events:
		t.Fatalf("got event %q, want none", name)
	case <-time.After(quiet):
	}
}

func TestEvents(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string // present before the watcher starts
		act   func(t *testing.T, dir string)
		want  []string
	}{
		{
			name: "new folder",
			act: func(t *testing.T, dir string) {
				write(t, filepath.Join(dir, "hello/handler.py"), "print(1)")
				write(t, filepath.Join(dir, "hello/lib/util.py"), "X = 1")
			},
			want: []string{"hello"},
		},
		{
			name:  "many writes",
			files: map[string]string{"hello/handler.py": ""},
			act: func(t *testing.T, dir string) {
				for i := range 50 {
					write(t, filepath.Join(dir, "hello/handler.py"), fmt.Sprintf("print(%d)", i))
				}
			},
			want: []string{"hello"},
		},
		{
			name:  "delete",
			files: map[string]string{"hello/handler.py": "", "hello/lib/x.py": ""},
			act: func(t *testing.T, dir string) {
				if err := os.RemoveAll(filepath.Join(dir, "hello")); err != nil {
					t.Fatal(err)
				}
			},
			want: []string{"hello"},
		},
		{
			name:  "delete one file",
			files: map[string]string{"hello/handler.py": "", "hello/README": ""},
			act: func(t *testing.T, dir string) {
				if err := os.Remove(filepath.Join(dir, "hello/README")); err != nil {
					t.Fatal(err)
				}
			},
			want: []string{"hello"},
		},
		{
			name: "cp -r",
			act: func(t *testing.T, dir string) {
				src := t.TempDir()
				write(t, filepath.Join(src, "handler.py"), "print(1)")
				write(t, filepath.Join(src, "lib/deep/util.py"), "X = 1")
				if out, err := exec.Command("cp", "-r", src, filepath.Join(dir, "copied")).CombinedOutput(); err != nil {
					t.Fatalf("cp -r: %v\n%s", err, out)
				}
			},
			want: []string{"copied"},
		},
		{
			name: "mv into place",
			act: func(t *testing.T, dir string) {
				staging := filepath.Join(dir, ".staging")
				write(t, filepath.Join(staging, "fn/handler.py"), "print(1)")
				write(t, filepath.Join(staging, "fn/sub/deeper/data"), "x")
				if err := os.Rename(filepath.Join(staging, "fn"), filepath.Join(dir, "moved")); err != nil {
					t.Fatal(err)
				}
			},
			want: []string{"moved"},
		},
		{
			name:  "mv out",
			files: map[string]string{"hello/handler.py": ""},
			act: func(t *testing.T, dir string) {
				if err := os.Rename(filepath.Join(dir, "hello"), filepath.Join(dir, ".trash")); err != nil {
					t.Fatal(err)
				}
			},
			want: []string{"hello"},
		},
		{
			name:  "rename folder",
			files: map[string]string{"old/handler.py": ""},
			act: func(t *testing.T, dir string) {
				if err := os.Rename(filepath.Join(dir, "old"), filepath.Join(dir, "new")); err != nil {
					t.Fatal(err)
				}
			},
			want: []string{"old", "new"},
		},
		{
			name:  "editor temp file and rename",
			files: map[string]string{"hello/handler.py": "print(1)"},
			act: func(t *testing.T, dir string) {
				tmp := filepath.Join(dir, "hello/.handler.py.swp")
				write(t, tmp, "print(2)")
				if err := os.Rename(tmp, filepath.Join(dir, "hello/handler.py")); err != nil {
					t.Fatal(err)
				}
			},
			want: []string{"hello"},
		},
		{
			name:  "chmod",
			files: map[string]string{"hello/handler.sh": ""},
			act: func(t *testing.T, dir string) {
				if err := os.Chmod(filepath.Join(dir, "hello/handler.sh"), 0o755); err != nil {
					t.Fatal(err)
				}
			},
			want: []string{"hello"},
		},
		{
			name:  "two folders",
			files: map[string]string{"a/handler.py": "", "b/handler.py": ""},
			act: func(t *testing.T, dir string) {
				write(t, filepath.Join(dir, "a/handler.py"), "1")
				write(t, filepath.Join(dir, "b/handler.py"), "2")
				write(t, filepath.Join(dir, "a/handler.py"), "3")
			},
			want: []string{"a", "b"},
		},
		{
			name: "top-level file ignored",
			act: func(t *testing.T, dir string) {
				write(t, filepath.Join(dir, "README.md"), "hi")
				write(t, filepath.Join(dir, "README.md"), "hi again")
				if err := os.Remove(filepath.Join(dir, "README.md")); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "hidden folder ignored",
			act: func(t *testing.T, dir string) {
				write(t, filepath.Join(dir, ".git/objects/ab/cd"), "x")
				if err := os.RemoveAll(filepath.Join(dir, ".git")); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name:  "hidden file inside a folder counts",
			files: map[string]string{"hello/handler.py": ""},
			act: func(t *testing.T, dir string) {
				write(t, filepath.Join(dir, "hello/.env"), "A=1")
			},
			want: []string{"hello"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir, events := start(t, tt.files)
			tt.act(t, dir)
			expect(t, events, tt.want...)
		})
	}
}

// TestNestedFolderCreatedLater checks that folders appearing below a
// function folder are watched too.
func TestNestedFolderCreatedLater(t *testing.T) {
	dir, events := start(t, map[string]string{"hello/handler.py": ""})
	if err := os.MkdirAll(filepath.Join(dir, "hello/a/b/c"), 0o755); err != nil {
		t.Fatal(err)
	}
	expect(t, events, "hello")
	write(t, filepath.Join(dir, "hello/a/b/c/file"), "x")
	expect(t, events, "hello")
}

// TestMovedInFolderIsWatched checks a folder moved into place has watches
// on its existing subfolders.
func TestMovedInFolderIsWatched(t *testing.T) {
	dir, events := start(t, nil)
	staging := t.TempDir()
	write(t, filepath.Join(staging, "fn/sub/deeper/data"), "x")
	if err := os.Rename(filepath.Join(staging, "fn"), filepath.Join(dir, "fn")); err != nil {
		t.Fatal(err)
	}
	expect(t, events, "fn")
	write(t, filepath.Join(dir, "fn/sub/deeper/data"), "y")
	expect(t, events, "fn")
}

// TestMovedOutFolderIsForgotten checks a folder renamed away no longer
// reports under its old name.
func TestMovedOutFolderIsForgotten(t *testing.T) {
	dir, events := start(t, map[string]string{"hello/sub/file": ""})
	away := filepath.Join(t.TempDir(), "away")
	if err := os.Rename(filepath.Join(dir, "hello"), away); err != nil {
		t.Fatal(err)
	}
	expect(t, events, "hello")
	write(t, filepath.Join(away, "sub/file"), "changed")
	write(t, filepath.Join(away, "new"), "x")
	expectNone(t, events)
}

func TestFolderReplacedByCopy(t *testing.T) {
	// What cp -r over an existing folder, or git checkout, does: files
	// deleted, rewritten and created in quick succession.
	dir, events := start(t, map[string]string{"hello/handler.py": "1", "hello/old.py": ""})
	if err := os.Remove(filepath.Join(dir, "hello/old.py")); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "hello/handler.py"), "2")
	write(t, filepath.Join(dir, "hello/new/mod.py"), "")
	if err := os.RemoveAll(filepath.Join(dir, "hello")); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "hello/handler.py"), "3")
	expect(t, events, "hello")
	write(t, filepath.Join(dir, "hello/handler.py"), "4")
	expect(t, events, "hello")
}

func TestOverflowReportsEveryFolder(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"a", "b", "gone"} {
		write(t, filepath.Join(dir, n, "handler.py"), "")
	}
	write(t, filepath.Join(dir, "file.txt"), "")
	w, err := New(dir, debounce, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { w.Close() })
	// Changes whose events are "lost": the watcher's loop is not running.
	if err := os.RemoveAll(filepath.Join(dir, "gone")); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "c/sub/handler.py"), "")
	got := w.overflow()
	if want := []string{"a", "b", "c", "gone"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	// c's subfolder is now watched.
	found := false
	for _, p := range w.fsw.WatchList() {
		if p == filepath.Join(dir, "c", "sub") {
			found = true
		}
	}
	if !found {
		t.Errorf("got watches %q, want one on c/sub", w.fsw.WatchList())
	}
}

func TestScan(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "b/handler.py"), "")
	write(t, filepath.Join(dir, "a/x"), "")
	write(t, filepath.Join(dir, "Bad_Name/x"), "")
	write(t, filepath.Join(dir, ".hidden/x"), "")
	write(t, filepath.Join(dir, "file.txt"), "")
	if err := os.Symlink("a", filepath.Join(dir, "link-to-dir")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("file.txt", filepath.Join(dir, "link-to-file")); err != nil {
		t.Fatal(err)
	}
	got, err := Scan(dir)
	if err != nil {
		t.Fatalf("Scan: %v", err)
	}
	if want := []string{"Bad_Name", "a", "b", "link-to-dir"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if _, err := Scan(filepath.Join(dir, "nope")); err == nil {
		t.Error("Scan of a missing dir: got no error, want one")
	}
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "file"), "")
	tests := []struct {
		name     string
		dir      string
		debounce time.Duration
		want     string
	}{
		{"missing", filepath.Join(dir, "nope"), debounce, "does not exist: create it"},
		{"a file", filepath.Join(dir, "file"), debounce, "is not a directory"},
		{"negative debounce", dir, -time.Second, "debounce -1s is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.dir, tt.debounce, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestRun(t *testing.T) {
	t.Run("stops with its context and closes the channel", func(t *testing.T) {
		w, err := New(t.TempDir(), debounce, nil)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: got %v, want nil", err)
			}
		case <-time.After(eventTimeout):
			t.Fatal("Run did not return after cancel")
		}
		if _, ok := <-w.Events(); ok {
			t.Error("Events still open after Run returned")
		}
		if err := w.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "Run called twice") {
			t.Errorf("second Run: got %v, want an error", err)
		}
	})
	t.Run("fails when the directory goes away", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "functions")
		write(t, filepath.Join(dir, "hello/handler.py"), "")
		w, err := New(dir, debounce, nil)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		done := make(chan error, 1)
		go func() { done <- w.Run(context.Background()) }()
		go func() {
			for range w.Events() { // drain: the folder's own event may come first
			}
		}()
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "was removed or renamed") {
				t.Errorf("Run: got %v, want the directory's removal", err)
			}
		case <-time.After(eventTimeout):
			t.Fatal("Run did not return after its directory was removed")
		}
	})
}

func TestDebounceWaitsForQuiet(t *testing.T) {
	const debounce = 600 * time.Millisecond // writes come every 20ms: far apart from it
	dir, events := startWith(t, debounce, map[string]string{"hello/handler.py": ""})
	// Keep writing for several debounce intervals; no event may come
	// before the writes stop.
	stop := time.Now().Add(3 * debounce)
	for time.Now().Before(stop) {
		write(t, filepath.Join(dir, "hello/handler.py"), time.Now().String())
		select {
		case name := <-events:
			t.Fatalf("got event %q while writes were still going on", name)
		case <-time.After(20 * time.Millisecond):
		}
	}
	expect(t, events, "hello")
}

func TestGitCheckout(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	dir := t.TempDir()
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "init.defaultBranch=main"}, args...)...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	git("init", "-q")
	write(t, filepath.Join(dir, "hello/handler.py"), "print(1)")
	write(t, filepath.Join(dir, "stable/handler.py"), "print(0)")
	git("add", ".")
	git("commit", "-q", "-m", "one")
	git("checkout", "-q", "-b", "two")
	write(t, filepath.Join(dir, "hello/handler.py"), "print(2)")
	write(t, filepath.Join(dir, "world/lib/handler.py"), "print(3)")
	git("add", ".")
	git("commit", "-q", "-m", "two")
	git("checkout", "-q", "main")

	w, err := New(dir, debounce, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	git("checkout", "-q", "two")
	expect(t, w.Events(), "hello", "world")
	git("checkout", "-q", "main")
	expect(t, w.Events(), "hello", "world")
}
