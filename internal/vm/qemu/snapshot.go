package qemu

// Snapshots (vm.Snapshotter). A snapshot is a directory holding three
// files:
//
//	mem-<id>.img    the guest's RAM, written by the snapshot's VM, which
//	                mapped it shared (memory-backend-file,share=on)
//	state-<id>.bin  its device state, saved by QMP migrate to a descriptor
//	                the engine handed QEMU (getfd), x-ignore-shared on so the
//	                RAM (already in the file) is not copied into it
//	manifest.json   what the snapshot is: the caller's key, the guest it
//	                holds, sizes and the state file's SHA-256; written last
//	                (temp+fsync+rename), so its presence commits the other two
//
// A restore starts QEMU with the same machine, disks and kernel command
// line, the RAM file mapped private (share=off: the clone's writes are
// copy-on-write pages of its own, clean pages are shared with every other
// clone of the snapshot, and the file never changes), -incoming defer, then
// over QMP migrate-incoming from an inherited descriptor of the state file,
// cont, and POST /restore to the agent with the clone's fresh secrets,
// entropy, clock and identity. QEMU opens no file itself: it gets both
// files as descriptors. It does reopen the RAM file through /proc/self/fd
// (read-write: a read-only mapping would make guest RAM read-only), so the
// file's mode must let QEMU's user open it: the file is the engine's,
// group-owned by a group of its own per snapshot (mode 0660), and only the
// VMs of that snapshot run with that group as a supplementary group. The
// directory stays 0700, so no other user reaches the file by path.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/faasvm/appliance/guest/protocol"
	"github.com/faasvm/appliance/internal/vm"
)

var _ vm.Snapshotter = (*Engine)(nil)

const (
	snapManifestName = "manifest.json"
	// snapFormat is bumped whenever the command line or the files change
	// in a way an older snapshot cannot be restored under.
	snapFormat = 1
	// maxManifestBytes bounds what Open reads of a manifest.
	maxManifestBytes = 64 << 10
	// migratePoll is how often the engine asks QEMU how a migration goes.
	migratePoll = 5 * time.Millisecond
	// stateFDName is the name the state file's descriptor gets in QEMU (getfd).
	stateFDName = "snapstate"
)

// manifest is manifest.json.
type manifest struct {
	Format      int       `json:"format"`
	Key         string    `json:"key"`
	QEMUVersion string    `json:"qemuVersion"`
	Created     time.Time `json:"created"`

	// The guest: a restore must describe the same one.
	Accel       string `json:"accel"`
	MemoryMiB   uint64 `json:"memoryMiB"`
	CPUs        uint64 `json:"cpus"`
	Kernel      string `json:"kernel"`
	Initrd      string `json:"initrd"`
	RootFS      string `json:"rootfs"`
	Code        string `json:"code"`
	Deps        string `json:"deps,omitempty"`
	Egress      bool   `json:"egress"`
	CmdLine     string `json:"cmdline"`
	MAC         string `json:"mac"`
	AgentConfig string `json:"agentConfig"` // SHA-256 of the agent config without its two secrets
	// ControlSecret is the snapshot's VM's control secret, which a clone's
	// agent takes (once) to be re-keyed. The manifest is 0600.
	ControlSecret string `json:"controlSecret"`

	MemFile     string `json:"memFile"`
	MemBytes    int64  `json:"memBytes"`
	StateFile   string `json:"stateFile"`
	StateBytes  int64  `json:"stateBytes"`
	StateSHA256 string `json:"stateSHA256"`
	Group       uint32 `json:"group,omitempty"` // the RAM file's group; 0: none (QEMU runs as the engine)
}

// SnapshotKey is the engine's part of a snapshot key: QEMU's version, the
// accelerator (as configured until KVM has been probed, then as decided),
// the machine type and the snapshot format.
func (e *Engine) SnapshotKey() string {
	accel, _ := e.Accel()
	if accel == "" {
		accel = e.cfg.Accel
	}
	return fmt.Sprintf("qemu %s; accel %s; machine %s; format %d", e.qemuVersion(), accel, machineArgs(AccelTCG)[1], snapFormat)
}

// qemuVersion is the first line of `qemu --version`, asked once.
func (e *Engine) qemuVersion() string {
	e.versionOnce.Do(func() {
		out, err := exec.Command(e.cfg.QEMUPath, "--version").Output()
		line, _, _ := strings.Cut(string(out), "\n")
		if err != nil || strings.TrimSpace(line) == "" {
			e.log.Warn("cannot tell QEMU's version; snapshots are keyed as of an unknown version", "error", err)
			e.version = "unknown"
			return
		}
		e.version = strings.TrimSpace(line)
	})
	return e.version
}

// Snapshot boots spec with its RAM in a file under dir, waits for the agent,
// runs warm, then pauses the VM, saves its device state and stops it. The
// snapshot's files replace any earlier snapshot in dir only once they are
// complete (the manifest's rename commits them); clones of the earlier one
// keep running on their own copies of its files.
func (e *Engine) Snapshot(ctx context.Context, spec *vm.Spec, dir string, warm func(ctx context.Context, m vm.Machine) error) (*vm.Snapshot, error) {
	if spec == nil || spec.VM == nil {
		return nil, errors.New("snapshotting vm: spec has no VM object")
	}
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("snapshotting vm %s: snapshot dir %q is not absolute", spec.VM.Name, dir)
	}
	begin := time.Now()
	s, err := e.snapshot(ctx, spec, dir, warm)
	if err != nil {
		return nil, fmt.Errorf("snapshotting vm %s into %s: %w", spec.VM.Name, dir, err)
	}
	e.log.Info("snapshot saved", "vm", spec.VM.Name, "function", spec.Agent.Name, "dir", dir, "bytes", s.Size, "took", time.Since(begin))
	return s, nil
}

func (e *Engine) snapshot(ctx context.Context, spec *vm.Spec, dir string, warm func(ctx context.Context, m vm.Machine) error) (_ *vm.Snapshot, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the snapshot dir: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("closing the snapshot dir to others: %w", err)
	}
	id, err := randomHex(8)
	if err != nil {
		return nil, err
	}
	man := &manifest{
		Format: snapFormat, QEMUVersion: e.qemuVersion(),
		MemoryMiB: spec.VM.Spec.Memory.Bytes() >> 20, CPUs: spec.VM.Spec.CPUs,
		Kernel: spec.Kernel, Initrd: spec.Initrd, RootFS: spec.RootFS, Code: spec.Code, Deps: spec.Deps,
		Egress: spec.Egress, CmdLine: kernelCmdLine(e.tscKHz, spec.VM.Spec.Kernel.CmdLine),
		MAC: macFromUID(string(spec.VM.UID)), ControlSecret: spec.Agent.ControlSecret,
		MemFile: "mem-" + id + ".img", StateFile: "state-" + id + ".bin",
	}
	if man.AgentConfig, err = agentConfigDigest(&spec.Agent); err != nil {
		return nil, err
	}
	memPath, statePath := filepath.Join(dir, man.MemFile), filepath.Join(dir, man.StateFile)
	defer func() {
		if err != nil {
			os.Remove(memPath)
			os.Remove(statePath)
		}
	}()
	if e.users.enabled {
		gid, release, err := e.snapshotGroup(dir)
		if err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				release()
			}
		}()
		man.Group = gid
	}
	mem, err := createMemFile(memPath, int64(man.MemoryMiB)<<20, man.Group)
	if err != nil {
		return nil, err
	}
	defer mem.Close()

	b := e.newBoot(spec)
	b.mem, b.memShared, b.memGroup = mem, true, man.Group
	b.cmdLine, b.mac = man.CmdLine, man.MAC
	bootBegin := time.Now()
	if err := b.Run(ctx, b.steps(nil, nil)); err != nil {
		return nil, fmt.Errorf("booting: %w", err)
	}
	m := newMachine(b)
	defer func() {
		// Whatever happened, the snapshot's VM goes: it is saved or useless.
		if serr := m.Stop(context.WithoutCancel(ctx)); serr != nil && err == nil {
			err = fmt.Errorf("stopping the snapshot's vm: %w", serr)
		}
	}()
	b.logStarted("vm booted for a snapshot", m, bootBegin)
	man.Accel = b.accel
	if warm != nil {
		if err := warm(ctx, m); err != nil {
			return nil, fmt.Errorf("warming (the function's own warm-up request failed; see the console log): %w", err)
		}
	}
	if err := b.saveState(ctx, statePath); err != nil {
		return nil, err
	}
	// QEMU is gone: the RAM file holds the guest's memory. Make both files
	// durable before the manifest says they are a snapshot. (The engine's
	// descriptor went to QEMU: open the file again.)
	if man.MemBytes, err = syncFile(memPath); err != nil {
		return nil, fmt.Errorf("syncing the RAM file: %w", err)
	}
	if man.StateBytes, man.StateSHA256, err = hashFile(statePath); err != nil {
		return nil, err
	}
	if man.StateBytes == 0 {
		return nil, errors.New("QEMU saved no device state")
	}
	man.Key, man.Created = "", time.Now().UTC()
	return e.commit(dir, man, spec)
}

// commit writes man as dir's manifest, removes the files of any earlier
// snapshot in dir, and returns the snapshot.
func (e *Engine) commit(dir string, man *manifest, spec *vm.Spec) (*vm.Snapshot, error) {
	man.Key = snapshotKeyOf(spec)
	js, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding the manifest: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, snapManifestName), js); err != nil {
		return nil, fmt.Errorf("writing the manifest: %w", err)
	}
	removeStaleSnapshotFiles(e, dir, man)
	return snapshotOf(dir, man)
}

// snapshotKeyOf is the key a snapshot of spec is saved under: the caller's,
// carried in the spec's VM annotations (vm.SnapshotKeyAnnotation), or ""
// when it set none.
func snapshotKeyOf(spec *vm.Spec) string {
	return spec.VM.GetAnnotation(vm.SnapshotKeyAnnotation)
}

// saveState pauses the VM and saves its device state into path, then ends
// QEMU (the migration leaves it paused for good).
func (b *boot) saveState(ctx context.Context, path string) error {
	state, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("creating the state file: %w", err)
	}
	defer state.Close()
	c, err := b.dialQMP(ctx)
	if err != nil {
		return fmt.Errorf("saving the device state: %w", err)
	}
	defer c.Close()
	begin := time.Now()
	for _, cmd := range []struct {
		name string
		args any
		fd   *os.File
	}{
		{"migrate-set-capabilities", ignoreSharedCap, nil},
		{"stop", nil, nil},
		{"getfd", map[string]string{"fdname": stateFDName}, state},
		{"migrate", map[string]string{"uri": "fd:" + stateFDName}, nil},
	} {
		if _, err := c.executeFD(ctx, cmd.name, cmd.args, cmd.fd); err != nil {
			return fmt.Errorf("saving the device state: %w", err)
		}
	}
	if err := b.waitMigration(ctx, c, "query-migrate", func(st string) (bool, error) {
		switch st {
		case "completed":
			return true, nil
		case "failed", "cancelled":
			return false, fmt.Errorf("QEMU's migration to the state file %s", st)
		}
		return false, nil
	}); err != nil {
		return fmt.Errorf("saving the device state: %w", err)
	}
	b.log.Info("device state saved", "step", "snapshot", "took", time.Since(begin))
	if _, err := c.execute(ctx, "quit", nil); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		b.log.Debug("qmp quit failed; killing qemu", "error", err)
	}
	t := time.NewTimer(qmpQuitTimeout)
	defer t.Stop()
	select {
	case <-b.qemu.done:
	case <-t.C:
		if err := b.qemu.killAndWait(killWait); err != nil {
			return err
		}
	}
	if err := state.Sync(); err != nil {
		return fmt.Errorf("syncing the state file: %w", err)
	}
	return nil
}

// ignoreSharedCap leaves RAM backed by a shared file out of the migration
// stream (the file is the RAM).
var ignoreSharedCap = map[string]any{"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": true}}}

// waitMigration polls QMP query (query-migrate or query-status) until done
// says so, QEMU exits or ctx ends.
func (b *boot) waitMigration(ctx context.Context, c *qmpClient, query string, done func(status string) (bool, error)) error {
	tick := time.NewTicker(migratePoll)
	defer tick.Stop()
	for {
		ret, err := c.execute(ctx, query, nil)
		if err != nil {
			// A session that broke off is most often QEMU refusing the
			// state and exiting: say why if it did.
			t := time.NewTimer(exitGrace)
			defer t.Stop()
			select {
			case <-b.qemu.done:
				return b.qemu.exitError(b.path(qemuStderrName))
			case <-t.C:
				return err
			}
		}
		var st struct {
			Status   string `json:"status"`
			ErrorDes string `json:"error-desc"`
		}
		if err := json.Unmarshal(ret, &st); err != nil {
			return fmt.Errorf("qmp %s: decoding: %w", query, err)
		}
		ok, err := done(st.Status)
		if err != nil {
			if st.ErrorDes != "" {
				err = fmt.Errorf("%w: %s", err, st.ErrorDes)
			}
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-b.qemu.done:
			return b.qemu.exitError(b.path(qemuStderrName))
		case <-ctx.Done():
			return fmt.Errorf("waiting for the migration (%s): %w", st.Status, context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// Open loads the snapshot in dir, checking that it was made for key by
// this QEMU, that its RAM file is whole (size) and its state file unchanged
// (size and SHA-256). The error says what is wrong; the remedy is always
// to make a new snapshot.
func (e *Engine) Open(dir, key string) (*vm.Snapshot, error) {
	man, err := e.loadManifest(dir)
	if err != nil {
		return nil, err
	}
	if man.Key != key {
		return nil, fmt.Errorf("snapshot in %s was made for key %q, not %q: make a new one", dir, man.Key, key)
	}
	return snapshotOf(dir, man)
}

// loadManifest reads and checks dir's manifest and the files it names.
func (e *Engine) loadManifest(dir string) (*manifest, error) {
	f, err := os.Open(filepath.Join(dir, snapManifestName))
	if err != nil {
		return nil, fmt.Errorf("opening snapshot: %w", err)
	}
	defer f.Close()
	js, err := io.ReadAll(io.LimitReader(f, maxManifestBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading snapshot manifest: %w", err)
	}
	if len(js) > maxManifestBytes {
		return nil, fmt.Errorf("snapshot manifest in %s is larger than %d bytes: not one of ours, make a new snapshot", dir, maxManifestBytes)
	}
	var man manifest
	if err := json.Unmarshal(js, &man); err != nil {
		return nil, fmt.Errorf("snapshot manifest in %s is damaged (%v): make a new snapshot", dir, err)
	}
	if err := e.checkManifest(dir, &man); err != nil {
		return nil, fmt.Errorf("snapshot in %s unusable: %w: make a new snapshot", dir, err)
	}
	return &man, nil
}

// checkManifest checks man and the files it names.
func (e *Engine) checkManifest(dir string, man *manifest) error {
	switch {
	case man.Format != snapFormat:
		return fmt.Errorf("format %d, this engine restores format %d", man.Format, snapFormat)
	case man.QEMUVersion != e.qemuVersion():
		return fmt.Errorf("made by %q, this is %q", man.QEMUVersion, e.qemuVersion())
	case !safeFileName(man.MemFile) || !safeFileName(man.StateFile):
		return errors.New("the manifest names files outside the snapshot dir")
	case man.MemoryMiB == 0 || man.CPUs == 0 || man.ControlSecret == "" || man.MAC == "":
		return errors.New("the manifest is incomplete")
	}
	mem, err := os.Stat(filepath.Join(dir, man.MemFile))
	if err != nil {
		return fmt.Errorf("RAM file: %w", err)
	}
	if mem.Size() != man.MemBytes || mem.Size() != int64(man.MemoryMiB)<<20 {
		return fmt.Errorf("RAM file is %d bytes, the manifest says %d (%d MiB)", mem.Size(), man.MemBytes, man.MemoryMiB)
	}
	if st, ok := mem.Sys().(*syscall.Stat_t); ok && e.users.enabled && st.Gid != man.Group {
		return fmt.Errorf("RAM file belongs to group %d, the manifest says %d", st.Gid, man.Group)
	}
	size, sum, err := hashFile(filepath.Join(dir, man.StateFile))
	if err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	if size != man.StateBytes || sum != man.StateSHA256 {
		return fmt.Errorf("state file changed since it was saved (%d bytes, SHA-256 %.12s; saved %d bytes, %.12s)", size, sum, man.StateBytes, man.StateSHA256)
	}
	return nil
}

// snapshotOf describes the snapshot man commits in dir.
func snapshotOf(dir string, man *manifest) (*vm.Snapshot, error) {
	size := int64(0)
	for _, name := range []string{man.MemFile, man.StateFile, snapManifestName} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("snapshot in %s: %w", dir, err)
		}
		size += allocated(fi)
	}
	return &vm.Snapshot{Dir: dir, Key: man.Key, Created: man.Created, Size: size}, nil
}

// Restore starts a clone of snap as the VM spec describes (its own name,
// UID, uid, loopback ports and secrets), and returns once the clone has been
// re-keyed and answers its health check. On failure nothing of the clone is
// left; the error says which step failed.
func (e *Engine) Restore(ctx context.Context, snap *vm.Snapshot, spec *vm.Spec) (vm.Machine, error) {
	if spec == nil || spec.VM == nil {
		return nil, errors.New("restoring vm: spec has no VM object")
	}
	if snap == nil {
		return nil, fmt.Errorf("restoring vm %s: no snapshot", spec.VM.Name)
	}
	begin := time.Now()
	m, b, err := e.restore(ctx, snap, spec)
	if err != nil {
		return nil, fmt.Errorf("restoring vm %s from the snapshot in %s (boot it instead, and make a new snapshot): %w", spec.VM.Name, snap.Dir, err)
	}
	b.logStarted("vm restored", m, begin)
	return m, nil
}

func (e *Engine) restore(ctx context.Context, snap *vm.Snapshot, spec *vm.Spec) (*machine, *boot, error) {
	man, err := e.loadManifest(snap.Dir)
	if err != nil {
		return nil, nil, err
	}
	if man.Key != snap.Key || !man.Created.Equal(snap.Created) {
		return nil, nil, fmt.Errorf("the snapshot in %s was replaced since it was opened", snap.Dir)
	}
	if err := sameGuest(man, spec); err != nil {
		return nil, nil, err
	}
	mem, err := os.Open(filepath.Join(snap.Dir, man.MemFile))
	if err != nil {
		return nil, nil, fmt.Errorf("opening the RAM file: %w", err)
	}
	defer mem.Close()
	state, err := os.Open(filepath.Join(snap.Dir, man.StateFile))
	if err != nil {
		return nil, nil, fmt.Errorf("opening the state file: %w", err)
	}
	defer state.Close()

	b := e.newBoot(spec)
	b.mem, b.memGroup, b.incoming = mem, man.Group, state
	b.cmdLine, b.mac = man.CmdLine, man.MAC
	checkAccel := vm.Step{Name: "accel matches", Run: func(context.Context) error {
		if b.accel != man.Accel {
			return fmt.Errorf("the snapshot was made under %s, VMs now run under %s", man.Accel, b.accel)
		}
		return nil
	}}
	incoming := vm.Step{Name: "incoming", Timed: true, Run: b.incomingState}
	rekey := vm.Step{Name: "re-key", Timed: true, Run: func(ctx context.Context) error { return b.rekey(ctx, man.ControlSecret) }}
	if err := b.Run(ctx, b.steps([]vm.Step{checkAccel}, []vm.Step{incoming, rekey})); err != nil {
		return nil, nil, err
	}
	return newMachine(b), b, nil
}

// sameGuest reports how spec differs from the guest in the snapshot.
func sameGuest(man *manifest, spec *vm.Spec) error {
	digest, err := agentConfigDigest(&spec.Agent)
	if err != nil {
		return err
	}
	for _, d := range []struct {
		what      string
		snap, now any
	}{
		{"memory (MiB)", man.MemoryMiB, spec.VM.Spec.Memory.Bytes() >> 20},
		{"cpus", man.CPUs, spec.VM.Spec.CPUs},
		{"kernel", man.Kernel, spec.Kernel},
		{"initrd", man.Initrd, spec.Initrd},
		{"root filesystem", man.RootFS, spec.RootFS},
		{"code disk", man.Code, spec.Code},
		{"dependency disk", man.Deps, spec.Deps},
		{"egress", man.Egress, spec.Egress},
		{"agent config (digest)", man.AgentConfig, digest},
	} {
		if d.snap != d.now {
			return fmt.Errorf("the spec differs from the snapshot's guest in its %s (snapshot %v, spec %v)", d.what, d.snap, d.now)
		}
	}
	return nil
}

// incomingState loads the device state into the waiting QEMU; the guest
// is paused when it is in (it was when saved).
func (b *boot) incomingState(ctx context.Context) error {
	c, err := b.dialQMP(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.execute(ctx, "migrate-set-capabilities", ignoreSharedCap); err != nil {
		return err
	}
	if _, err := c.execute(ctx, "migrate-incoming", map[string]string{"uri": fmt.Sprintf("fd:%d", b.stateFD)}); err != nil {
		return err
	}
	err = b.waitMigration(ctx, c, "query-status", func(st string) (bool, error) {
		switch st {
		case "inmigrate":
			return false, nil
		case "paused", "postmigrate", "prelaunch", "running":
			return true, nil
		}
		return false, fmt.Errorf("QEMU is %s after loading the device state", st)
	})
	if err != nil {
		return err
	}
	if _, err := c.execute(ctx, "cont", nil); err != nil {
		return err
	}
	// The clone's slirp is new and does not know the guest's MAC: have the
	// guest announce itself now (gratuitous ARP) rather than when slirp's
	// first forwarded packet needs it. Best effort.
	if _, err := c.execute(ctx, "announce-self", map[string]int{"initial": 1, "max": 1, "rounds": 1, "step": 1}); err != nil {
		b.log.Debug("announce-self failed", "step", "incoming", "error", err)
	}
	return nil
}

// rekey makes the clone its own machine: POST /restore with the snapshot's
// control secret, carrying the spec's secrets, fresh entropy, the host's
// clock and the clone's identity. Until the guest's network answers, the
// request is retried.
func (b *boot) rekey(ctx context.Context, snapSecret string) error {
	entropy := make([]byte, protocol.RestoreEntropyBytes)
	if _, err := rand.Read(entropy); err != nil {
		return fmt.Errorf("drawing entropy for the clone: %w", err)
	}
	endpoint := fmt.Sprintf("127.0.0.1:%d", b.controlPort)
	tick := time.NewTicker(healthInterval)
	defer tick.Stop()
	begin := time.Now()
	for attempt := 1; ; attempt++ {
		req := &protocol.Restore{
			Secret: b.spec.Agent.Secret, ControlSecret: b.spec.Agent.ControlSecret, Entropy: entropy,
			TimeUnixNano: time.Now().UnixNano(), Name: b.spec.VM.Name, VMID: string(b.spec.VM.UID),
		}
		res, err := b.e.agents.Restore(ctx, endpoint, snapSecret, req)
		switch {
		case err == nil:
			if res.Hook != "" {
				b.log.Warn("the handler's restore hook failed; the clone serves anyway", "step", "re-key", "hook_error", res.Hook)
			}
			b.log.Debug("clone re-keyed", "step", "re-key", "clock_step_ms", res.ClockStepMs, "attempts", attempt, "took", time.Since(begin))
			return nil
		case errors.Is(err, vm.ErrSecretRefused) || strings.Contains(err.Error(), "restore answered"):
			return b.withConsole(err)
		}
		b.log.Debug("re-key attempt failed", "step", "re-key", "attempt", attempt, "error", err, "after", time.Since(begin))
		select {
		case <-b.qemu.done:
			return b.withConsole(b.qemu.exitError(b.path(qemuStderrName)))
		case <-ctx.Done():
			return b.withConsole(fmt.Errorf("re-keying the clone: %w (last: %v)", context.Cause(ctx), err))
		case <-tick.C:
		}
	}
}

// agentConfigDigest is the SHA-256 of c without its two secrets: what a
// clone's agent config must share with the snapshot's.
func agentConfigDigest(c *protocol.Config) (string, error) {
	cc := *c
	cc.Secret, cc.ControlSecret = "", ""
	js, err := json.Marshal(&cc)
	if err != nil {
		return "", fmt.Errorf("encoding agent config: %w", err)
	}
	sum := sha256.Sum256(js)
	return hex.EncodeToString(sum[:]), nil
}

// createMemFile creates the RAM file of a snapshot: size bytes (sparse),
// the engine's, readable and writable by group gid only (0 for none).
func createMemFile(path string, size int64, gid uint32) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating the RAM file: %w", err)
	}
	err = f.Truncate(size)
	if err == nil && gid != 0 {
		if err = f.Chown(-1, int(gid)); err == nil {
			err = f.Chmod(0o660)
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("preparing the RAM file: %w", err)
	}
	return f, nil
}

// removeStaleSnapshotFiles removes the RAM and state files in dir that man
// does not name (an earlier snapshot's; its running clones keep theirs
// open).
func removeStaleSnapshotFiles(e *Engine, dir string, man *manifest) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, en := range entries {
		n := en.Name()
		if n == man.MemFile || n == man.StateFile {
			continue
		}
		if (strings.HasPrefix(n, "mem-") && strings.HasSuffix(n, ".img")) || (strings.HasPrefix(n, "state-") && strings.HasSuffix(n, ".bin")) {
			if err := os.Remove(filepath.Join(dir, n)); err != nil {
				e.log.Warn("cannot remove an earlier snapshot's file", "file", filepath.Join(dir, n), "error", err)
			}
		}
	}
}

// safeFileName reports whether name is a plain file name.
func safeFileName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\x00")
}

// hashFile returns path's size and SHA-256 (hex).
func hashFile(path string) (int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", fmt.Errorf("reading %s: %w", path, err)
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// syncFile fsyncs the file at path and returns its size.
func syncFile(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// allocated is how many bytes fi takes on disk (a RAM file is sparse).
func allocated(fi os.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return fi.Size()
}

// writeFileAtomic writes data to path through a temporary file, fsynced and
// renamed over path, then fsyncs the directory. The file is 0600.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("drawing a random id: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// snapshotGroups hands out the groups that own snapshots' RAM files, one per
// snapshot dir, recorded under <StateDir>/snapshot-groups/<gid> (the file
// holds the dir), so a group stays its snapshot's across restarts. A
// group is free again once its dir is gone or names another group.
type snapshotGroups struct {
	mu sync.Mutex
}

// snapshotGroup returns the group of the snapshot dir (an existing one if
// dir had one) and the function that gives a new one back.
func (e *Engine) snapshotGroup(dir string) (uint32, func(), error) {
	e.snapGroups.mu.Lock()
	defer e.snapGroups.mu.Unlock()
	reg := filepath.Join(e.cfg.StateDir, "snapshot-groups")
	if err := os.MkdirAll(reg, 0o700); err != nil {
		return 0, nil, fmt.Errorf("creating the snapshot group registry: %w", err)
	}
	first, last := e.snapshotGroupRange()
	var free uint32
	for gid := first; gid <= last; gid++ {
		p := filepath.Join(reg, fmt.Sprint(gid))
		b, err := os.ReadFile(p)
		switch {
		case errors.Is(err, os.ErrNotExist):
			if free == 0 {
				free = gid
			}
			continue
		case err != nil:
			return 0, nil, fmt.Errorf("reading the snapshot group registry: %w", err)
		}
		owner := string(b)
		if owner == dir {
			return gid, func() {}, nil
		}
		if free == 0 && groupIsStale(owner, gid) {
			free = gid
		}
	}
	if free == 0 {
		return 0, nil, fmt.Errorf("all %d snapshot groups from %d are taken (delete unused snapshots)", last-first+1, first)
	}
	p := filepath.Join(reg, fmt.Sprint(free))
	if err := writeFileAtomic(p, []byte(dir)); err != nil {
		return 0, nil, fmt.Errorf("recording the snapshot group: %w", err)
	}
	return free, func() { os.Remove(p) }, nil
}

// groupIsStale reports whether the snapshot dir owner no longer uses gid:
// it is gone, or its manifest names another group. (A dir without a
// manifest may be a snapshot being made: it keeps its group.)
func groupIsStale(owner string, gid uint32) bool {
	if _, err := os.Stat(owner); errors.Is(err, os.ErrNotExist) {
		return true
	}
	js, err := os.ReadFile(filepath.Join(owner, snapManifestName))
	if err != nil {
		return false
	}
	var man manifest
	return json.Unmarshal(js, &man) == nil && man.Group != gid
}

// snapshotGroupRange is the gids snapshots' RAM files get: right after the
// two VM uid pools, as many as both pools hold.
func (e *Engine) snapshotGroupRange() (first, last uint32) {
	_, egr, _ := e.cfg.UIDPools()
	n := uint32(2 * e.cfg.UIDCount)
	return egr.Last + 1, egr.Last + n
}
