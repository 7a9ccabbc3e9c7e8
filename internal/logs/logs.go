// Package logs keeps each function's own output (what its handler
// processes write, as the guest agent streams it), apart from the VM
// console: one directory per function under the store's directory, JSON
// lines in current.log, rotated by size to current.log.1 … .N, so a
// function's logs are bounded on disk and survive VM replacement and
// appliance restarts. Followers get new lines as they are appended.
package logs

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// Entry is one stored line.
type Entry struct {
	Time      time.Time `json:"time"`
	Instance  string    `json:"instance"`
	Stream    string    `json:"stream"`
	RequestID string    `json:"requestId,omitempty"`
	Line      string    `json:"line"`
}

// Query selects entries. Zero fields select everything.
type Query struct {
	Since    time.Time // entries at or after
	Instance string    // only this instance's
	Lines    int       // only the last Lines of the selection (0: all)
}

func (q Query) match(e *Entry) bool {
	return (q.Since.IsZero() || !e.Time.Before(q.Since)) && (q.Instance == "" || e.Instance == q.Instance)
}

// Defaults of Options.
const (
	DefaultMaxBytes = 8 << 20
	DefaultFiles    = 4
	// maxLine bounds one stored line's text; the agent splits longer ones.
	maxLine = 16 << 10
)

// ErrBadName is returned for a function name that cannot be a directory.
var ErrBadName = errors.New("not a valid function name")

// Options bound the store.
type Options struct {
	// MaxBytes bounds one function's logs on disk, all files together
	// (default 8 MiB).
	MaxBytes int64
	// Files is how many files share MaxBytes (default 4): the current one
	// and Files-1 rotated ones.
	Files int
}

// Store keeps every function's logs under one directory. It is safe for
// concurrent use.
type Store struct {
	dir      string
	fileMax  int64
	files    int
	mu       sync.Mutex
	open     map[string]*logFile
	watchers map[string]map[*Follower]struct{}
}

type logFile struct {
	f    *os.File
	size int64
}

// Open makes (or reopens) a store in dir.
func Open(dir string, opts Options) (*Store, error) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.Files < 2 {
		opts.Files = DefaultFiles
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating function log directory: %w", err)
	}
	return &Store{
		dir: dir, fileMax: max(opts.MaxBytes/int64(opts.Files), 4096), files: opts.Files,
		open: map[string]*logFile{}, watchers: map[string]map[*Follower]struct{}{},
	}, nil
}

// validName accepts the function-name alphabet only: the name becomes a
// directory name.
func validName(name string) bool {
	if name == "" || len(name) > 63 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return name[0] != '-'
}

func (s *Store) path(function string, n int) string {
	p := filepath.Join(s.dir, function, "current.log")
	if n > 0 {
		p += "." + strconv.Itoa(n)
	}
	return p
}

// Append stores entries of function and hands them to its followers.
func (s *Store) Append(function string, entries ...Entry) error {
	if !validName(function) {
		return fmt.Errorf("appending logs of %q: %w", function, ErrBadName)
	}
	var buf bytes.Buffer
	for i := range entries {
		if len(entries[i].Line) > maxLine {
			entries[i].Line = entries[i].Line[:maxLine]
		}
		b, err := json.Marshal(&entries[i])
		if err != nil {
			return fmt.Errorf("encoding a log entry: %w", err)
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	lf, err := s.file(function)
	if err != nil {
		return err
	}
	if lf.size > 0 && lf.size+int64(buf.Len()) > s.fileMax {
		if err := s.rotate(function, lf); err != nil {
			return err
		}
		if lf, err = s.file(function); err != nil {
			return err
		}
	}
	n, err := lf.f.Write(buf.Bytes())
	lf.size += int64(n)
	if err != nil {
		return fmt.Errorf("writing logs of %s: %w", function, err)
	}
	for w := range s.watchers[function] {
		w.push(entries)
	}
	return nil
}

// file returns function's open current file; s.mu is held.
func (s *Store) file(function string) (*logFile, error) {
	if lf := s.open[function]; lf != nil {
		return lf, nil
	}
	if err := os.MkdirAll(filepath.Join(s.dir, function), 0o700); err != nil {
		return nil, fmt.Errorf("creating log directory of %s: %w", function, err)
	}
	f, err := os.OpenFile(s.path(function, 0), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening logs of %s: %w", function, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening logs of %s: %w", function, err)
	}
	lf := &logFile{f: f, size: st.Size()}
	if err := lf.endLine(s.path(function, 0)); err != nil {
		f.Close()
		return nil, fmt.Errorf("opening logs of %s: %w", function, err)
	}
	s.open[function] = lf
	return lf, nil
}

// endLine ends a line torn by a crash (a write cut short at power loss or
// on a full disk): without it the next entry would be glued to the torn
// one and both lost to a reader. The torn line stays unreadable, and is
// skipped as such.
func (lf *logFile) endLine(path string) error {
	if lf.size == 0 {
		return nil
	}
	r, err := os.Open(path)
	if err != nil {
		return err
	}
	defer r.Close()
	last := make([]byte, 1)
	if _, err := r.ReadAt(last, lf.size-1); err != nil {
		return err
	}
	if last[0] == '\n' {
		return nil
	}
	n, err := lf.f.Write([]byte{'\n'})
	lf.size += int64(n)
	return err
}

// rotate shifts current.log to .1, .1 to .2 …, dropping the oldest; s.mu
// is held.
func (s *Store) rotate(function string, lf *logFile) error {
	_ = lf.f.Close() // written with O_APPEND and no buffer: nothing is lost
	delete(s.open, function)
	for n := s.files - 1; n >= 1; n-- {
		err := os.Rename(s.path(function, n-1), s.path(function, n))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rotating logs of %s: %w", function, err)
		}
	}
	return nil
}

// Read returns function's entries that q selects, oldest first. A
// function with no logs has none; an unreadable line is skipped.
func (s *Store) Read(function string, q Query) ([]Entry, error) {
	if !validName(function) {
		return nil, fmt.Errorf("reading logs of %q: %w", function, ErrBadName)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.read(function, q)
}

// read is Read with s.mu held.
func (s *Store) read(function string, q Query) ([]Entry, error) {
	var out []Entry
	for n := s.files - 1; n >= 0; n-- {
		f, err := os.Open(s.path(function, n))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading logs of %s: %w", function, err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 4*maxLine)
		for sc.Scan() {
			var e Entry
			if json.Unmarshal(sc.Bytes(), &e) != nil || !q.match(&e) {
				continue
			}
			out = append(out, e)
			if q.Lines > 0 && len(out) > 2*q.Lines {
				out = append(out[:0], out[len(out)-q.Lines:]...)
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("reading logs of %s: %w", function, err)
		}
	}
	if q.Lines > 0 && len(out) > q.Lines {
		out = out[len(out)-q.Lines:]
	}
	return out, nil
}

// Follower receives a function's new entries. C is closed when the
// follower falls too far behind (it missed lines) or is closed.
type Follower struct {
	C       <-chan []Entry
	c       chan []Entry
	q       Query
	s       *Store
	fn      string
	dropped bool
}

// push hands entries to the follower without blocking; s.mu is held.
func (w *Follower) push(entries []Entry) {
	var sel []Entry
	for i := range entries {
		if w.q.Instance == "" || entries[i].Instance == w.q.Instance {
			sel = append(sel, entries[i])
		}
	}
	if len(sel) == 0 {
		return
	}
	select {
	case w.c <- sel:
	default:
		// Too slow a reader: end its stream rather than hold the store.
		w.dropped = true
		w.detach()
	}
}

// detach removes w from the store and closes C; s.mu is held.
func (w *Follower) detach() {
	if m := w.s.watchers[w.fn]; m != nil {
		if _, ok := m[w]; ok {
			delete(m, w)
			close(w.c)
			if len(m) == 0 {
				delete(w.s.watchers, w.fn)
			}
		}
	}
}

// Close stops the follower.
func (w *Follower) Close() {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	w.detach()
}

// Lagged reports whether C was closed because the reader fell behind.
func (w *Follower) Lagged() bool {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	return w.dropped
}

// Follow returns the entries q selects now and a Follower that gets every
// later one (Since and Lines apply to the first part only), with no gap
// and no repeat between the two. Close the follower when done.
func (s *Store) Follow(function string, q Query) ([]Entry, *Follower, error) {
	if !validName(function) {
		return nil, nil, fmt.Errorf("following logs of %q: %w", function, ErrBadName)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	backlog, err := s.read(function, q)
	if err != nil {
		return nil, nil, err
	}
	c := make(chan []Entry, 256)
	w := &Follower{C: c, c: c, q: Query{Instance: q.Instance}, s: s, fn: function}
	if s.watchers[function] == nil {
		s.watchers[function] = map[*Follower]struct{}{}
	}
	s.watchers[function][w] = struct{}{}
	return backlog, w, nil
}

// Close closes the open files and ends every follower.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for fn, lf := range s.open {
		errs = append(errs, lf.f.Close())
		delete(s.open, fn)
	}
	for _, m := range s.watchers {
		for w := range m {
			w.detach()
		}
	}
	return errors.Join(errs...)
}
