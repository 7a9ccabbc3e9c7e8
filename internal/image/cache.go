// Package image makes the files a guest VM boots from: the kernel assets
// (validated), the initramfs holding the guest agent, the runtime root
// filesystems (Docker images exported to read-only ext4 images) and the
// function code snapshots (folders copied into read-only ext4 images).
//
// Everything made here lands in one cache directory, each file named by a
// digest of what it was made from, written atomically (temporary file, then
// rename) and left read-only, so any number of VMs and processes can share it.
//
//	<cache>/initramfs/<sha256>.cpio   uncompressed newc initramfs
//	<cache>/rootfs/<image ID>.ext4    runtime root filesystem, label protocol.RootFSLabel
//	<cache>/code/<digest>.ext4        function code snapshot, label protocol.CodeLabel
//	<cache>/tmp/                      work in progress
package image

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// DefaultCodeSizeLimit bounds the content of a function's code folder.
const DefaultCodeSizeLimit = 256 << 20

// CacheDir is where the appliance keeps its image cache inside its state
// directory.
func CacheDir(stateDir string) string {
	return filepath.Join(stateDir, "images")
}

// Config configures a Cache.
type Config struct {
	// Dir is the cache directory; it is created when missing.
	Dir string
	// Docker is the engine runtime images come from. Only RuntimeRootFS and
	// ImageRootFS need it.
	Docker Docker
	// Logger receives progress; slog.Default() when nil.
	Logger *slog.Logger
	// CodeSizeLimit bounds the bytes of a code folder, and of a folder's
	// installed dependencies; DefaultCodeSizeLimit when zero.
	CodeSizeLimit int64
	// Deps is how dependency installs run (see DepsDisk).
	Deps DepsConfig
	// GCGrace is how long Collect keeps an entry handed out or made
	// (DefaultGCGrace when zero).
	GCGrace time.Duration
}

// Validate reports the first problem with c.
func (c *Config) Validate() error {
	if c.Dir == "" {
		return errors.New("image cache: no directory")
	}
	if c.GCGrace < 0 {
		return fmt.Errorf("image cache: gc grace %s is negative", c.GCGrace)
	}
	if c.CodeSizeLimit < 0 {
		return fmt.Errorf("image cache: code size limit %d is negative", c.CodeSizeLimit)
	}
	return nil
}

// Cache makes and keeps the guest's boot files. It is safe for concurrent
// use; concurrent requests for the same file make it once.
type Cache struct {
	dir       string
	docker    Docker
	log       *slog.Logger
	codeLimit int64
	mkfs      *ext4Maker
	// depsDocker is docker when it can run installs (nil: no engine).
	depsDocker DepsDocker
	depsCfg    DepsConfig
	deps       depsCounters

	gcGrace time.Duration

	mu    sync.Mutex
	locks map[string]*keyLock
	// lastUse: when each entry was last handed out (gc.go).
	lastUse map[string]time.Time
	// verifiedAt: entries whose content was checked against their
	// sha256 by this process (integrity.go).
	verifiedAt map[string]time.Time
	lastGC     GCResult
	corrupt    int
	// user is this cache's file in <cache>/users, locked while it lives
	// (gc.go: no collection while another process uses the cache).
	user *os.File
}

type keyLock struct {
	mu   sync.Mutex
	refs int
}

// New returns a Cache in cfg.Dir, creating its directories.
func New(cfg Config) (*Cache, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Cache{
		dir:       cfg.Dir,
		docker:    cfg.Docker,
		log:       cfg.Logger,
		codeLimit: cfg.CodeSizeLimit,
		depsCfg:   cfg.Deps,
		locks:     map[string]*keyLock{},
		gcGrace:   cfg.GCGrace,

		lastUse:    map[string]time.Time{},
		verifiedAt: map[string]time.Time{},
	}
	if c.gcGrace == 0 {
		c.gcGrace = DefaultGCGrace
	}
	if d, ok := cfg.Docker.(DepsDocker); ok && cfg.Docker != nil {
		c.depsDocker = d
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	if c.codeLimit == 0 {
		c.codeLimit = DefaultCodeSizeLimit
	}
	for _, d := range []string{"initramfs", "rootfs", "code", "deps", "tmp", "users"} {
		if err := os.MkdirAll(filepath.Join(c.dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("creating image cache: %w", err)
		}
	}
	if err := c.register(); err != nil {
		return nil, err
	}
	c.sweepTmp(staleAfter)
	mkfs, err := newExt4Maker(c.log)
	if err != nil {
		return nil, err
	}
	c.mkfs = mkfs
	return c, nil
}

// staleAfter is the age after which work left in <cache>/tmp is taken for
// the leftovers of a process that died, not work in progress.
const staleAfter = 24 * time.Hour

// sweepTmp removes what processes that died left in <cache>/tmp. Other
// processes may be working there now, so only old entries go.
func (c *Cache) sweepTmp(age time.Duration) {
	dir := filepath.Join(c.dir, "tmp")
	entries, err := os.ReadDir(dir)
	if err != nil {
		c.log.Warn("sweeping image cache tmp", "dir", dir, "err", err)
		return
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || time.Since(info.ModTime()) < age {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if err := os.RemoveAll(p); err != nil {
			c.log.Warn("removing stale image cache work", "path", p, "err", err)
			continue
		}
		c.log.Info("removed stale image cache work", "path", p, "age", time.Since(info.ModTime()).Round(time.Minute))
	}
}

// Dir is the cache directory.
func (c *Cache) Dir() string { return c.dir }

// lock serialises the making of one cache entry within this process and
// returns the unlock function. Other processes may make the same entry at
// the same time; the atomic rename keeps that harmless.
func (c *Cache) lock(key string) func() {
	c.mu.Lock()
	l := c.locks[key]
	if l == nil {
		l = &keyLock{}
		c.locks[key] = l
	}
	l.refs++
	c.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		c.mu.Lock()
		l.refs--
		if l.refs == 0 {
			delete(c.locks, key)
		}
		c.mu.Unlock()
	}
}

// tempFile creates an empty file in the cache's tmp directory, on the same
// file system as the entries so a rename can publish it, and returns its path.
func (c *Cache) tempFile(pattern string) (string, error) {
	f, err := os.CreateTemp(filepath.Join(c.dir, "tmp"), pattern)
	if err != nil {
		return "", fmt.Errorf("creating temporary file: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("creating temporary file: %w", err)
	}
	return f.Name(), nil
}

// tempDir returns a fresh directory in the cache's tmp directory.
func (c *Cache) tempDir(pattern string) (string, error) {
	d, err := os.MkdirTemp(filepath.Join(c.dir, "tmp"), pattern)
	if err != nil {
		return "", fmt.Errorf("creating temporary directory: %w", err)
	}
	return d, nil
}

// publish makes tmp read-only, flushes it to the disk and renames it to
// final, then seals it (integrity.go) and records its use; final's key lock
// is held. A disk that fills up fails here or earlier, never leaving a
// partial entry under the final name.
func (c *Cache) publish(tmp, final string) error {
	if err := os.Chmod(tmp, 0o444); err != nil {
		return fmt.Errorf("publishing %s: %w", final, err)
	}
	if err := fsyncFile(tmp); err != nil {
		return fmt.Errorf("publishing %s: %w", final, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("publishing %s: %w", final, err)
	}
	syncDir(filepath.Dir(final))
	if err := c.sealEntry(final); err != nil {
		c.log.Warn("cache entry published without its sidecar: checked by structure only", "path", final, "err", err)
	}
	c.used(final)
	return nil
}

// fsyncFile flushes the file path to the disk.
func fsyncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// syncDir flushes the directory dir, so that a rename in it is durable
// (best effort).
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// writeFileAtomic writes the output of write to final through a temporary
// file, read-only once published.
func (c *Cache) writeFileAtomic(final string, write func(w io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Join(c.dir, "tmp"), filepath.Base(final)+".*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", final, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op once renamed
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", final, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", final, err)
	}
	return c.publish(tmp, final)
}

// exists reports whether path names a regular file.
func exists(path string) (bool, error) {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	case err != nil:
		return false, err
	case !fi.Mode().IsRegular():
		return false, fmt.Errorf("%s is not a regular file", path)
	}
	return true, nil
}
