package controller_test

// Real VMs (TCG here) started by the controller from a version's snapshot:
// scale from zero restores (visible in the status and in the handler's
// memory), a damaged snapshot falls back to a boot that answers 200 and is
// made again, and a code edit never restores the old version's memory.

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/faasvm/appliance/internal/controller"
	"github.com/faasvm/appliance/internal/function"
	"github.com/faasvm/appliance/internal/vm"
	"github.com/faasvm/appliance/internal/vm/qemu"
	"github.com/faasvm/appliance/internal/vmtest"
)

// restoreCounter counts its calls in memory: the snapshot's warm-up
// request makes it 1, so a restored clone's first answer is 2 and a booted
// VM's is 1.
const restoreCounter = `import json
count = 0
def handle(req):
    global count
    count += 1
    return {"statusCode": 200, "body": json.dumps({"version": "VERSION", "count": count})}
`

type restoreReply struct {
	Version string `json:"version"`
	Count   int    `json:"count"`
}

func TestSnapshotRestoreRealVM(t *testing.T) {
	assets := vmtest.Load(t)
	functions := t.TempDir()
	snapshots := filepath.Join(vmtest.ShortDir(t), "vm-snapshots")
	write := func(version string) {
		t.Helper()
		dir := filepath.Join(functions, "snap")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, content := range map[string]string{
			"handler.py":    strings.ReplaceAll(restoreCounter, "VERSION", version),
			"function.yaml": "runtime: python3\nmode: http\nminReplicas: 0\nidleTimeout: 2s\ntimeout: 20s\n",
		} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	write("v1")

	engine, err := qemu.New(qemu.Config{Accel: qemu.AccelTCG, StateDir: vmtest.ShortDir(t), Logger: vmtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	c := controller.New(controller.Options{
		FunctionsDir: functions, SnapshotsDir: snapshots, QueueSize: 4,
		Kernel: assets.Kernel, Initrd: assets.Initrd, Template: vm.NewVM("template"),
		Defaults: function.Defaults{
			Timeout: 20 * time.Second, Memory: "256MB", MinReplicas: 0, MaxReplicas: 1, Concurrency: 4,
			IdleTimeout: 2 * time.Second, TargetUtilization: 0.7, MaxSize: 1 << 20, SnapshotDir: t.TempDir(),
		},
		Logger: vmtest.Logger(t),
	}, engine, assets.Disks)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		c.Close(ctx)
	})

	// Deploy: the first VM boots; the snapshot is made beside it; the
	// function idles to zero.
	c.Sync("snap")
	s := waitFor(t, c, "snap", 3*time.Minute, func(s controller.Status) bool {
		return s.State == controller.StateFailed || s.State == controller.StateInvalid ||
			(s.State == controller.StateIdle && s.Snapshot != nil && s.Snapshot.State == controller.SnapReady)
	})
	if s.State != controller.StateIdle {
		t.Fatalf("deploy: got %s (%s), want it idle with a snapshot", s.State, s.LastError)
	}
	key1 := s.Snapshot.Key
	if s.Snapshot.SizeBytes <= 0 || s.Snapshot.CreatedAt.IsZero() || key1 == "" {
		t.Fatalf("snapshot status: %+v", s.Snapshot)
	}

	// Scale from zero restores: the status says so, and the handler's
	// memory is the warmed snapshot's.
	in, got := invokeSnap(t, c)
	if got.Version != "v1" || got.Count != 2 {
		t.Errorf("first answer from zero: got %+v, want v1 with count 2 (the snapshot's warm-up was 1)", got)
	}
	inst := instanceOf(t, c, in.VMID)
	if inst.Start != controller.StartRestore || inst.StartSeconds <= 0 || inst.StartSeconds > 5 {
		t.Errorf("instance from zero: %+v, want start restore with its time", inst)
	}
	pss := waitFor(t, c, "snap", 30*time.Second, func(s controller.Status) bool {
		for _, i := range s.Instances {
			if i.ID == in.VMID {
				return i.PSSBytes > 0
			}
		}
		return false
	})
	t.Logf("restored instance: start %.3fs, PSS %d bytes", inst.StartSeconds, instanceIn(pss, in.VMID).PSSBytes)

	// A damaged snapshot: the next start falls back to a boot that answers
	// 200, and the snapshot is made again.
	waitFor(t, c, "snap", time.Minute, func(s controller.Status) bool { return len(s.Instances) == 0 })
	states, _ := filepath.Glob(filepath.Join(snapshots, "snap", "*", "state-*.bin"))
	if len(states) != 1 {
		t.Fatalf("snapshot state files: %v, want one", states)
	}
	fi, err := os.Stat(states[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(states[0], fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	created := s.Snapshot.CreatedAt
	in, got = invokeSnap(t, c)
	if got.Version != "v1" || got.Count != 1 {
		t.Errorf("answer after the snapshot broke: got %+v, want v1 from a fresh boot (count 1)", got)
	}
	if inst := instanceOf(t, c, in.VMID); inst.Start != controller.StartBoot {
		t.Errorf("instance after the snapshot broke: %+v, want a boot", inst)
	}
	s = waitFor(t, c, "snap", 3*time.Minute, func(s controller.Status) bool {
		return s.Snapshot != nil && s.Snapshot.State == controller.SnapReady && s.Snapshot.CreatedAt.After(created)
	})
	if s.Snapshot.Key != key1 {
		t.Errorf("rebuilt snapshot has key %s, want the version's %s", s.Snapshot.Key, key1)
	}

	// A code edit: the new version boots (never the old memory), gets its
	// own snapshot, and a start from zero restores that one.
	write("v2")
	c.Sync("snap")
	s = waitFor(t, c, "snap", 3*time.Minute, func(s controller.Status) bool {
		return s.Snapshot != nil && s.Snapshot.Key != key1 && s.Snapshot.State == controller.SnapReady && len(s.Instances) == 0
	})
	in, got = invokeSnap(t, c)
	if got.Version != "v2" || got.Count != 2 {
		t.Errorf("after the edit, from zero: got %+v, want v2 restored from its own snapshot (count 2)", got)
	}
	if inst := instanceOf(t, c, in.VMID); inst.Start != controller.StartRestore || inst.Version != s.Version {
		t.Errorf("after the edit: instance %+v, want a restore of version %s", inst, s.Version)
	}
	if dirs, _ := os.ReadDir(filepath.Join(snapshots, "snap")); len(dirs) != 1 {
		t.Errorf("snapshot dirs after the edit: %d, want only the new version's", len(dirs))
	}
}

// invokeSnap calls the function once the way the gateway does.
func invokeSnap(t *testing.T, c *controller.Controller) (controller.Instance, restoreReply) {
	t.Helper()
	in, code, b := invokeOn(t, c, 2*time.Minute, "snap", http.MethodGet, "/", "", "")
	var r restoreReply
	if code != http.StatusOK || json.Unmarshal([]byte(b), &r) != nil {
		t.Fatalf("invoking: got %d %q, want 200 with the counter", code, b)
	}
	return in, r
}

func instanceOf(t *testing.T, c *controller.Controller, id string) controller.InstanceStatus {
	t.Helper()
	s, err := c.Get(context.Background(), "snap")
	if err != nil {
		t.Fatal(err)
	}
	return instanceIn(s, id)
}

func instanceIn(s controller.Status, id string) controller.InstanceStatus {
	for _, in := range s.Instances {
		if in.ID == id {
			return in
		}
	}
	return controller.InstanceStatus{}
}
