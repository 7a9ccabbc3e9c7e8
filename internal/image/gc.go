package image

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Garbage collection: the cache keeps one file per code edit, per runtime
// or image build and per dependency set; without collection the state disk
// fills up over months. Collect removes every entry nobody refers to.
//
// What stays:
//   - the paths the caller names (the controller names the disks of every
//     VM it runs or drains, of the serving version and of the previous
//     versions it keeps for rollback, and whatever its hooks add, such as
//     the disks snapshots were made from);
//   - the root filesystem each shipped runtime was last built into (the
//     base of every future deploy; runtime-<name>.id names it);
//   - entries handed out or made within the grace period (a deploy in
//     progress holds a path the controller does not know yet);
//   - files some process has open (a VM's QEMU), whatever the caller said.
//
// Only the cache's own entry directories are looked at; anything else in
// the state directory (snapshots, logs, uploads) belongs to someone else.

// DefaultGCGrace is how long an entry handed out or made stays at least:
// it covers the moment between a deploy getting its disks and the
// controller recording them (the controller collects again once it is
// over, see its gcLoop).
const DefaultGCGrace = 15 * time.Second

// gcDirs are the entry directories collection looks at.
var gcDirs = []string{"code", "rootfs", "deps", "initramfs"}

// GCResult is what one collection did.
type GCResult struct {
	At      time.Time
	Removed []string // paths removed
	Freed   int64    // bytes they held
	Kept    int      // entries kept
	Busy    []string // unreferenced entries kept because a process has them open
}

// used records that path was handed out now; the key lock of path is held.
// Other processes sharing the cache see it too: the sidecar's modification
// time is the entry's last use (the entry's own must stay as sealed).
func (c *Cache) used(path string) {
	now := time.Now()
	c.mu.Lock()
	c.lastUse[path] = now
	c.mu.Unlock()
	_ = os.Chtimes(path+metaSuffix, now, now)
}

// lastUsed is when path was last handed out (zero: not by this process).
func (c *Cache) lastUsed(path string) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastUse[path]
}

// LastGC is the result of the last collection (zero before the first).
func (c *Cache) LastGC() GCResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastGC
}

// Collect removes the cache entries that are not in referenced (absolute
// paths; others are ignored) and that none of the rules above keeps. It
// goes on after a file it cannot remove and returns the errors joined.
func (c *Cache) Collect(ctx context.Context, referenced []string) error {
	start := time.Now()
	if other := c.otherUser(); other != "" {
		// What another process holds for its next boot is not in
		// referenced: collect only when this process is the only user.
		c.log.Info("image cache shared with another running process: collection skipped", "step", "gc", "user", other)
		return nil
	}
	keep := map[string]bool{}
	for _, p := range referenced {
		if p != "" && filepath.IsAbs(p) {
			keep[filepath.Clean(p)] = true
		}
	}
	for _, p := range c.runtimeRootFSes() {
		keep[p] = true
	}
	open := openFiles(c.dir)
	res := GCResult{At: start}
	var errs []error
	for _, sub := range gcDirs {
		dir := filepath.Join(c.dir, sub)
		entries, err := os.ReadDir(dir)
		if err != nil {
			errs = append(errs, fmt.Errorf("collecting %s: %w", dir, err))
			continue
		}
		for _, e := range entries {
			if err := ctx.Err(); err != nil {
				return errors.Join(append(errs, err)...)
			}
			name := e.Name()
			p := filepath.Join(dir, name)
			if strings.HasSuffix(name, metaSuffix) {
				// A sidecar whose entry is gone (a crash between the two
				// removals) goes too.
				if _, err := os.Lstat(strings.TrimSuffix(p, metaSuffix)); errors.Is(err, fs.ErrNotExist) {
					_ = os.Remove(p)
				}
				continue
			}
			if !isEntryName(sub, name) {
				continue // runtime records, foreign files: not ours to judge
			}
			switch {
			case keep[p]:
				res.Kept++
				continue
			case open[p]:
				res.Busy = append(res.Busy, p)
				res.Kept++
				continue
			}
			freed, removed, err := c.collectOne(p, start)
			if err != nil {
				errs = append(errs, err)
				res.Kept++
				continue
			}
			if !removed {
				res.Kept++
				continue
			}
			res.Removed = append(res.Removed, p)
			res.Freed += freed
		}
	}
	c.mu.Lock()
	c.lastGC = res
	c.mu.Unlock()
	if len(res.Removed) > 0 || len(res.Busy) > 0 {
		c.log.Info("image cache collected", "step", "gc", "removed", len(res.Removed), "freed_bytes", res.Freed,
			"kept", res.Kept, "busy", len(res.Busy), "elapsed", time.Since(start).Round(time.Millisecond))
	} else {
		c.log.Debug("image cache collected: nothing to remove", "step", "gc", "kept", res.Kept)
	}
	for _, b := range res.Busy {
		c.log.Warn("unreferenced cache entry is still open by a process: kept", "step", "gc", "path", b)
	}
	return errors.Join(errs...)
}

// register creates and locks this cache's file in <cache>/users; the lock
// goes with the process.
func (c *Cache) register() error {
	f, err := os.CreateTemp(filepath.Join(c.dir, "users"), fmt.Sprintf("%d-*.lock", os.Getpid()))
	if err != nil {
		return fmt.Errorf("image cache: registering its user: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("image cache: locking %s: %w", f.Name(), err)
	}
	c.user = f
	return nil
}

// otherUser names another live user of the cache ("" when none); the files
// of users that died (their lock free) are removed.
func (c *Cache) otherUser() string {
	dir := filepath.Join(c.dir, "users")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return dir + ": " + err.Error()
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if c.user != nil && p == c.user.Name() {
			continue
		}
		f, err := os.Open(p)
		if err != nil {
			continue // gone meanwhile
		}
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err != nil {
			f.Close()
			return e.Name()
		}
		os.Remove(p) // its process is gone
		f.Close()
	}
	return ""
}

// collectOne removes the entry p unless it was handed out or made within
// the grace period; it holds p's key lock, so no maker hands p out while it
// goes.
func (c *Cache) collectOne(p string, now time.Time) (int64, bool, error) {
	defer c.lock(p)()
	if now.Sub(c.lastUsed(p)) < c.gcGrace {
		return 0, false, nil
	}
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("collecting %s: %w", p, err)
	}
	if now.Sub(fi.ModTime()) < c.gcGrace {
		return 0, false, nil
	}
	if mi, err := os.Stat(p + metaSuffix); err == nil && now.Sub(mi.ModTime()) < c.gcGrace {
		return 0, false, nil // handed out recently, maybe by another process
	}
	if err := os.Remove(p); err != nil {
		return 0, false, fmt.Errorf("collecting %s: %w", p, err)
	}
	_ = os.Remove(p + metaSuffix)
	c.mu.Lock()
	delete(c.lastUse, p)
	delete(c.verifiedAt, p)
	c.mu.Unlock()
	c.log.Debug("removed unreferenced cache entry", "step", "gc", "path", p, "bytes", fi.Size())
	return fi.Size(), true, nil
}

// isEntryName reports whether name is an entry the cache makes in sub.
func isEntryName(sub, name string) bool {
	var stem string
	switch sub {
	case "initramfs":
		stem = strings.TrimSuffix(name, ".cpio")
	default:
		stem = strings.TrimSuffix(name, ".ext4")
	}
	if stem == name || len(stem) != 64 {
		return false
	}
	for _, r := range stem {
		if !strings.ContainsRune("0123456789abcdef", r) {
			return false
		}
	}
	return true
}

// runtimeRootFSes are the root filesystems the runtime records name.
func (c *Cache) runtimeRootFSes() []string {
	dir := filepath.Join(c.dir, "rootfs")
	records, _ := filepath.Glob(filepath.Join(dir, "runtime-*.id"))
	var out []string
	for _, r := range records {
		b, err := os.ReadFile(r)
		if err != nil {
			continue
		}
		if m := imageIDHex.FindStringSubmatch(strings.TrimSpace(string(b))); m != nil {
			out = append(out, filepath.Join(dir, m[2]+".ext4"))
		}
	}
	return out
}

// openFiles is the set of files under dir that some process has open, read
// from /proc/<pid>/fd (the processes this one may look at: its own, its
// children QEMUs', all of them when it runs as root). Empty when /proc
// cannot be read.
func openFiles(dir string) map[string]bool {
	out := map[string]bool{}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	prefix := filepath.Clean(dir) + string(filepath.Separator)
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		fdDir := filepath.Join("/proc", p.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			target, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil || !strings.HasPrefix(target, prefix) {
				continue
			}
			out[strings.TrimSuffix(target, " (deleted)")] = true
		}
	}
	return out
}
