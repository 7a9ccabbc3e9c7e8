package logs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func entry(i int, inst string) Entry {
	return Entry{Time: time.Unix(1000+int64(i), 0).UTC(), Instance: inst, Stream: "stderr", RequestID: fmt.Sprint("r", i), Line: fmt.Sprint("line ", i)}
}

func TestReadQueries(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		inst := "vm-a"
		if i%2 == 1 {
			inst = "vm-b"
		}
		if err := s.Append("fn", entry(i, inst)); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name  string
		q     Query
		first string
		n     int
	}{
		{name: "all", q: Query{}, first: "line 0", n: 10},
		{name: "lines", q: Query{Lines: 3}, first: "line 7", n: 3},
		{name: "since", q: Query{Since: time.Unix(1006, 0)}, first: "line 6", n: 4},
		{name: "instance", q: Query{Instance: "vm-b"}, first: "line 1", n: 5},
		{name: "instance and lines", q: Query{Instance: "vm-a", Lines: 2}, first: "line 6", n: 2},
		{name: "nothing", q: Query{Instance: "vm-z"}, n: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Read("fn", tt.q)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tt.n || (tt.n > 0 && got[0].Line != tt.first) {
				t.Errorf("got %d entries %+v, want %d from %q", len(got), got, tt.n, tt.first)
			}
		})
	}
	if got, err := s.Read("other", Query{}); err != nil || len(got) != 0 {
		t.Errorf("a function with no logs: got %v, %v; want none", got, err)
	}
}

func TestBadNames(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"", "..", "../x", "a/b", "A", "-x", strings.Repeat("a", 64)} {
		if err := s.Append(name, entry(1, "v")); !errors.Is(err, ErrBadName) {
			t.Errorf("Append(%q): got %v, want ErrBadName", name, err)
		}
		if _, err := s.Read(name, Query{}); !errors.Is(err, ErrBadName) {
			t.Errorf("Read(%q): got %v, want ErrBadName", name, err)
		}
	}
}

// TestRotationBoundsDiskAndSurvivesReopen: a chatty function never holds
// more than MaxBytes (plus one line) on disk, keeps its newest lines, and a
// new store on the same directory (an appliance restart) reads them.
func TestRotationBoundsDiskAndSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	const maxBytes = 64 << 10
	s, err := Open(dir, Options{MaxBytes: maxBytes, Files: 4})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5000 {
		if err := s.Append("chatty", entry(i, "vm")); err != nil {
			t.Fatal(err)
		}
	}
	var total int64
	files, _ := filepath.Glob(filepath.Join(dir, "chatty", "*"))
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		total += st.Size()
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, st.Mode().Perm())
		}
	}
	if len(files) != 4 || total > maxBytes+200 {
		t.Errorf("%d files, %d bytes on disk, want 4 files and at most ~%d bytes", len(files), total, maxBytes)
	}
	s.Close()
	s2, err := Open(dir, Options{MaxBytes: maxBytes, Files: 4})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s2.Read("chatty", Query{Lines: 1})
	if err != nil || len(got) != 1 || got[0].Line != "line 4999" {
		t.Fatalf("after reopen: got %+v, %v; want the newest line", got, err)
	}
	if err := s2.Append("chatty", entry(5000, "vm")); err != nil {
		t.Fatal(err)
	}
	if got, _ := s2.Read("chatty", Query{Lines: 2}); len(got) != 2 || got[0].Line != "line 4999" || got[1].Line != "line 5000" {
		t.Errorf("append after reopen: got %+v", got)
	}
}

func TestFollow(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Append("fn", entry(0, "vm-a"), entry(1, "vm-b"))
	backlog, w, err := s.Follow("fn", Query{Instance: "vm-a"})
	if err != nil {
		t.Fatal(err)
	}
	if len(backlog) != 1 || backlog[0].Line != "line 0" {
		t.Errorf("backlog %+v, want line 0 only", backlog)
	}
	_ = s.Append("fn", entry(2, "vm-b"), entry(3, "vm-a"))
	select {
	case got := <-w.C:
		if len(got) != 1 || got[0].Line != "line 3" {
			t.Errorf("followed %+v, want line 3 only (vm-a's)", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no entry followed")
	}
	w.Close()
	if _, ok := <-w.C; ok {
		t.Error("C still open after Close")
	}
	_ = s.Append("fn", entry(4, "vm-a")) // no follower left: must not block or panic
	// A follower that never reads is cut off, not waited for.
	_, slow, _ := s.Follow("fn", Query{})
	for i := range 1000 {
		_ = s.Append("fn", entry(i, "vm-a"))
	}
	if !slow.Lagged() {
		t.Error("a reader that never reads was not cut off")
	}
}

// A line torn by a crash does not swallow the next entry written after a
// restart: the torn line is skipped, the new one reads back.
func TestTornLineAfterCrash(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Append("fn", entry(1, "vm")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	f, err := os.OpenFile(filepath.Join(dir, "fn", "current.log"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`{"time":"2026-12-02T20:00:00Z","line":"torn by the cra`); err != nil {
		t.Fatal(err)
	}
	f.Close()
	s2, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if err := s2.Append("fn", entry(2, "vm")); err != nil {
		t.Fatal(err)
	}
	got, err := s2.Read("fn", Query{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Line != "line 1" || got[1].Line != "line 2" {
		t.Errorf("entries after a torn line: got %+v, want lines 1 and 2", got)
	}
}
