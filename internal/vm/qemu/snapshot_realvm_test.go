package qemu_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	meta "github.com/weaveworks/ignite/pkg/apis/meta/v1alpha1"

	"github.com/faasvm/appliance/guest/protocol"
	"github.com/faasvm/appliance/internal/vm"
	"github.com/faasvm/appliance/internal/vm/qemu"
	"github.com/faasvm/appliance/internal/vmtest"
)

// pyCounter keeps a counter in memory and reports it with what a clone must
// not share with its siblings: kernel random bytes, Python's random, the
// clock.
const pyCounter = `import json, os, random, time
count = 0
restored = []
def on_restore(info):
    restored.append(info["vmId"])
def handle(req):
    global count
    count += 1
    return {"statusCode": 200, "body": json.dumps({"count": count, "urandom": os.urandom(16).hex(),
            "random": random.random(), "time": time.time(), "restored": restored})}
`

// nodeCounter: a Node clone runs a fresh bootstrap (its random state cannot
// be reseeded), so its counter starts again.
const nodeCounter = `let count = 0;
module.exports = async () => ({ statusCode: 200, body: JSON.stringify({ count: ++count,
  random: require("node:crypto").randomBytes(16).toString("hex") }) });
`

type counterReply struct {
	Count    int      `json:"count"`
	URandom  string   `json:"urandom"`
	Random   any      `json:"random"`
	Time     float64  `json:"time"`
	Restored []string `json:"restored"`
}

// snapSpec returns the spec of fc with the snapshot key set.
func (h *harness) snapSpec(t *testing.T, fc fnCase, key string) *vm.Spec {
	s := h.spec(t, fc, false)
	s.VM.SetAnnotation(vm.SnapshotKeyAnnotation, key)
	return s
}

// cloneSpec is spec for a new VM of the same guest: its own name, UID and
// secrets.
func cloneSpec(spec *vm.Spec, n int) *vm.Spec {
	c := *spec
	c.VM = vm.NewVM(spec.VM.Name + "-clone" + strconv.Itoa(n))
	c.VM.Spec.Memory = spec.VM.Spec.Memory
	c.VM.Spec.CPUs = spec.VM.Spec.CPUs
	c.Agent.Secret = spec.Agent.Secret + "-clone" + strconv.Itoa(n)
	c.Agent.ControlSecret = spec.Agent.ControlSecret + "-clone" + strconv.Itoa(n)
	return &c
}

func (h *harness) snapshot(t *testing.T, spec *vm.Spec, dir string, warm func(ctx context.Context, m vm.Machine) error) *vm.Snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	snap, err := h.engine.Snapshot(ctx, spec, dir, warm)
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	return snap
}

func (h *harness) restore(t *testing.T, snap *vm.Snapshot, spec *vm.Spec) vm.Machine {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	m, err := h.engine.Restore(ctx, snap, spec)
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	t.Cleanup(func() { _ = m.Stop(context.Background()) })
	return m
}

// warmCalls returns a warm function that calls the handler n times.
func warmCalls(t *testing.T, secret string, n int) func(ctx context.Context, m vm.Machine) error {
	return func(ctx context.Context, m vm.Machine) error {
		for range n {
			if r := call(t, m, secret, "GET", "/warm", "", nil); r.status != http.StatusOK {
				t.Errorf("warm-up call: got %d %q", r.status, r.body)
			}
		}
		return nil
	}
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// snapFiles returns the RAM and state file of the snapshot in dir.
func snapFiles(t *testing.T, dir string) (mem, state string) {
	t.Helper()
	var man struct{ MemFile, StateFile string }
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil || json.Unmarshal(b, &man) != nil || man.MemFile == "" {
		t.Fatalf("reading the manifest: %v %s", err, b)
	}
	return filepath.Join(dir, man.MemFile), filepath.Join(dir, man.StateFile)
}

// TestSnapshotRestore snapshots a warmed http-mode python function with a
// counter, restores two clones and checks each is a machine of its own
// that starts from the snapshot's state; then exec mode and node; then
// that a damaged snapshot is refused without leaving anything behind.
func TestSnapshotRestore(t *testing.T) {
	h := newHarness(t)
	fc := fnCase{name: "py-count", runtime: "python3", mode: protocol.ModeHTTP, handler: "handler.py", code: pyCounter}
	spec := h.snapSpec(t, fc, "key-1")
	dir := filepath.Join(h.state, "snaps", "py")
	snap := h.snapshot(t, spec, dir, warmCalls(t, spec.Agent.Secret, 2))
	if snap.Key != "key-1" || snap.Size <= 0 || time.Since(snap.Created) > time.Minute {
		t.Errorf("snapshot: got %+v, want key key-1, a size and a fresh creation time", snap)
	}
	if pids := vmtest.ProcessesWith(filepath.Join(h.state, "vms", string(spec.VM.UID))); len(pids) != 0 {
		t.Errorf("the snapshot's VM still runs: %v", pids)
	}
	memPath, statePath := snapFiles(t, dir)
	memSum := sha256File(t, memPath)

	t.Run("open", func(t *testing.T) {
		if _, err := h.engine.Open(dir, "key-2"); err == nil || !strings.Contains(err.Error(), `made for key "key-1"`) {
			t.Errorf("Open with another key: got %v, want a refusal naming the key", err)
		}
		got, err := h.engine.Open(dir, "key-1")
		if err != nil || got.Key != "key-1" || !got.Created.Equal(snap.Created) || got.Size != snap.Size {
			t.Errorf("Open: got %+v, %v; want %+v", got, err, snap)
		}
	})

	t.Run("ram file permissions", func(t *testing.T) {
		fi, err := os.Stat(memPath)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != 0o660 || st.Uid != 0 || st.Gid < qemu.DefaultUIDBase+2*qemu.DefaultUIDCount {
			t.Errorf("RAM file: mode %v uid %d gid %d; want 0660, root, a snapshot group past the VM uids", fi.Mode().Perm(), st.Uid, st.Gid)
		}
		if di, err := os.Stat(dir); err != nil || di.Mode().Perm() != 0o700 {
			t.Errorf("snapshot dir mode: %v (%v), want 0700", di.Mode().Perm(), err)
		}
	})

	clones := []*vm.Spec{cloneSpec(spec, 1), cloneSpec(spec, 2)}
	machines := make([]vm.Machine, len(clones))
	for i, c := range clones {
		begin := time.Now()
		machines[i] = h.restore(t, snap, c)
		t.Logf("clone %d restored in %s", i+1, time.Since(begin))
	}
	replies := make([]counterReply, len(clones))
	for i, m := range machines {
		r := call(t, m, clones[i].Agent.Secret, "GET", "/", "", nil)
		if r.status != http.StatusOK || json.Unmarshal([]byte(r.body), &replies[i]) != nil {
			t.Fatalf("clone %d: got %d %q, want 200 with the counter", i+1, r.status, r.body)
		}
		t.Logf("clone %d: %s", i+1, r.body)
	}

	t.Run("counter starts from the snapshot", func(t *testing.T) {
		for i, r := range replies {
			if r.Count != 3 {
				t.Errorf("clone %d: count %d, want 3 (2 warm-up calls in the snapshot, then its own)", i+1, r.Count)
			}
			if len(r.Restored) != 1 || r.Restored[0] != string(clones[i].VM.UID) {
				t.Errorf("clone %d: on_restore saw %v, want [%s]", i+1, r.Restored, clones[i].VM.UID)
			}
		}
		again := call(t, machines[0], clones[0].Agent.Secret, "GET", "/", "", nil)
		var r counterReply
		if json.Unmarshal([]byte(again.body), &r) != nil || r.Count != 4 {
			t.Errorf("clone 1 second call: %q, want count 4", again.body)
		}
	})
	t.Run("randomness differs", func(t *testing.T) {
		if replies[0].URandom == replies[1].URandom || len(replies[0].URandom) != 32 {
			t.Errorf("/dev/urandom: clones read %q and %q", replies[0].URandom, replies[1].URandom)
		}
		if replies[0].Random == replies[1].Random {
			t.Errorf("Python random: both clones got %v", replies[0].Random)
		}
	})
	t.Run("clock", func(t *testing.T) {
		for i, r := range replies {
			if d := math.Abs(float64(time.Now().UnixNano())/1e9 - r.Time); d > 1 {
				t.Errorf("clone %d: clock %.3f s off the host's", i+1, d)
			}
		}
	})
	t.Run("secrets", func(t *testing.T) {
		for i, m := range machines {
			own := clones[i].Agent.ControlSecret
			if r := callAt(t, m.ControlEndpoint(), protocol.ControlHeader, own, "GET", protocol.HealthPath, "", nil); r.status != http.StatusOK {
				t.Errorf("clone %d with its own control secret: got %d %q", i+1, r.status, r.body)
			}
			for name, secret := range map[string]string{
				"the snapshot's control secret": spec.Agent.ControlSecret,
				"the other clone's":             clones[1-i].Agent.ControlSecret,
			} {
				if r := callAt(t, m.ControlEndpoint(), protocol.ControlHeader, secret, "GET", protocol.HealthPath, "", nil); r.status != http.StatusForbidden {
					t.Errorf("clone %d with %s: got %d, want 403", i+1, name, r.status)
				}
				if r := callAt(t, m.ControlEndpoint(), protocol.ControlHeader, secret, "POST", protocol.RestorePath, "{}", nil); r.status != http.StatusForbidden {
					t.Errorf("clone %d: restore with %s: got %d, want 403", i+1, name, r.status)
				}
			}
			if r := call(t, m, spec.Agent.Secret, "GET", "/", "", nil); r.status != http.StatusForbidden {
				t.Errorf("clone %d with the snapshot's data secret: got %d, want 403", i+1, r.status)
			}
		}
		if machines[0].Endpoint() == machines[1].Endpoint() || machines[0].ControlEndpoint() == machines[1].ControlEndpoint() {
			t.Errorf("clones share a forward: %s %s", machines[0].Endpoint(), machines[1].Endpoint())
		}
	})
	t.Run("each clone its own uid, with the snapshot's group", func(t *testing.T) {
		fi, _ := os.Stat(memPath)
		group := int(fi.Sys().(*syscall.Stat_t).Gid)
		seen := map[int]bool{}
		for i, m := range machines {
			pids := vmtest.ProcessesWith(filepath.Dir(m.ConsoleLog()))
			if len(pids) != 1 {
				t.Fatalf("clone %d: processes %v, want one QEMU", i+1, pids)
			}
			uid, gid, groups, seccomp := vmtest.ProcessCredentials(t, pids[0])
			if seen[uid] || uid < qemu.DefaultUIDBase || gid != uid || len(groups) != 1 || groups[0] != group || seccomp != 2 {
				t.Errorf("clone %d: uid %d gid %d groups %v seccomp %d; want its own VM uid, the snapshot's group %d only, seccomp 2", i+1, uid, gid, groups, seccomp, group)
			}
			seen[uid] = true
		}
	})

	t.Run("exec mode", func(t *testing.T) {
		s := h.snapSpec(t, cases[3], "bash-key")
		bdir := filepath.Join(h.state, "snaps", "bash")
		bsnap := h.snapshot(t, s, bdir, nil)
		c := cloneSpec(s, 1)
		m := h.restore(t, bsnap, c)
		r := call(t, m, c.Agent.Secret, "POST", "/p?q=1", "hi", map[string]string{"X-Test": "x"})
		if want := "bash method=POST path=/p query=q=1 x-test=x body=hi"; r.status != http.StatusOK || strings.TrimSpace(r.body) != want {
			t.Errorf("bash clone: got %d %q, want 200 %q", r.status, r.body, want)
		}
	})
	t.Run("node", func(t *testing.T) {
		nfc := fnCase{name: "node-count", runtime: "node", mode: protocol.ModeHTTP, handler: "handler.js", code: nodeCounter}
		s := h.snapSpec(t, nfc, "node-key")
		ndir := filepath.Join(h.state, "snaps", "node")
		nsnap := h.snapshot(t, s, ndir, warmCalls(t, s.Agent.Secret, 1))
		var got []counterReply
		for i := range 2 {
			c := cloneSpec(s, i+1)
			m := h.restore(t, nsnap, c)
			r := call(t, m, c.Agent.Secret, "GET", "/", "", nil)
			var cr counterReply
			if r.status != http.StatusOK || json.Unmarshal([]byte(r.body), &cr) != nil || cr.Count != 1 {
				t.Errorf("node clone %d: got %d %q, want 200 and count 1 (a fresh bootstrap)", i+1, r.status, r.body)
			}
			got = append(got, cr)
		}
		if len(got) == 2 && got[0].Random == got[1].Random {
			t.Errorf("node clones drew the same crypto.randomBytes: %v", got[0].Random)
		}
	})

	for i, m := range machines {
		if err := m.Stop(context.Background()); err != nil {
			t.Errorf("stopping clone %d: %v", i+1, err)
		}
	}
	t.Run("ram file unchanged", func(t *testing.T) {
		if got := sha256File(t, memPath); got != memSum {
			t.Errorf("RAM file changed while clones ran: sha256 %s, was %s", got, memSum)
		}
	})

	t.Run("damaged snapshot", func(t *testing.T) {
		state, err := os.ReadFile(statePath)
		if err != nil {
			t.Fatal(err)
		}
		// Truncated: Open refuses it, and so does a Restore of the
		// snapshot opened before.
		if err := os.WriteFile(statePath, state[:len(state)/2], 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := h.engine.Open(dir, "key-1"); err == nil || !strings.Contains(err.Error(), "state file changed") {
			t.Errorf("Open of a truncated snapshot: got %v, want the state file refused", err)
		}
		c := cloneSpec(spec, 3)
		if _, err := h.engine.Restore(context.Background(), snap, c); err == nil {
			t.Errorf("Restore of a truncated snapshot: no error")
		}
		// Corrupted past the checksum (the manifest rewritten to match):
		// QEMU refuses the stream, and the restore fails fast and cleanly.
		bad := append([]byte(nil), state...)
		for i := len(bad) / 3; i < len(bad)/3+4096 && i < len(bad); i++ {
			bad[i] ^= 0x5a
		}
		if err := os.WriteFile(statePath, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		rewriteManifest(t, dir, bad)
		reopened, err := h.engine.Open(dir, "key-1")
		if err != nil {
			t.Fatalf("Open after the manifest was rewritten: %v", err)
		}
		c = cloneSpec(spec, 4)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		begin := time.Now()
		m, err := h.engine.Restore(ctx, reopened, c)
		if err == nil {
			m.Stop(context.Background())
			t.Fatalf("Restore of a corrupted state file succeeded")
		}
		t.Logf("corrupted restore failed after %s: %v", time.Since(begin), err)
		if !strings.Contains(err.Error(), "qemu exited") {
			t.Errorf("corrupted restore: got %v, want QEMU's own reason (qemu exited ...)", err)
		}
		if ctx.Err() != nil {
			t.Errorf("the corrupted restore ran into the timeout: %v", err)
		}
		cdir := filepath.Join(h.state, "vms", string(c.VM.UID))
		if pids := vmtest.ProcessesWith(cdir); len(pids) != 0 {
			t.Errorf("qemu left running after a failed restore: %v", pids)
		}
		if _, err := os.Stat(cdir); !os.IsNotExist(err) {
			t.Errorf("vm dir %s left after a failed restore (%v)", cdir, err)
		}
	})

	t.Run("mismatched spec", func(t *testing.T) {
		c := cloneSpec(spec, 5)
		c.VM.Spec.Memory = meta.NewSizeFromBytes(512 << 20)
		if _, err := h.engine.Restore(context.Background(), snap, c); err == nil || !strings.Contains(err.Error(), "memory") {
			t.Errorf("Restore with other memory: got %v, want a refusal naming the memory", err)
		}
		c = cloneSpec(spec, 6)
		c.Agent.Env = map[string]string{"NEW": "1"}
		if _, err := h.engine.Restore(context.Background(), snap, c); err == nil || !strings.Contains(err.Error(), "agent config") {
			t.Errorf("Restore with another agent config: got %v, want a refusal", err)
		}
	})
}

// rewriteManifest sets the state file's size and checksum in dir's
// manifest to state's.
func rewriteManifest(t *testing.T, dir string, state []byte) {
	t.Helper()
	p := filepath.Join(dir, "manifest.json")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var man map[string]any
	if err := json.Unmarshal(b, &man); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(state)
	man["stateBytes"], man["stateSHA256"] = len(state), hex.EncodeToString(sum[:])
	b, _ = json.Marshal(man)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
