// Package watch reports which function folders of the functions directory
// changed, one debounced event per folder name.
//
// Everything below a top-level folder is watched (fsnotify is not
// recursive, so a watch is added for every subfolder, also for those that
// appear later). Any change below a folder (a file created, written,
// chmod-ed, deleted or renamed, a subfolder added or removed) and the
// folder itself appearing, disappearing or being renamed in or out yields
// its name once the folder has been quiet for the debounce interval. That
// covers cp -r, mv into place, git checkout and editors that write a temp
// file and rename it over the original.
//
// Top-level files and hidden names (see function.IsCandidate) are ignored.
// The event carries only the name: the consumer reloads the folder and
// finds out whether it still exists. When the kernel's event queue
// overflows, every folder gets an event, so nothing is missed.
package watch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/faasvm/appliance/internal/function"
)

// Watcher watches one functions directory.
type Watcher struct {
	dir      string
	debounce time.Duration
	log      *slog.Logger
	fsw      *fsnotify.Watcher
	events   chan string
	started  atomic.Bool
	// known holds the top-level candidate folders seen so far. Only New
	// and then Run's goroutine touch it.
	known map[string]bool
}

// New watches dir, which must exist. Watches are in place when New
// returns, so a Scan made after New and the events Run delivers later
// miss nothing between them. A nil logger discards logs.
func New(dir string, debounce time.Duration, logger *slog.Logger) (*Watcher, error) {
	if debounce < 0 {
		return nil, fmt.Errorf("watching %s: debounce %s is negative", dir, debounce)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("functions directory %s does not exist: create it or configure another one: %w", dir, err)
	case err != nil:
		return nil, fmt.Errorf("watching %s: %w", dir, err)
	case !fi.IsDir():
		return nil, fmt.Errorf("functions directory %s is not a directory", dir)
	}
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watching %s: %w", dir, err)
	}
	w := &Watcher{
		dir:      filepath.Clean(dir),
		debounce: debounce,
		log:      logger.With("component", "watch", "dir", dir),
		fsw:      fsw,
		events:   make(chan string),
		known:    map[string]bool{},
	}
	if err := fsw.Add(w.dir); err != nil {
		fsw.Close()
		return nil, fmt.Errorf("watching %s: %w", dir, err)
	}
	names, err := Scan(w.dir)
	if err != nil {
		fsw.Close()
		return nil, err
	}
	for _, name := range names {
		w.known[name] = true
		w.addTree(filepath.Join(w.dir, name))
	}
	return w, nil
}

// Events delivers the name of each top-level folder whose contents
// changed, after debounce of quiet. It is closed when Run returns.
func (w *Watcher) Events() <-chan string { return w.events }

// Close releases the watches. Only needed when Run is never called; Run
// releases them itself when it returns.
func (w *Watcher) Close() error { return w.fsw.Close() }

// Run delivers events until ctx is done (then it returns nil) or the
// functions directory itself is removed or renamed (an error). It may be
// called once.
func (w *Watcher) Run(ctx context.Context) error {
	if !w.started.CompareAndSwap(false, true) {
		return errors.New("watch: Run called twice")
	}
	defer close(w.events)
	defer w.fsw.Close()

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	pending := map[string]time.Time{} // name → when its quiet period ends
	var ready []string                // quiet names not yet delivered, in order

	touch := func(names []string) {
		now := time.Now()
		for _, n := range names {
			pending[n] = now.Add(w.debounce)
			// Not delivered yet and changing again: wait for the new quiet
			// period instead of delivering twice.
			ready = slices.DeleteFunc(ready, func(r string) bool { return r == n })
		}
		w.arm(timer, pending)
	}
	for {
		var out chan string
		var next string
		if len(ready) > 0 {
			out, next = w.events, ready[0]
		}
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.fsw.Events:
			if !ok {
				return errors.New("watch: fsnotify closed its event channel")
			}
			names, err := w.handle(ev)
			if err != nil {
				return err
			}
			touch(names)
		case err, ok := <-w.fsw.Errors:
			if !ok {
				return errors.New("watch: fsnotify closed its error channel")
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				names := w.overflow()
				w.log.Warn("file events were lost; reloading every function", "step", "overflow", "functions", len(names))
				touch(names)
				continue
			}
			w.log.Warn("file watch error", "step", "watch", "err", err)
		case now := <-timer.C:
			var due []string
			for n, at := range pending {
				if !at.After(now) {
					due = append(due, n)
					delete(pending, n)
				}
			}
			slices.Sort(due)
			ready = append(ready, due...)
			w.arm(timer, pending)
		case out <- next:
			ready = ready[1:]
			w.log.Debug("function folder changed", "function", next, "step", "event")
		}
	}
}

// arm sets timer to fire at the earliest pending deadline.
func (w *Watcher) arm(timer *time.Timer, pending map[string]time.Time) {
	var first time.Time
	for _, at := range pending {
		if first.IsZero() || at.Before(first) {
			first = at
		}
	}
	if first.IsZero() {
		timer.Stop()
		return
	}
	timer.Reset(time.Until(first))
}

// handle maps one fsnotify event to the folder names it concerns, keeping
// watches and the set of known folders up to date.
func (w *Watcher) handle(ev fsnotify.Event) ([]string, error) {
	rel, err := filepath.Rel(w.dir, ev.Name)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return nil, nil // not ours (cannot happen: every watch is below dir)
	}
	if rel == "." {
		if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
			return nil, fmt.Errorf("functions directory %s was removed or renamed", w.dir)
		}
		return nil, nil
	}
	top, _, nested := strings.Cut(rel, string(filepath.Separator))
	if !function.IsCandidate(top) {
		return nil, nil
	}
	topPath := filepath.Join(w.dir, top)

	if !nested {
		switch {
		case ev.Has(fsnotify.Create):
			if isFolder(topPath) {
				w.known[top] = true
				w.addTree(topPath)
				return []string{top}, nil
			}
			if w.known[top] { // a folder replaced by a file (or gone again)
				delete(w.known, top)
				return []string{top}, nil
			}
		case ev.Has(fsnotify.Remove), ev.Has(fsnotify.Rename):
			if ev.Has(fsnotify.Rename) {
				// A renamed folder keeps its watches under the old path;
				// fsnotify drops a removed folder's watch by itself.
				w.unwatch(ev.Name)
			}
			if w.known[top] {
				delete(w.known, top)
				return []string{top}, nil
			}
		}
		return nil, nil // a top-level file, or the folder's own metadata
	}

	if !w.known[top] {
		// Normally the folder's Create came first. Events from a folder
		// that was renamed away can still arrive under its old name.
		if !isFolder(topPath) {
			return nil, nil
		}
		w.known[top] = true
		w.addTree(topPath)
	}
	switch {
	case ev.Has(fsnotify.Create):
		if fi, err := os.Lstat(ev.Name); err == nil && fi.IsDir() {
			w.addTree(ev.Name)
		}
	case ev.Has(fsnotify.Rename):
		w.unwatch(ev.Name) // see above: only a rename leaves watches behind
	}
	return []string{top}, nil
}

// overflow recovers from lost events: it re-adds watches for every folder
// and returns every folder name, including those that vanished unseen.
func (w *Watcher) overflow() []string {
	names, err := Scan(w.dir)
	if err != nil {
		w.log.Warn("rescanning after lost events", "step", "overflow", "err", err)
	}
	now := map[string]bool{}
	for _, n := range names {
		now[n] = true
		if fi, err := os.Lstat(filepath.Join(w.dir, n)); err == nil && fi.IsDir() {
			w.addTree(filepath.Join(w.dir, n))
		}
	}
	for n := range w.known {
		if !now[n] {
			names = append(names, n)
			delete(w.known, n)
		}
	}
	for n := range now {
		w.known[n] = true
	}
	slices.Sort(names)
	return names
}

// addTree watches root and every folder below it. Symlinks are not
// followed. A folder that vanishes meanwhile is skipped; other failures
// (such as the inotify watch limit) are logged: that subtree's later
// changes go unseen until the folder changes elsewhere.
func (w *Watcher) addTree(root string) {
	fi, err := os.Lstat(root)
	if err != nil || !fi.IsDir() {
		return // a symlinked folder: Load refuses it, nothing to watch inside
	}
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				w.log.Warn("walking folder to watch it", "step", "watch", "path", p, "err", err)
			}
			return nil
		}
		if !d.IsDir() {
			return nil
		}
		if err := w.fsw.Add(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			w.log.Warn("cannot watch folder (raise fs.inotify.max_user_watches if the limit was reached)",
				"step", "watch", "path", p, "err", err)
		}
		return nil
	})
}

// unwatch drops the watches on p and below it (p was removed or renamed
// away; a renamed folder's watches would otherwise report under its old
// path).
func (w *Watcher) unwatch(p string) {
	prefix := p + string(filepath.Separator)
	for _, wp := range w.fsw.WatchList() {
		if wp == p || strings.HasPrefix(wp, prefix) {
			_ = w.fsw.Remove(wp) // already gone with the folder: fine
		}
	}
}

// isFolder reports whether p is a folder or a symlink to one.
func isFolder(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// Scan lists the candidate function folders of dir, sorted: entries that
// are folders (or symlinks to folders) and not hidden. Use it at start-up;
// Load reports the invalid ones.
func Scan(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("scanning functions directory: %w", err)
	}
	var names []string
	for _, e := range entries {
		if !function.IsCandidate(e.Name()) {
			continue
		}
		if e.IsDir() || (e.Type()&fs.ModeSymlink != 0 && isFolder(filepath.Join(dir, e.Name()))) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}
