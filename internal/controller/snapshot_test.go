package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	meta "github.com/weaveworks/ignite/pkg/apis/meta/v1alpha1"

	"github.com/faasvm/appliance/guest/protocol"
	"github.com/faasvm/appliance/internal/function"
	"github.com/faasvm/appliance/internal/vm"
)

// fakeSnapEngine is a fakeEngine that can snapshot: boots are slow (hold),
// restores fast. A snapshot is a manifest file in its dir naming the key
// and the guest it was made of.
type fakeSnapEngine struct {
	fakeEngine
	key string // SnapshotKey

	smu         sync.Mutex
	snapshots   int                                   // Snapshot calls
	restores    int                                   // successful Restore calls
	warmed      int                                   // warm-up requests with the builder VM's secret
	mismatch    []string                              // restores whose spec is not the snapshot's guest
	restoreFail func(snap *vm.Snapshot) error         // non-nil: restores fail with it
	snapFail    error                                 // non-nil: Snapshot fails with it
	restored    map[string]bool                       // machine id → started by Restore
	onSnapshot  func(ctx context.Context, dir string) // runs in Snapshot before it saves
}

var _ vm.Snapshotter = (*fakeSnapEngine)(nil)

type fakeManifest struct {
	Key  string `json:"key"`
	Code string `json:"code"`
	Mem  uint64 `json:"mem"`
}

func newFakeSnapEngine() *fakeSnapEngine {
	e := &fakeSnapEngine{key: "fake-engine 1", restored: map[string]bool{}}
	e.hold = func(ctx context.Context, spec *vm.Spec) error {
		select { // a boot takes a while; a restore does not
		case <-time.After(30 * time.Millisecond):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return e
}

func (e *fakeSnapEngine) SnapshotKey() string {
	e.smu.Lock()
	defer e.smu.Unlock()
	return e.key
}

func (e *fakeSnapEngine) Snapshot(ctx context.Context, spec *vm.Spec, dir string, warm func(context.Context, vm.Machine) error) (*vm.Snapshot, error) {
	e.smu.Lock()
	e.snapshots++
	fail, hook := e.snapFail, e.onSnapshot
	e.smu.Unlock()
	if fail != nil {
		return nil, fail
	}
	m, err := e.fakeEngine.Start(ctx, spec)
	if err != nil {
		return nil, err
	}
	defer m.Stop(ctx)
	if warm != nil {
		// The warm-up request goes to a loopback server standing in for
		// the builder VM's agent.
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get(protocol.SecretHeader) == spec.Agent.Secret && r.UserAgent() == warmUserAgent {
				e.smu.Lock()
				e.warmed++
				e.smu.Unlock()
			}
			w.WriteHeader(http.StatusNoContent)
		}))
		defer srv.Close()
		if err := warm(ctx, endpointMachine{m, srv.Listener.Addr().String()}); err != nil {
			return nil, err
		}
	}
	if hook != nil {
		hook(ctx, dir)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	js, _ := json.Marshal(fakeManifest{Key: spec.VM.GetAnnotation(vm.SnapshotKeyAnnotation), Code: spec.Code, Mem: spec.VM.Spec.Memory.Bytes()})
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), js, 0o600); err != nil {
		return nil, err
	}
	return &vm.Snapshot{Dir: dir, Key: spec.VM.GetAnnotation(vm.SnapshotKeyAnnotation), Created: time.Now(), Size: int64(len(js))}, nil
}

func (e *fakeSnapEngine) Open(dir, key string) (*vm.Snapshot, error) {
	js, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return nil, fmt.Errorf("opening snapshot: %w", err)
	}
	var man fakeManifest
	if err := json.Unmarshal(js, &man); err != nil {
		return nil, fmt.Errorf("snapshot damaged: %w", err)
	}
	if man.Key != key {
		return nil, fmt.Errorf("snapshot made for key %q, not %q", man.Key, key)
	}
	fi, _ := os.Stat(filepath.Join(dir, "manifest.json"))
	return &vm.Snapshot{Dir: dir, Key: key, Created: fi.ModTime(), Size: fi.Size()}, nil
}

func (e *fakeSnapEngine) Restore(ctx context.Context, snap *vm.Snapshot, spec *vm.Spec) (vm.Machine, error) {
	e.smu.Lock()
	fail := e.restoreFail
	e.smu.Unlock()
	if fail != nil {
		if err := fail(snap); err != nil {
			return nil, err
		}
	}
	js, err := os.ReadFile(filepath.Join(snap.Dir, "manifest.json"))
	if err != nil {
		return nil, err
	}
	var man fakeManifest
	_ = json.Unmarshal(js, &man)
	e.smu.Lock()
	defer e.smu.Unlock()
	if man.Code != spec.Code || man.Mem != spec.VM.Spec.Memory.Bytes() {
		e.mismatch = append(e.mismatch, fmt.Sprintf("snapshot of %s restored as %s", man.Code, spec.Code))
	}
	e.fakeEngine.mu.Lock()
	m := &fakeMachine{id: string(spec.VM.UID), spec: spec, exit: make(chan error, 1), stopped: make(chan struct{})}
	e.machines = append(e.machines, m)
	e.fakeEngine.mu.Unlock()
	e.restores++
	e.restored[m.id] = true
	return m, nil
}

func (e *fakeSnapEngine) counts() (snapshots, restores, warmed int) {
	e.smu.Lock()
	defer e.smu.Unlock()
	return e.snapshots, e.restores, e.warmed
}

// endpointMachine is a machine whose data endpoint is addr.
type endpointMachine struct {
	vm.Machine
	addr string
}

func (m endpointMachine) Endpoint() string { return m.addr }

// fileImages are disks that exist: the key reads them. The code disk is
// named by the folder's content, like the real cache's.
type fileImages struct{ dir string }

func (i fileImages) RootFS(ctx context.Context, runtime, image string) (string, error) {
	p := filepath.Join(i.dir, "rootfs-"+runtime+".ext4")
	if _, err := os.Stat(p); err != nil {
		return p, os.WriteFile(p, []byte("rootfs "+runtime), 0o644)
	}
	return p, nil
}

func (i fileImages) CodeDisk(ctx context.Context, src string) (string, error) {
	h := sha256.New()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(src, p)
		fmt.Fprintf(h, "%s %x\n", rel, sha256.Sum256(b))
		return err
	})
	if err != nil {
		return "", err
	}
	p := filepath.Join(i.dir, "code-"+hex.EncodeToString(h.Sum(nil))[:16]+".ext4")
	if _, err := os.Stat(p); err != nil {
		return p, os.WriteFile(p, []byte("code"), 0o644)
	}
	return p, nil
}

// snapRecorder is a fakeRecorder that also records snapshots and PSS.
type snapRecorder struct {
	*fakeRecorder
	smu      sync.Mutex
	methods  map[string]int // start method → VMs
	failures map[string]int // reason → restores failed
	saved    map[string]int64
}

var _ SnapshotRecorder = (*snapRecorder)(nil)

func newSnapRecorder() *snapRecorder {
	return &snapRecorder{fakeRecorder: newFakeRecorder(), methods: map[string]int{}, failures: map[string]int{}, saved: map[string]int64{}}
}

func (r *snapRecorder) VMStarted(fn, method string, took time.Duration) {
	r.fakeRecorder.VMStarted(fn, method, took)
	r.smu.Lock()
	defer r.smu.Unlock()
	r.methods[method]++
}
func (r *snapRecorder) SnapshotRestoreFailed(fn, reason string) {
	r.smu.Lock()
	defer r.smu.Unlock()
	r.failures[reason]++
}
func (r *snapRecorder) SnapshotSaved(fn string, bytes int64, created time.Time) {
	r.smu.Lock()
	defer r.smu.Unlock()
	r.saved[fn] = bytes
}
func (r *snapRecorder) SnapshotGone(fn string) {
	r.smu.Lock()
	defer r.smu.Unlock()
	delete(r.saved, fn)
}
func (r *snapRecorder) InstancePSS(fn, instance string, bytes int64) {}
func (r *snapRecorder) InstanceGone(fn, instance string)             {}

func (r *snapRecorder) method(m string) int {
	r.smu.Lock()
	defer r.smu.Unlock()
	return r.methods[m]
}

func (r *snapRecorder) failed(reason string) int {
	r.smu.Lock()
	defer r.smu.Unlock()
	return r.failures[reason]
}

// newSnapController is a test controller with snapshots in snapDir.
func newSnapController(t *testing.T, e vm.Engine, snapDir string, tune ...func(*Options)) (*Controller, string) {
	t.Helper()
	dir := t.TempDir()
	disks := t.TempDir()
	opts := Options{
		FunctionsDir: dir,
		SnapshotsDir: snapDir,
		Defaults: function.Defaults{
			Timeout: 5 * time.Second, MinReplicas: 1, MaxReplicas: 1, Concurrency: 2,
			IdleTimeout: time.Minute, TargetUtilization: 0.7, MaxSize: 1 << 20,
		},
		Template:     vm.NewVM("template"),
		DrainTimeout: 5 * time.Second,
		MaxBackoff:   10 * time.Millisecond,
		QueueSize:    4,
		Prober:       &fakeProber{},
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, f := range tune {
		f(&opts)
	}
	c := New(opts, e, fileImages{disks})
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c, dir
}

// starts counts f's instances by how they started.
func starts(s Status) map[string]int {
	out := map[string]int{}
	for _, in := range s.Instances {
		out[in.Start]++
	}
	return out
}

func snapReady(s Status) bool { return s.Snapshot != nil && s.Snapshot.State == SnapReady }

func TestSnapshotRestoreOnEveryStart(t *testing.T) {
	e := newFakeSnapEngine()
	rec := newSnapRecorder()
	prober := &fakeProber{}
	c, dir := newSnapController(t, e, t.TempDir(), func(o *Options) {
		o.Metrics = rec
		o.Prober = prober
		o.HealthInterval = 5 * time.Millisecond
	})

	// A deploy of three: the first boots, the others restore.
	writeScaled(t, dir, "wide", "mode: http\nminReplicas: 3\nmaxReplicas: 4\nconcurrency: 1\ntargetUtilization: 1\n")
	c.Sync("wide")
	s := waitState(t, c, "wide", func(s Status) bool { return s.Replicas.Ready == 3 })
	if got := starts(s); got[StartBoot] != 1 || got[StartRestore] != 2 {
		t.Fatalf("deploy of 3: got starts %v, want 1 boot and 2 restores", got)
	}
	if !snapReady(s) || s.Snapshot.Key == "" || s.Snapshot.SizeBytes <= 0 || s.Snapshot.CreatedAt.IsZero() {
		t.Fatalf("snapshot after the deploy: %+v", s.Snapshot)
	}
	bootSeconds := 0.0
	for _, in := range s.Instances {
		if in.Start == StartBoot {
			bootSeconds = in.StartSeconds
		}
	}
	for _, in := range s.Instances {
		if in.Start == StartRestore && (in.StartSeconds <= 0 || in.StartSeconds >= bootSeconds) {
			t.Errorf("restore took %.3fs, the boot %.3fs: want the restore's (shorter) time", in.StartSeconds, bootSeconds)
		}
		if in.ID == "" || in.State != instReady || in.StartedAt.IsZero() || in.Version != s.Version {
			t.Errorf("instance status %+v", in)
		}
	}
	if _, _, warmed := e.counts(); warmed != 1 {
		t.Errorf("warm-up requests with the builder's secret: got %d, want 1 (http mode)", warmed)
	}

	// Replacement of a crashed VM.
	var victim *fakeMachine
	for _, m := range e.running() {
		victim = m
	}
	victim.crash()
	waitState(t, c, "wide", func(s Status) bool {
		for _, in := range s.Instances {
			if in.ID == victim.id {
				return false
			}
		}
		return s.Replicas.Ready >= 3 && rec.method(StartRestore) >= 3
	})

	// Replacement of an unhealthy VM.
	before := rec.method(StartRestore)
	sick := e.running()[0]
	prober.setSick(sick.ControlEndpoint())
	waitState(t, c, "wide", func(s Status) bool { return rec.method(StartRestore) > before })

	// Scale-out: a fourth request at once.
	ls := leases(t, c, "wide", 4)
	for _, l := range ls {
		l.Release(200)
	}
	s = waitState(t, c, "wide", func(s Status) bool { return s.Replicas.Ready == 4 })
	if got := starts(s); got[StartBoot] > 1 || got[StartRestore] < 3 {
		t.Errorf("after scale-out: got starts %v, want every instance but the deploy's first restored", got)
	}

	if got := rec.method(StartBoot); got != 1 {
		t.Errorf("boots recorded: got %d, want 1 (only the deploy's first)", got)
	}
	if snaps, _, _ := e.counts(); snaps != 1 {
		t.Errorf("snapshots made: got %d, want 1 (one per version)", snaps)
	}
	if len(e.mismatch) != 0 {
		t.Errorf("restores of another guest: %v", e.mismatch)
	}
}

func TestSnapshotRestoreFromZero(t *testing.T) {
	e := newFakeSnapEngine()
	rec := newSnapRecorder()
	c, dir := newSnapController(t, e, t.TempDir(), noTicks, func(o *Options) { o.Metrics = rec })
	writeScaled(t, dir, "lazy", "minReplicas: 0\nidleTimeout: 1s\n")
	c.Sync("lazy")
	s := waitState(t, c, "lazy", func(s Status) bool { return s.Replicas.Ready == 1 && snapReady(s) })
	if got := starts(s); got[StartBoot] != 1 {
		t.Fatalf("first instance: got %v, want a boot", got)
	}
	tick(c, "lazy", time.Now().Add(time.Second))
	waitState(t, c, "lazy", func(s Status) bool { return s.State == StateIdle && len(s.Instances) == 0 })
	in, err := acquire(t, c, "lazy")
	if err != nil {
		t.Fatal(err)
	}
	in.Release(200)
	s, _ = c.Get(context.Background(), "lazy")
	if got := starts(s); got[StartRestore] != 1 || len(s.Instances) != 1 {
		t.Errorf("from zero: got starts %v, want one restore", got)
	}
	if !e.restored[in.VMID] {
		t.Errorf("the request went to %s, not a restored VM", in.VMID)
	}
	if got := rec.method(StartRestore); got != 1 {
		t.Errorf("restores recorded: %d, want 1", got)
	}
}

func TestRestoreFailureFallsBackToBoot(t *testing.T) {
	tests := []struct {
		name   string
		breakS func(t *testing.T, e *fakeSnapEngine, dir string)
		reason string
	}{
		{"snapshot file deleted", func(t *testing.T, e *fakeSnapEngine, dir string) {
			if err := os.Remove(filepath.Join(dir, "manifest.json")); err != nil {
				t.Fatal(err)
			}
		}, RestoreCorrupt},
		{"snapshot file corrupted", func(t *testing.T, e *fakeSnapEngine, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "manifest.json"), []byte("{garbage"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, RestoreCorrupt},
		{"engine refuses", func(t *testing.T, e *fakeSnapEngine, dir string) {
			e.smu.Lock()
			defer e.smu.Unlock()
			once := false
			e.restoreFail = func(*vm.Snapshot) error {
				if once {
					return nil
				}
				once = true
				return errors.New("qemu: load of migration failed")
			}
		}, RestoreEngine},
		{"restore hangs", func(t *testing.T, e *fakeSnapEngine, dir string) {
			e.smu.Lock()
			defer e.smu.Unlock()
			once := false
			e.restoreFail = func(*vm.Snapshot) error {
				if once {
					return nil
				}
				once = true
				time.Sleep(60 * time.Millisecond) // past BootTimeout
				return fmt.Errorf("re-keying the clone: %w", context.DeadlineExceeded)
			}
		}, RestoreTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newFakeSnapEngine()
			rec := newSnapRecorder()
			c, dir := newSnapController(t, e, t.TempDir(), noTicks, func(o *Options) {
				o.Metrics = rec
				o.BootTimeout = 50 * time.Millisecond
			})
			writeScaled(t, dir, "fn", "minReplicas: 0\nidleTimeout: 1s\n")
			c.Sync("fn")
			waitState(t, c, "fn", func(s Status) bool { return s.Replicas.Ready == 1 && snapReady(s) })
			tick(c, "fn", time.Now().Add(time.Second))
			waitState(t, c, "fn", func(s Status) bool { return len(s.Instances) == 0 })
			c.mu.Lock()
			st := c.fns["fn"].snaps[c.fns["fn"].spec.Digest]
			snapDir := st.dir
			c.mu.Unlock()
			tt.breakS(t, e, snapDir)

			in, err := acquire(t, c, "fn")
			if err != nil {
				t.Fatalf("request after the snapshot broke: %v (want a boot instead)", err)
			}
			in.Release(200)
			s, _ := c.Get(context.Background(), "fn")
			if got := starts(s); got[StartBoot] != 1 || len(s.Instances) != 1 {
				t.Errorf("after a failed restore: got starts %v, want one boot", got)
			}
			if got := rec.failed(tt.reason); got != 1 {
				t.Errorf("restore failures with reason %s: got %d, want 1 (all: %v)", tt.reason, got, rec.failures)
			}
			// The snapshot is made again, and the next start restores.
			s = waitState(t, c, "fn", snapReady)
			if snaps, _, _ := e.counts(); snaps != 2 {
				t.Errorf("snapshots made: got %d, want 2 (the rebuild)", snaps)
			}
			if s.Snapshot.LastError != "" {
				t.Errorf("snapshot status after the rebuild still has an error: %q", s.Snapshot.LastError)
			}
			tick(c, "fn", time.Now().Add(2*time.Second))
			waitState(t, c, "fn", func(s Status) bool { return len(s.Instances) == 0 })
			in, err = acquire(t, c, "fn")
			if err != nil {
				t.Fatal(err)
			}
			in.Release(200)
			if !e.restored[in.VMID] {
				t.Errorf("after the rebuild the instance was not restored")
			}
		})
	}
}

func TestSnapshotBuildFailureKeepsBooting(t *testing.T) {
	e := newFakeSnapEngine()
	e.snapFail = errors.New("no space left on device")
	c, dir := newSnapController(t, e, t.TempDir(), noTicks)
	writeScaled(t, dir, "fn", "minReplicas: 2\nmaxReplicas: 2\n")
	c.Sync("fn")
	s := waitState(t, c, "fn", func(s Status) bool {
		return s.Replicas.Ready == 2 && s.Snapshot != nil && s.Snapshot.State == SnapFailed
	})
	if got := starts(s); got[StartBoot] != 2 {
		t.Errorf("without a snapshot: got starts %v, want 2 boots", got)
	}
	if s.Snapshot.LastError == "" {
		t.Errorf("failed snapshot without its error: %+v", s.Snapshot)
	}
	if snaps, _, _ := e.counts(); snaps != 1 {
		t.Errorf("snapshot attempts: got %d, want 1 (the next waits for a backoff)", snaps)
	}
}

func TestSnapshotInvalidatedByCodeEdit(t *testing.T) {
	e := newFakeSnapEngine()
	snapDir := t.TempDir()
	c, dir := newSnapController(t, e, snapDir, noTicks)
	writeScaled(t, dir, "fn", "maxReplicas: 2\n")
	c.Sync("fn")
	s1 := waitState(t, c, "fn", snapReady)
	writeFunction(t, dir, "fn", "print('v2')\n")
	c.Sync("fn")
	s2 := waitState(t, c, "fn", func(s Status) bool { return s.Version != s1.Version && snapReady(s) })
	if s2.Snapshot.Key == s1.Snapshot.Key {
		t.Fatalf("code edit kept the snapshot key %s", s1.Snapshot.Key)
	}
	for _, in := range s2.Instances {
		if in.Version == s2.Version && in.Start != StartBoot {
			t.Errorf("the new version's first instance started by %s, want a boot (never the old memory)", in.Start)
		}
	}
	// Only the new key's directory is left.
	eventually(t, "old snapshot deleted", func() bool {
		ents, _ := os.ReadDir(filepath.Join(snapDir, "fn"))
		return len(ents) == 1 && ents[0].Name() == keyDirOf(t, c, "fn")
	})
	// The next instance restores the new version's snapshot, of the new code.
	l := leases(t, c, "fn", 3)
	for _, x := range l {
		x.Release(200)
	}
	if len(e.mismatch) != 0 {
		t.Errorf("restores of another version's memory: %v", e.mismatch)
	}
	if _, restores, _ := e.counts(); restores == 0 {
		t.Errorf("the scale-out after the edit did not restore")
	}
}

func keyDirOf(t *testing.T, c *Controller, name string) string {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.fns[name]
	return filepath.Base(f.snaps[f.spec.Digest].dir)
}

func TestSnapshotKey(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	kernel, initrd := write("vmlinux", "kernel"), write("initrd", "agent v1")
	rootfs, code, code2, deps := write("rootfs", "r"), write("code", "c"), write("code2", "c2"), write("deps", "d")
	base := func() (*function.Spec, disks) {
		v := vm.NewVM("fn")
		v.Spec.CPUs = 1
		v.Spec.Memory = mustSize(t, "256MB")
		return &function.Spec{VM: v, Mode: protocol.ModeHTTP, Runtime: "python3", Handler: "handler.handle", Timeout: time.Second, Env: map[string]string{"A": "1"}},
			disks{rootfs: rootfs, code: code, secrets: map[string][]byte{"token": []byte("s1")}}
	}
	c := &Controller{opts: Options{Kernel: kernel, Initrd: initrd}}
	key := func(spec *function.Spec, d disks, engine string) string {
		k, err := c.snapshotKey("fn", spec, d, engine)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	spec, d := base()
	k0 := key(spec, d, "qemu 8; tcg")
	if again := key(spec, d, "qemu 8; tcg"); again != k0 {
		t.Fatalf("key not stable: %s then %s", k0, again)
	}
	for _, tt := range []struct {
		name   string
		change func(s *function.Spec, d *disks, engine *string)
	}{
		{"code disk", func(s *function.Spec, d *disks, _ *string) { d.code = code2 }},
		{"dependency disk", func(s *function.Spec, d *disks, _ *string) { d.deps = deps }},
		{"memory", func(s *function.Spec, d *disks, _ *string) { s.VM.Spec.Memory = mustSize(t, "512MB") }},
		{"cpus", func(s *function.Spec, d *disks, _ *string) { s.VM.Spec.CPUs = 2 }},
		{"mode", func(s *function.Spec, d *disks, _ *string) { s.Mode = protocol.ModeExec }},
		{"handler", func(s *function.Spec, d *disks, _ *string) { s.Handler = "other.handle" }},
		{"env", func(s *function.Spec, d *disks, _ *string) { s.Env = map[string]string{"A": "2"} }},
		{"operator secret", func(s *function.Spec, d *disks, _ *string) { d.secrets = map[string][]byte{"token": []byte("s2")} }},
		{"egress", func(s *function.Spec, d *disks, _ *string) { s.Egress = true }},
		{"engine", func(s *function.Spec, d *disks, e *string) { *e = "qemu 9; tcg" }},
		{"accelerator", func(s *function.Spec, d *disks, e *string) { *e = "qemu 8; kvm" }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			spec, d := base()
			engine := "qemu 8; tcg"
			tt.change(spec, &d, &engine)
			if k := key(spec, d, engine); k == k0 {
				t.Errorf("changing the %s kept the key", tt.name)
			}
		})
	}
	t.Run("agent build (initramfs content)", func(t *testing.T) {
		time.Sleep(10 * time.Millisecond) // a new mtime
		write("initrd", "agent v2")
		spec, d := base()
		if k := key(spec, d, "qemu 8; tcg"); k == k0 {
			t.Errorf("a new agent build kept the key")
		}
	})
	t.Run("missing disk", func(t *testing.T) {
		spec, d := base()
		d.code = filepath.Join(dir, "nope")
		if _, err := c.snapshotKey("fn", spec, d, "x"); err == nil {
			t.Errorf("no error for a missing code disk")
		}
	})
}

func mustSize(t *testing.T, s string) meta.Size {
	t.Helper()
	size, err := meta.NewSizeFromString(s)
	if err != nil {
		t.Fatal(err)
	}
	return size
}

func TestSnapshotReusedAcrossRestartAndPruned(t *testing.T) {
	snapDir := t.TempDir()
	// Leftovers: another key of fn, and a function that is gone.
	for _, d := range []string{"fn/0123456789abcdef0123456789abcdef", "gone/0123456789abcdef0123456789abcdef"} {
		if err := os.MkdirAll(filepath.Join(snapDir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	e := newFakeSnapEngine()
	c1, dir := newSnapController(t, e, snapDir, noTicks)
	writeScaled(t, dir, "fn", "maxReplicas: 2\n")
	c1.Sync("fn")
	s1 := waitState(t, c1, "fn", snapReady)
	eventually(t, "other key deleted", func() bool {
		_, err := os.Stat(filepath.Join(snapDir, "fn/0123456789abcdef0123456789abcdef"))
		return errors.Is(err, os.ErrNotExist)
	})
	deleted, err := c1.PruneSnapshots()
	if err != nil || len(deleted) != 1 || deleted[0] != filepath.Join(snapDir, "gone") {
		t.Errorf("PruneSnapshots: got %v, %v; want the gone function's dir", deleted, err)
	}
	if err := c1.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	// The same appliance again: the snapshot is reused, the first
	// instance restores and nothing is built.
	e2 := newFakeSnapEngine()
	c2 := New(c1.opts, e2, c1.images)
	t.Cleanup(func() { _ = c2.Close(context.Background()) })
	c2.Sync("fn")
	s2 := waitState(t, c2, "fn", func(s Status) bool { return s.Replicas.Ready == 1 })
	if got := starts(s2); got[StartRestore] != 1 {
		t.Errorf("after a restart: got starts %v, want the first instance restored", got)
	}
	if snaps, _, _ := e2.counts(); snaps != 0 || s2.Snapshot.Key != s1.Snapshot.Key {
		t.Errorf("after a restart: %d snapshots made, key %s (was %s); want the old one reused", snaps, s2.Snapshot.Key, s1.Snapshot.Key)
	}
	if err := c2.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	// Another QEMU: the old snapshot is not used, a new one is made and the
	// old one deleted.
	e3 := newFakeSnapEngine()
	e3.key = "fake-engine 2"
	c3 := New(c1.opts, e3, c1.images)
	t.Cleanup(func() { _ = c3.Close(context.Background()) })
	c3.Sync("fn")
	s3 := waitState(t, c3, "fn", func(s Status) bool { return s.Replicas.Ready == 1 && snapReady(s) })
	if got := starts(s3); got[StartBoot] != 1 || s3.Snapshot.Key == s1.Snapshot.Key {
		t.Errorf("under another engine key: starts %v, key %s; want a boot and a new key", got, s3.Snapshot.Key)
	}
	eventually(t, "old key's snapshot deleted", func() bool {
		ents, _ := os.ReadDir(filepath.Join(snapDir, "fn"))
		return len(ents) == 1
	})

	// Removing the function deletes its snapshots.
	if err := os.RemoveAll(filepath.Join(dir, "fn")); err != nil {
		t.Fatal(err)
	}
	c3.Sync("fn")
	eventually(t, "removed function's snapshots deleted", func() bool {
		_, err := os.Stat(filepath.Join(snapDir, "fn"))
		return errors.Is(err, os.ErrNotExist)
	})
}

func TestNoSnapshotterKeepsBooting(t *testing.T) {
	e := &fakeEngine{}
	rec := newSnapRecorder()
	snapDir := t.TempDir()
	c, dir := newSnapController(t, e, snapDir, noTicks, func(o *Options) { o.Metrics = rec })
	writeScaled(t, dir, "fn", "minReplicas: 2\nmaxReplicas: 2\n")
	c.Sync("fn")
	s := waitState(t, c, "fn", func(s Status) bool { return s.Replicas.Ready == 2 })
	if got := starts(s); got[StartBoot] != 2 {
		t.Errorf("got starts %v, want 2 boots", got)
	}
	if s.Snapshot == nil || s.Snapshot.State != SnapUnsupported {
		t.Errorf("snapshot status: %+v, want unsupported", s.Snapshot)
	}
	if ents, _ := os.ReadDir(snapDir); len(ents) != 0 {
		t.Errorf("snapshot dir written without a snapshotter: %v", ents)
	}
	if got := rec.method(StartBoot); got != 2 {
		t.Errorf("boots recorded: %d, want 2", got)
	}
}

func TestStatusJSONInstances(t *testing.T) {
	s := Status{Instances: []InstanceStatus{{ID: "a", State: instReady, Start: StartRestore, StartSeconds: 0.04, PSSBytes: 5}}, Snapshot: &SnapshotStatus{State: SnapReady, Key: "abc"}}
	js, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	_ = json.Unmarshal(js, &back)
	ins := back["instances"].([]any)[0].(map[string]any)
	keys := make([]string, 0, len(ins))
	for k := range ins {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, want := range []string{"id", "state", "start", "startSeconds", "pssBytes"} {
		if _, ok := ins[want]; !ok {
			t.Errorf("instance JSON lacks %q (has %v)", want, keys)
		}
	}
	snap := back["snapshot"].(map[string]any)
	for _, want := range []string{"key", "sizeBytes", "state"} {
		if _, ok := snap[want]; !ok {
			t.Errorf("snapshot JSON lacks %q: %s", want, js)
		}
	}
}

func TestRemovalCancelsSnapshotBuild(t *testing.T) {
	e := newFakeSnapEngine()
	started := make(chan struct{})
	var once sync.Once
	e.onSnapshot = func(ctx context.Context, dir string) {
		once.Do(func() { close(started) })
		<-ctx.Done() // a build that would take long
	}
	snapDir := t.TempDir()
	c, dir := newSnapController(t, e, snapDir, noTicks)
	writeScaled(t, dir, "fn", "maxReplicas: 2\n")
	c.Sync("fn")
	waitState(t, c, "fn", func(s Status) bool { return s.Snapshot != nil && s.Snapshot.State == SnapBuilding })
	<-started
	if err := os.RemoveAll(filepath.Join(dir, "fn")); err != nil {
		t.Fatal(err)
	}
	c.Sync("fn")
	eventually(t, "function gone", func() bool { _, err := c.Get(context.Background(), "fn"); return errors.Is(err, ErrNotFound) })
	// The build ends at once (not after its minutes-long bound), and
	// leaves nothing behind.
	eventually(t, "build cancelled and its dir deleted", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		_, err := os.Stat(filepath.Join(snapDir, "fn"))
		return errors.Is(err, os.ErrNotExist) && len(e.running()) == 0
	})
}
