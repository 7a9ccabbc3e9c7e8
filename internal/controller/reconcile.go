package controller

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/faasvm/appliance/internal/function"
	"github.com/faasvm/appliance/internal/image"
)

// Reconciling: a function folder becomes a validated spec, its disks and
// ready instances of it; a new version replaces the old one without
// downtime; a removed folder stops everything.

// Sync reconciles one function folder with what runs: deploys it, redeploys
// it when it changed, or removes it when the folder is gone. It returns at
// once; the work happens in the background, one run at a time per function.
func (c *Controller) Sync(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	f := c.fns[name]
	if f == nil {
		if _, err := os.Stat(c.folder(name)); err != nil {
			return // never seen, already gone
		}
		f = &fn{name: name, state: StateDeploying}
		c.fns[name] = f
		c.dir.Store(name, f)
		c.notify(f)
	}
	if f.working {
		f.pending = true
		// A removal does not wait for the deploy in progress (a boot can
		// take minutes): requests get their 404 now, boots are aborted.
		if _, err := os.Stat(filepath.Join(c.opts.FunctionsDir, name)); errors.Is(err, os.ErrNotExist) && !f.removed {
			c.wg.Add(1)
			go func() { defer c.wg.Done(); c.remove(f) }()
		}
		return
	}
	f.working = true
	c.wg.Add(1)
	go c.reconcileLoop(f)
}

// folder is where function name's folder is: the functions folder's when
// it has one (mounted folders win), else the uploads folder's.
func (c *Controller) folder(name string) string {
	dir := filepath.Join(c.opts.FunctionsDir, name)
	if c.opts.UploadsDir == "" {
		return dir
	}
	if _, err := os.Lstat(dir); err == nil {
		return dir
	}
	return filepath.Join(c.opts.UploadsDir, name)
}

func (c *Controller) reconcileLoop(f *fn) {
	defer c.wg.Done()
	for {
		c.reconcile(f)
		c.mu.Lock()
		if f.removed {
			// The folder may be back already: a fresh fn takes over.
			again := f.pending && !c.closed
			f.working = false
			c.mu.Unlock()
			c.kickGC()
			if again {
				c.Sync(f.name)
			}
			return
		}
		if !f.pending || c.closed {
			f.working = false
			c.mu.Unlock()
			c.kickGC()
			return
		}
		f.pending = false
		c.mu.Unlock()
	}
}

func (c *Controller) reconcile(f *fn) {
	log := c.log.With("function", f.name)
	dir := c.folder(f.name)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		log.Info("function folder removed: stopping it")
		c.remove(f)
		return
	}
	spec, err := function.Load(dir, c.opts.Defaults, c.opts.Template, c.engine.Name())
	if err != nil {
		// Snapshotting the folder can fail for want of space: that is no
		// fault of the function, and it is retried.
		if err = image.Classify(err, c.opts.Defaults.SnapshotDir); image.Transient(err) {
			c.fail(f, StateFailed, fmt.Errorf("snapshotting the function folder: %w", err))
			c.retryTransient(f, err)
			return
		}
		c.fail(f, StateInvalid, fmt.Errorf("invalid function: %w", err))
		return
	}
	// The version's snapshot: prepare makes the code disk from it; once
	// this deploy is over nothing reads it (the disks are cached).
	defer func() {
		if err := spec.RemoveSnapshot(); err != nil {
			log.Warn("removing the version's snapshot", "err", err)
		}
	}()
	c.mu.Lock()
	f.secretNames = spec.Secrets
	c.mu.Unlock()
	secrets, err := loadSecrets(c.opts.SecretsDir, spec.Secrets)
	if err != nil {
		c.fail(f, StateInvalid, fmt.Errorf("invalid function: %w", err))
		return
	}
	// A secret's content is part of the version: changing it redeploys.
	spec.Digest = withSecrets(spec.Digest, secrets)
	c.mu.Lock()
	same := f.spec != nil && f.spec.Digest == spec.Digest && f.state != StateFailed && f.state != StateInvalid
	// A new version takes over with as many ready replicas as the old one
	// has (at least minReplicas, and at least one even when minReplicas is
	// 0: the deploy proves the version boots; it idles to zero later).
	want := max(spec.Scale.MinReplicas, 1)
	if f.spec != nil {
		want = max(want, f.count(instReady, f.spec.Digest))
	}
	want = min(want, spec.Scale.MaxReplicas)
	c.mu.Unlock()
	if same {
		log.Debug("function unchanged", "version", short(spec.Digest))
		return
	}
	log.Info("deploying", "version", short(spec.Digest), "runtime", spec.Runtime, "mode", spec.Mode, "replicas", want)
	for _, w := range spec.Warnings {
		log.Warn("function setting ignored", "warning", w)
	}
	d, err := c.prepareBounded(f, spec)
	if err != nil {
		c.fail(f, StateFailed, err)
		c.retryTransient(f, err)
		return
	}
	c.setPreparing(f, d.set())
	defer c.setPreparing(f, diskSet{})
	d.secrets = secrets
	c.openSnapshot(f, spec, d)
	started, err := c.bootN(f, spec, d, want)
	if err != nil {
		c.fail(f, StateFailed, err)
		if errors.Is(err, ErrNoMemory) && !errors.Is(err, errMemoryTooBig) {
			c.mu.Lock()
			c.memoryWaited(f, true)
			c.notify(f)
			c.mu.Unlock()
		}
		return
	}
	c.promote(f, spec, d, started)
}

// disks is what a version's VMs boot from: its disks (deps: "" when the
// folder declares no dependencies), and the secrets their config disk carries.
type disks struct {
	rootfs, code, deps string
	secrets            map[string][]byte
}

// depsImages is what an Images implementation offers when it can install
// a folder's dependencies (requirements.txt, package.json) onto a
// read-only disk; without it, folders boot without one.
type depsImages interface {
	// DepsDisk returns the dependency disk of the version snapshot dir for
	// runtime on top of the root filesystem rootfs ("" when the folder
	// declares no dependencies).
	DepsDisk(ctx context.Context, runtime, rootfs, dir string) (string, error)
}

// prepare builds (or finds cached) the disks a version boots from. The code
// disk comes from the version's snapshot, the copy Load read, never from
// the user's folder, which may have changed (or become a symlink) since.
func (c *Controller) prepare(ctx context.Context, spec *function.Spec) (disks, error) {
	setPrepareStep(ctx, rootfsStep(spec))
	rootfs, err := c.images.RootFS(ctx, spec.Runtime, spec.Image)
	if err != nil {
		return disks{}, fmt.Errorf("preparing root filesystem for runtime %s: %w", spec.Runtime, err)
	}
	setPrepareStep(ctx, "making the code disk")
	code, err := c.images.CodeDisk(ctx, spec.Snapshot)
	if err != nil {
		return disks{}, fmt.Errorf("snapshotting function code: %w", err)
	}
	d := disks{rootfs: rootfs, code: code}
	if di, ok := c.images.(depsImages); ok {
		setPrepareStep(ctx, "installing dependencies")
		if d.deps, err = di.DepsDisk(ctx, spec.Runtime, rootfs, spec.Snapshot); err != nil {
			return disks{}, fmt.Errorf("dependencies: %w", err)
		}
	}
	return d, nil
}

// bootN starts n instances of spec and waits for all of them; if any
// fails, it stops the others and returns the first error. When the version
// could have a snapshot but has none yet, the first boots alone, the
// snapshot is made, and the others restore from it.
func (c *Controller) bootN(f *fn, spec *function.Spec, d disks, n int) ([]*instance, error) {
	if n <= 1 || !c.snapshotPending(f, spec.Digest) {
		return c.startN(f, spec, d, n)
	}
	first, err := c.startN(f, spec, d, 1)
	if err != nil {
		return nil, err
	}
	if !c.awaitSnapshot(f, spec.Digest) {
		c.log.Warn("no snapshot for the deploy's other replicas: they boot", "function", f.name, "version", short(spec.Digest))
	}
	rest, err := c.startN(f, spec, d, n-1)
	if err != nil {
		c.stopInstance(f, first[0])
		return nil, err
	}
	return append(first, rest...), nil
}

// startN starts n instances of spec at once and waits for all of them; if
// any fails, it stops the others and returns the first error.
func (c *Controller) startN(f *fn, spec *function.Spec, d disks, n int) ([]*instance, error) {
	ins := make([]*instance, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ins[i], errs[i] = c.boot(f, spec, d)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err == nil {
			continue
		}
		for _, in := range ins {
			if in != nil {
				c.stopInstance(f, in)
			}
		}
		return nil, err
	}
	return ins, nil
}

// promote makes spec the serving version with the given ready instances and
// drains every instance of another version.
func (c *Controller) promote(f *fn, spec *function.Spec, d disks, ready []*instance) {
	c.mu.Lock()
	old := f.spec
	if old != nil {
		c.remember(f, f.disks)
	}
	f.spec, f.disks = spec, d
	f.prepareFails = 0
	f.state, f.lastErr, f.warnings = StateReady, "", spec.Warnings
	f.startedAt = time.Now()
	f.dp.mu.Lock()
	f.dp.lastRequest = f.startedAt // the idle timeout starts now
	f.dp.mu.Unlock()
	f.belowSince = time.Time{}
	f.crashes, f.restartAt = 0, time.Time{}
	f.memDeploy = false
	for _, in := range ready {
		if in.state == instBooting { // not if it died meanwhile
			in.state = instReady
		}
	}
	draining := 0
	for _, in := range f.instances {
		if in.version != spec.Digest && (in.state == instReady || in.state == instBooting) {
			c.drain(f, in)
			draining++
		}
	}
	c.pruneVersions(f)
	c.ensureSnapshot(f)
	c.notify(f)
	c.mu.Unlock()
	if old != nil {
		c.log.Info("new version serving, draining the old one", "function", f.name,
			"version", short(spec.Digest), "old_version", short(old.Digest), "draining", draining, "replicas", len(ready))
	} else {
		c.log.Info("function ready", "function", f.name, "version", short(spec.Digest), "replicas", len(ready))
	}
}

// drain takes in out of service: it gets no new request, and stops once
// its requests in flight are done (or after Options.DrainTimeout); c.mu is
// held.
func (c *Controller) drain(f *fn, in *instance) {
	in.state = instDraining
	f.dp.mu.Lock()
	f.dp.withdraw(in)
	in.draining = true
	f.dp.drainCheck(in)
	f.dp.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		t := time.NewTimer(c.opts.DrainTimeout)
		defer t.Stop()
		select {
		case <-in.drained:
		case <-t.C:
			c.log.Warn("drain timed out, stopping anyway", "function", f.name, "vm_id", in.id)
		case <-c.life.Done():
		}
		c.stopInstance(f, in)
	}()
}

// fail records why a version could not be deployed. A version that already
// serves (or sleeps at zero replicas) keeps serving; the status says why the
// new one did not replace it.
func (c *Controller) fail(f *fn, state string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.removed {
		return // removed while deploying: nothing to report
	}
	f.lastErr = err.Error()
	if !errors.Is(err, ErrNoMemory) {
		f.memDeploy = false // failed for another cause: no memory retry
	}
	if f.spec != nil && (f.state == StateReady || f.state == StateIdle) {
		f.lastErr = "new version not deployed, previous version still serving: " + err.Error()
		c.log.Error("redeploy failed; previous version keeps serving", "function", f.name, "err", err)
	} else {
		f.state = state
		c.log.Error("function cannot serve", "function", f.name, "state", state, "err", err)
	}
	c.notify(f)
}

// remove stops every instance and forgets the function.
func (c *Controller) remove(f *fn) {
	c.mu.Lock()
	f.removed = true
	if c.fns[f.name] == f {
		delete(c.fns, f.name)
		c.dir.CompareAndDelete(f.name, f)
	}
	c.rec.Forget(f.name)
	ins := append([]*instance(nil), f.instances...)
	c.notify(f)
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, in := range ins {
		wg.Add(1)
		go func() { defer wg.Done(); c.stopInstance(f, in) }()
	}
	wg.Wait()
	c.forgetSnapshots(f)
}
