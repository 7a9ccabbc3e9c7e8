package controller

// Snapshots: when the engine can (vm.Snapshotter) and Options.SnapshotsDir
// is set, each version gets a snapshot of a booted, warmed VM, and every
// later instance of that version is a restore of it instead of a boot.
//
//   - The key is a digest of everything that shapes the guest: the engine's
//     part (QEMU version, accelerator, machine type), the kernel and the
//     initramfs (content; the agent build lives in the initramfs), the root
//     filesystem, code and dependency disks (path, size, mtime, inode: the
//     images are content-addressed files nobody rewrites in place), memory,
//     CPUs, egress, and the agent config the VM boots with minus its two
//     per-VM secrets (mode, handler, command, env, operator secrets,
//     timeout, ...). Per-VM identity and secrets are not in it: a restore
//     hands the clone its own.
//   - It lives in <SnapshotsDir>/<function>/<key>/ and is reused across
//     appliance restarts while the key matches (Snapshotter.Open); other
//     keys of a function are deleted once a version serves, a removed
//     function's directory when it is removed, and PruneSnapshots deletes
//     what belongs to no function the controller knows.
//   - Making one: the first instance of a version boots as before and
//     serves; the snapshot is then made in the background by a separate
//     builder VM (Snapshotter.Snapshot boots its own), warmed in http mode
//     by one internal GET / (imports done), in exec mode by the agent being
//     ready. At most one build runs per version; a failed build is retried
//     with a backoff. A deploy of several replicas boots the first, makes
//     the snapshot, then restores the others.
//   - Restoring: every start of an instance of a version with a snapshot
//     (scale-out, from zero, replacement of a crashed or unhealthy VM, a
//     deploy's replicas) restores. A restore that fails for any reason is
//     logged, counted (SnapshotRecorder.SnapshotRestoreFailed with a reason),
//     the snapshot deleted and rebuilt, and the instance boots instead.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/faasvm/appliance/guest/protocol"
	"github.com/faasvm/appliance/internal/function"
	"github.com/faasvm/appliance/internal/vm"
)

// Snapshot states, as the API shows them.
const (
	SnapNone        = "none"        // no snapshot yet; the next start boots (and a build is due)
	SnapBuilding    = "building"    // a builder VM is making one
	SnapReady       = "ready"       // new instances restore from it
	SnapFailed      = "failed"      // the last build failed; retried after a backoff
	SnapUnsupported = "unsupported" // the engine cannot snapshot (ignite), or snapshots are off
)

// Reasons a restore failed, the metric's reason label.
const (
	RestoreCorrupt = "corrupt" // the snapshot's files are missing, truncated or changed
	RestoreTimeout = "timeout" // the clone did not answer in time
	RestoreEngine  = "engine"  // the engine (QEMU) refused or the clone failed its re-key
)

// snapshotKeyFormat is bumped when what goes into the key changes.
const snapshotKeyFormat = "faasvm snapshot key 1"

// warmUserAgent marks the one internal request that warms a snapshot's VM.
const warmUserAgent = "faasvm-snapshot-warmup"

// SnapshotRecorder is what a Recorder may also implement to receive the
// snapshot and memory measurements.
type SnapshotRecorder interface {
	// SnapshotRestoreFailed counts a restore of function's snapshot that
	// failed (the instance booted instead).
	SnapshotRestoreFailed(function, reason string)
	// SnapshotSaved reports function's current snapshot (bytes on disk,
	// when it was made); SnapshotGone that it has none.
	SnapshotSaved(function string, bytes int64, created time.Time)
	SnapshotGone(function string)
	// InstancePSS reports one instance's proportional set size;
	// InstanceGone that the instance stopped.
	InstancePSS(function, instance string, bytes int64)
	InstanceGone(function, instance string)
}

// SnapshotStatus is the serving version's snapshot, as the API shows it.
type SnapshotStatus struct {
	Key       string    `json:"key,omitempty"` // short form of the key
	State     string    `json:"state"`         // SnapNone, SnapBuilding, SnapReady, SnapFailed, SnapUnsupported
	SizeBytes int64     `json:"sizeBytes"`
	CreatedAt time.Time `json:"createdAt,omitzero"`
	Restores  uint64    `json:"restores"`            // instances started from it
	LastError string    `json:"lastError,omitempty"` // why the last build or restore failed
}

// InstanceStatus is one instance, as the API shows it.
type InstanceStatus struct {
	ID      string `json:"id"`
	State   string `json:"state"`
	Version string `json:"version"`
	// Start is how the VM started: StartBoot or StartRestore ("" while it
	// starts); StartSeconds how long that took to the agent answering.
	Start        string    `json:"start,omitempty"`
	StartSeconds float64   `json:"startSeconds"`
	StartedAt    time.Time `json:"startedAt,omitzero"`
	// PSSBytes is the VM process's proportional set size, sampled every
	// pssInterval (0: not measured, e.g. an engine that cannot tell).
	PSSBytes int64 `json:"pssBytes"`
}

// pssInterval is how often a ready instance's PSS is sampled.
const pssInterval = 10 * time.Second

// snapState is one version's snapshot; guarded by c.mu.
type snapState struct {
	version string
	key     string
	dir     string
	spec    *function.Spec
	d       disks

	snap     *vm.Snapshot  // nil: none usable
	building bool          // a build runs
	cancel   func()        // cancels the running build
	done     chan struct{} // closed when the running build ends
	lastErr  string
	failures int       // builds failed in a row
	retryAt  time.Time // no build before this
	restores uint64
}

// snapshotter returns the engine's snapshot capability, nil when there is
// none or snapshots are off.
func (c *Controller) snapshotter() vm.Snapshotter {
	sn, ok := c.engine.(vm.Snapshotter)
	if !ok || c.opts.SnapshotsDir == "" {
		return nil
	}
	return sn
}

func (c *Controller) snapRecorder() SnapshotRecorder {
	r, _ := c.rec.(SnapshotRecorder)
	return r
}

// safeName says whether a function name may name a directory.
func safeName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\\\x00")
}

// openSnapshot finds (or prepares to make) the snapshot of a version about
// to be deployed: it computes the key and, when a snapshot of that key is
// on disk and whole, uses it. Not under c.mu (it reads files).
func (c *Controller) openSnapshot(f *fn, spec *function.Spec, d disks) {
	sn := c.snapshotter()
	if sn == nil || !safeName(f.name) {
		return
	}
	key, err := c.snapshotKey(f.name, spec, d, sn.SnapshotKey())
	if err != nil {
		c.log.Warn("no snapshot for this version: cannot compute its key; instances boot", "function", f.name, "version", short(spec.Digest), "err", err)
		return
	}
	st := &snapState{
		version: spec.Digest, key: key, spec: spec, d: d,
		dir: filepath.Join(c.opts.SnapshotsDir, f.name, key[:32]),
	}
	c.mu.Lock()
	if old := f.snaps[spec.Digest]; old != nil && old.key == key && (old.snap != nil || old.building) {
		c.mu.Unlock()
		return // redeployed after a failure: keep what is there (and not touch a build's dir)
	}
	c.mu.Unlock()
	if _, err := os.Stat(st.dir); err == nil {
		snap, err := sn.Open(st.dir, key)
		if err != nil {
			c.log.Warn("snapshot on disk unusable: deleting it, a new one is made", "function", f.name, "dir", st.dir, "err", err)
			if rerr := os.RemoveAll(st.dir); rerr != nil {
				c.log.Error("deleting unusable snapshot", "function", f.name, "dir", st.dir, "err", rerr)
			}
		} else {
			st.snap = snap
			c.log.Info("reusing snapshot made earlier", "function", f.name, "version", short(spec.Digest), "key", short(key), "created", snap.Created, "bytes", snap.Size)
		}
	}
	c.mu.Lock()
	if f.snaps == nil {
		f.snaps = map[string]*snapState{}
	}
	f.snaps[spec.Digest] = st
	if st.snap != nil {
		c.reportSnapshot(f)
	}
	c.mu.Unlock()
}

// snapshotKey is the digest of everything that shapes the guest of spec.
func (c *Controller) snapshotKey(name string, spec *function.Spec, d disks, engineKey string) (string, error) {
	agent := agentConfig(name, spec, d, "", "")
	js, err := json.Marshal(&agent)
	if err != nil {
		return "", fmt.Errorf("encoding agent config: %w", err)
	}
	kernel, err := c.fileDigest(c.opts.Kernel)
	if err != nil {
		return "", fmt.Errorf("kernel: %w", err)
	}
	initrd, err := c.fileDigest(c.opts.Initrd)
	if err != nil {
		return "", fmt.Errorf("initramfs: %w", err)
	}
	parts := []string{
		snapshotKeyFormat,
		"engine " + engineKey,
		"kernel " + kernel,
		"initrd " + initrd,
		fmt.Sprintf("memory %d cpus %d egress %t", spec.VM.Spec.Memory.Bytes(), spec.VM.Spec.CPUs, spec.Egress),
		"agent " + string(js),
	}
	for _, disk := range []struct{ what, path string }{{"rootfs", d.rootfs}, {"code", d.code}, {"deps", d.deps}} {
		id, err := fileIdentity(disk.path)
		if err != nil {
			return "", fmt.Errorf("%s disk: %w", disk.what, err)
		}
		parts = append(parts, disk.what+" "+id)
	}
	sum := sha256.Sum256([]byte(strings.Join(parts, "\n")))
	return hex.EncodeToString(sum[:]), nil
}

// fileIdentity names a file's version without reading it: path, size,
// mtime, inode ("none" for no file).
func fileIdentity(path string) (string, error) {
	if path == "" {
		return "none", nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	ino := uint64(0)
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	return fmt.Sprintf("%s size %d mtime %d ino %d", path, fi.Size(), fi.ModTime().UnixNano(), ino), nil
}

// fileDigests caches the SHA-256 of the kernel and initramfs by identity.
var fileDigests sync.Map // identity → hex digest

// fileDigest is the SHA-256 of a file's content ("none" for no file).
func (c *Controller) fileDigest(path string) (string, error) {
	id, err := fileIdentity(path)
	if err != nil || path == "" {
		return id, err
	}
	if v, ok := fileDigests.Load(id); ok {
		return v.(string), nil
	}
	fh, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer fh.Close()
	h := sha256.New()
	if _, err := io.Copy(h, fh); err != nil {
		return "", fmt.Errorf("hashing %s: %w", path, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	fileDigests.Store(id, sum)
	return sum, nil
}

// startMachine starts the VM of in: a restore when its version has a
// snapshot, else (or when the restore fails) a boot. It returns how it
// started and how long that took. parent is the instance's life while it
// starts (cancelled when it is stopped); each attempt gets its own
// BootTimeout.
func (c *Controller) startMachine(parent context.Context, f *fn, in *instance, spec *vm.Spec) (vm.Machine, string, time.Duration, error) {
	c.mu.Lock()
	st := f.snaps[in.version]
	var snap *vm.Snapshot
	if st != nil {
		snap = st.snap
	}
	c.mu.Unlock()
	if sn := c.snapshotter(); sn != nil && snap != nil {
		begin := time.Now()
		c.log.Info("restoring vm from snapshot", "function", f.name, "vm_id", in.id, "version", short(in.version), "snapshot", snap.Dir)
		m, reason, err := c.restore(parent, sn, snap, spec)
		if err == nil {
			c.mu.Lock()
			st.restores++
			c.mu.Unlock()
			return m, StartRestore, time.Since(begin), nil
		}
		if parent.Err() != nil {
			return nil, StartRestore, 0, err // stopped while restoring: no fallback
		}
		c.log.Error("restore failed: booting instead, the snapshot is deleted and made again",
			"function", f.name, "vm_id", in.id, "reason", reason, "err", err)
		c.restoreFailed(f, st, snap, reason, err)
	}
	// Restores skip the concurrent boot limit (they take tens of
	// milliseconds); a boot waits for its slot, and its timeout runs from
	// the slot on, not while waiting in line.
	release, err := c.waitBootSlot(parent, f, in)
	if err != nil {
		return nil, StartBoot, 0, fmt.Errorf("%w: waiting for a boot slot: %w", errStoppedBooting, err)
	}
	defer release()
	ctx, cancel := context.WithTimeout(parent, c.opts.BootTimeout)
	defer cancel()
	begin := time.Now()
	c.log.Info("booting vm", "function", f.name, "vm_id", in.id, "version", short(in.version), "engine", c.engine.Name())
	m, err := c.engine.Start(ctx, spec)
	return m, StartBoot, time.Since(begin), err
}

// restore checks snap is still whole and restores a clone of it as spec.
func (c *Controller) restore(parent context.Context, sn vm.Snapshotter, snap *vm.Snapshot, spec *vm.Spec) (vm.Machine, string, error) {
	if _, err := sn.Open(snap.Dir, snap.Key); err != nil {
		return nil, RestoreCorrupt, err
	}
	ctx, cancel := context.WithTimeout(parent, c.opts.BootTimeout)
	defer cancel()
	m, err := sn.Restore(ctx, snap, spec)
	switch {
	case err == nil:
		return m, "", nil
	case errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil:
		return nil, RestoreTimeout, err
	}
	return nil, RestoreEngine, err
}

// restoreFailed counts a failed restore and deletes the snapshot (unless
// a newer one replaced it meanwhile); a new one is made once the boot that
// replaces the restore is ready.
func (c *Controller) restoreFailed(f *fn, st *snapState, snap *vm.Snapshot, reason string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.snapRecorder(); r != nil && !f.removed {
		r.SnapshotRestoreFailed(f.name, reason)
	}
	st.lastErr = fmt.Sprintf("restore failed (%s): %v", reason, err)
	if st.snap != snap {
		return // already replaced
	}
	st.snap = nil
	c.reportSnapshot(f)
	if !st.building {
		// Quick (a few files), and nothing restores from it any more.
		if rerr := os.RemoveAll(st.dir); rerr != nil {
			c.log.Error("deleting the failed snapshot", "function", f.name, "dir", st.dir, "err", rerr)
		}
	}
	// A rebuild is due as soon as the boot standing in for this restore
	// is ready (scale-out and promote call ensureSnapshot then), not at
	// once: the builder VM would slow that boot down.
	st.retryAt = time.Time{}
}

// ensureSnapshot starts the build of the serving version's snapshot if it
// has none; c.mu is held.
func (c *Controller) ensureSnapshot(f *fn) {
	if f.spec != nil {
		c.buildSnapshot(f, f.snaps[f.spec.Digest])
	}
}

// buildSnapshot starts making st's snapshot in the background unless it
// has one, one is being made, or the last failure's backoff runs; c.mu is
// held.
func (c *Controller) buildSnapshot(f *fn, st *snapState) {
	if st == nil || st.snap != nil || st.building || c.closed || f.removed || f.snaps[st.version] != st {
		return
	}
	if wait := time.Until(st.retryAt); wait > 0 {
		return // the retry timer set by the failure calls again
	}
	life, cancel := context.WithCancel(c.life)
	st.building, st.done, st.cancel = true, make(chan struct{}), cancel
	c.wg.Add(1)
	go c.build(life, f, st)
}

// build makes st's snapshot with a builder VM of its own. The builder is a
// boot like any other: it waits for a slot under the concurrent boot limit
// (bootlimit.go), and its time bound runs from the slot on. life ends when
// the version or function goes.
func (c *Controller) build(life context.Context, f *fn, st *snapState) {
	defer c.wg.Done()
	sn := c.snapshotter()
	log := c.log.With("function", f.name, "version", short(st.version), "key", short(st.key))
	begin := time.Now()
	var snap *vm.Snapshot
	// The builder VM counts against the memory budget like any VM, but
	// does not scale other functions to zero: the snapshot is optional.
	releaseMem, err := c.reserveMemory(life, f, vmBytes(st.spec), false)
	if err == nil {
		var release func()
		release, err = c.boots.acquire(life, func(ahead int) {
			log.Info("snapshot builder waiting to boot: concurrent boot limit reached", "ahead", ahead)
		})
		if err == nil {
			ctx, cancel := context.WithTimeout(life, c.opts.BootTimeout+st.spec.Timeout+time.Minute)
			snap, err = c.makeSnapshot(ctx, sn, f, st)
			cancel()
			release()
		}
		releaseMem()
	}
	c.mu.Lock()
	st.cancel()
	st.building = false
	close(st.done)
	current := !f.removed && !c.closed && f.snaps[st.version] == st
	if err == nil && current {
		st.snap, st.lastErr, st.failures = snap, "", 0
		c.reportSnapshot(f)
		c.mu.Unlock()
		log.Info("snapshot made: new instances of this version restore from it", "took", time.Since(begin), "bytes", snap.Size, "dir", st.dir)
		return
	}
	if err == nil { // the version (or function) went while it was made
		c.mu.Unlock()
		c.removeSnapshotDir(f.name, st.dir)
		return
	}
	if !current || c.life.Err() != nil {
		c.mu.Unlock()
		c.removeSnapshotDir(f.name, st.dir)
		return
	}
	st.failures++
	delay := min(30*time.Second<<min(st.failures-1, 5), 15*time.Minute)
	st.retryAt = time.Now().Add(delay)
	st.lastErr = "making the snapshot: " + err.Error()
	c.mu.Unlock()
	log.Error("making the snapshot failed: instances keep booting; retrying later", "err", err, "retry_in", delay)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if !c.sleep(delay) {
			return
		}
		c.mu.Lock()
		c.buildSnapshot(f, st)
		c.mu.Unlock()
	}()
}

// makeSnapshot boots the builder VM, warms it and saves it into st.dir.
// ctx bounds the boot, warm-up and saving; it is cancelled when the version
// or function goes.
func (c *Controller) makeSnapshot(ctx context.Context, sn vm.Snapshotter, f *fn, st *snapState) (*vm.Snapshot, error) {
	secret, err := newSecret()
	if err != nil {
		return nil, err
	}
	control, err := newSecret()
	if err != nil {
		return nil, err
	}
	v := newVMObject(f.name, st.spec)
	if v.Annotations == nil {
		v.Annotations = map[string]string{}
	}
	v.Annotations[vm.SnapshotKeyAnnotation] = st.key
	spec := &vm.Spec{
		VM: v, Kernel: c.opts.Kernel, Initrd: c.opts.Initrd,
		RootFS: st.d.rootfs, Code: st.d.code, Deps: st.d.deps,
		Agent:  agentConfig(f.name, st.spec, st.d, secret, control),
		Egress: st.spec.Egress,
	}
	c.log.Info("making snapshot with a builder vm", "function", f.name, "version", short(st.version), "vm_id", string(v.UID), "dir", st.dir)
	return sn.Snapshot(ctx, spec, st.dir, c.warm(f.name, st.spec, secret))
}

// warm is the warm-up before a snapshot is saved: in http mode one GET /
// through the agent, so the handler is imported and has answered once
// (whatever its status: the handler's own answer to / is not the
// controller's business); in exec mode nothing (the agent is ready).
func (c *Controller) warm(name string, spec *function.Spec, secret string) func(ctx context.Context, m vm.Machine) error {
	if spec.Mode != protocol.ModeHTTP {
		return nil
	}
	return func(ctx context.Context, m vm.Machine) error {
		ctx, cancel := context.WithTimeout(ctx, spec.Timeout+5*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+m.Endpoint()+"/", nil)
		if err != nil {
			return fmt.Errorf("warm-up request: %w", err)
		}
		req.Header.Set(protocol.SecretHeader, secret)
		req.Header.Set("User-Agent", warmUserAgent)
		res, err := warmClient.Do(req)
		if err != nil {
			return fmt.Errorf("warm-up request: %w", err)
		}
		defer res.Body.Close()
		_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 1<<20))
		if res.StatusCode >= 500 {
			c.log.Warn("the handler answered the snapshot's warm-up request with an error; the snapshot holds it as it is",
				"function", name, "status", res.StatusCode)
		}
		return nil
	}
}

// warmClient talks to a builder VM's agent on loopback: no proxy, no reuse.
var warmClient = &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}

// awaitSnapshot waits (bounded by the life of the controller) for the
// build of spec's snapshot, starting it if needed; it reports whether a
// snapshot is ready.
func (c *Controller) awaitSnapshot(f *fn, version string) bool {
	c.mu.Lock()
	st := f.snaps[version]
	if st == nil {
		c.mu.Unlock()
		return false
	}
	c.buildSnapshot(f, st)
	done, building := st.done, st.building
	c.mu.Unlock()
	if building {
		select {
		case <-done:
		case <-c.life.Done():
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return st.snap != nil
}

// snapshotPending says whether version could have a snapshot but has none.
func (c *Controller) snapshotPending(f *fn, version string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := f.snaps[version]
	return st != nil && st.snap == nil
}

// pruneVersions forgets the snapshots of versions other than the serving
// one and deletes every other key's directory of f; c.mu is held.
func (c *Controller) pruneVersions(f *fn) {
	if f.spec == nil || c.opts.SnapshotsDir == "" || !safeName(f.name) {
		return
	}
	keep := map[string]bool{}
	for v, st := range f.snaps {
		if v != f.spec.Digest {
			// A build still running for it is stopped and deletes what it made.
			if st.building {
				st.cancel()
			}
			delete(f.snaps, v)
			continue
		}
		keep[filepath.Base(st.dir)] = true
	}
	c.reportSnapshot(f)
	dir := filepath.Join(c.opts.SnapshotsDir, f.name)
	c.wg.Add(1)
	go func() { defer c.wg.Done(); c.pruneDir(f.name, dir, keep) }()
}

// pruneDir deletes the entries of dir not in keep.
func (c *Controller) pruneDir(name, dir string, keep map[string]bool) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			c.log.Warn("listing snapshots", "function", name, "dir", dir, "err", err)
		}
		return
	}
	for _, e := range ents {
		if !keep[e.Name()] {
			c.removeSnapshotDir(name, filepath.Join(dir, e.Name()))
		}
	}
}

// removeSnapshotDir deletes a snapshot dir, and its function's dir when
// that is left empty.
func (c *Controller) removeSnapshotDir(name, dir string) {
	if err := os.RemoveAll(dir); err != nil {
		c.log.Error("deleting stale snapshot: delete it by hand", "function", name, "dir", dir, "err", err)
		return
	}
	c.log.Info("stale snapshot deleted", "function", name, "dir", dir)
	if parent := filepath.Dir(dir); parent != c.opts.SnapshotsDir {
		_ = os.Remove(parent) // fails, as it should, unless empty
	}
}

// forgetSnapshots deletes every snapshot of a removed function; c.mu is
// not held.
func (c *Controller) forgetSnapshots(f *fn) {
	if c.opts.SnapshotsDir == "" || !safeName(f.name) {
		return
	}
	c.mu.Lock()
	// A new fn of the same name (the folder came back) owns the directory.
	taken := c.fns[f.name] != nil && c.fns[f.name] != f
	for _, st := range f.snaps {
		st.snap = nil
		if st.building {
			st.cancel()
		}
	}
	c.mu.Unlock()
	if !taken {
		c.removeSnapshotDir(f.name, filepath.Join(c.opts.SnapshotsDir, f.name))
	}
}

// PruneSnapshots deletes the snapshots of functions the controller does
// not know (removed while the appliance was down) and, for those it knows,
// of keys none of their versions uses. For the disk GC; call it once every
// function folder has been synced. It returns the directories it deleted.
func (c *Controller) PruneSnapshots() ([]string, error) {
	if c.opts.SnapshotsDir == "" {
		return nil, nil
	}
	ents, err := os.ReadDir(c.opts.SnapshotsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing snapshots: %w", err)
	}
	var deleted []string
	var errs []error
	for _, e := range ents {
		dir := filepath.Join(c.opts.SnapshotsDir, e.Name())
		c.mu.Lock()
		f := c.fns[e.Name()]
		var keep map[string]bool
		if f != nil {
			keep = map[string]bool{}
			for _, st := range f.snaps {
				keep[filepath.Base(st.dir)] = true
			}
			if len(f.snaps) == 0 && f.spec == nil {
				keep = nil // not deployed yet: nothing known about its keys
			}
		}
		c.mu.Unlock()
		if f != nil && keep == nil {
			continue
		}
		if f == nil {
			if err := os.RemoveAll(dir); err != nil {
				errs = append(errs, err)
				continue
			}
			deleted = append(deleted, dir)
			continue
		}
		subs, err := os.ReadDir(dir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, s := range subs {
			if keep[s.Name()] {
				continue
			}
			p := filepath.Join(dir, s.Name())
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, err)
				continue
			}
			deleted = append(deleted, p)
		}
	}
	if len(deleted) > 0 {
		c.log.Info("stale snapshots deleted", "dirs", deleted)
	}
	if err := errors.Join(errs...); err != nil {
		return deleted, fmt.Errorf("deleting stale snapshots: %w", err)
	}
	return deleted, nil
}

// reportSnapshot sends the serving version's snapshot to the recorder;
// c.mu is held.
func (c *Controller) reportSnapshot(f *fn) {
	r := c.snapRecorder()
	if r == nil || f.removed {
		return
	}
	if f.spec != nil {
		if st := f.snaps[f.spec.Digest]; st != nil && st.snap != nil {
			r.SnapshotSaved(f.name, st.snap.Size, st.snap.Created)
			return
		}
	}
	r.SnapshotGone(f.name)
}

// snapshotStatus renders the serving version's snapshot; c.mu is held.
func (c *Controller) snapshotStatus(f *fn) *SnapshotStatus {
	if f.spec == nil {
		return nil
	}
	if c.snapshotter() == nil {
		return &SnapshotStatus{State: SnapUnsupported}
	}
	st := f.snaps[f.spec.Digest]
	if st == nil {
		return &SnapshotStatus{State: SnapNone}
	}
	s := &SnapshotStatus{Key: short(st.key), State: SnapNone, Restores: st.restores, LastError: st.lastErr}
	switch {
	case st.snap != nil:
		s.State, s.SizeBytes, s.CreatedAt = SnapReady, st.snap.Size, st.snap.Created
	case st.building:
		s.State = SnapBuilding
	case st.failures > 0:
		s.State = SnapFailed
	}
	return s
}

// instanceStatus renders f's instances; c.mu is held.
func instanceStatus(f *fn) []InstanceStatus {
	out := make([]InstanceStatus, 0, len(f.instances))
	for _, in := range f.instances {
		out = append(out, InstanceStatus{
			ID: in.id, State: in.state, Version: short(in.version),
			Start: in.method, StartSeconds: in.startTook.Seconds(), StartedAt: in.started,
			PSSBytes: in.pss.Load(),
		})
	}
	return out
}

// samplePSS measures in's PSS if the machine can tell and the last sample
// is older than pssInterval.
func (c *Controller) samplePSS(f *fn, in *instance, m vm.Machine) {
	p, ok := m.(vm.PSSReporter)
	if !ok || time.Since(in.pssAt) < pssInterval {
		return
	}
	in.pssAt = time.Now()
	b, err := p.PSS()
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			c.pssDenied.Do(func() {
				c.log.Warn("cannot read the VMs' memory use (PSS): reading another uid's /proc/<pid>/smaps_rollup needs CAP_SYS_PTRACE; pssBytes stays 0",
					"function", f.name, "vm_id", in.id, "err", err)
			})
			return
		}
		c.log.Debug("measuring vm memory", "function", f.name, "vm_id", in.id, "err", err)
		return
	}
	in.pss.Store(b)
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.snapRecorder(); r != nil && !f.removed && in.state != instStopped {
		r.InstancePSS(f.name, in.id, b)
	}
}

// instanceGone drops a stopped instance's series.
func (c *Controller) instanceGone(f *fn, in *instance) {
	if r := c.snapRecorder(); r != nil {
		r.InstanceGone(f.name, in.id)
	}
}
