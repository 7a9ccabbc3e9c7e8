package qemu

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestVMUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		if testing.Short() {
			t.Skip("-short: the pools are off unless the engine is root")
		}
		t.Fatal("the VM user pools need root (make test runs as root)")
	}
	dir := t.TempDir()
	groupKVM := filepath.Join(dir, "kvm-group")
	closedKVM := filepath.Join(dir, "kvm-closed")
	for p, mode := range map[string]os.FileMode{groupKVM: 0o660, closedKVM: 0o600} {
		if err := os.WriteFile(p, nil, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(groupKVM, 0, 4242); err != nil {
		t.Fatal(err)
	}

	u := newVMUsers(Config{UIDBase: 50000, UIDCount: 2}, groupKVM)
	a, releaseA, err := u.take(false, false)
	if err != nil || a.Uid != 50000 || a.Gid != 50000 || len(a.Groups) != 0 {
		t.Fatalf("first VM: got %+v, %v; want uid and gid 50000, no groups", a, err)
	}
	b, _, err := u.take(false, true)
	if err != nil || b.Uid != 50001 || len(b.Groups) != 1 || b.Groups[0] != 4242 {
		t.Fatalf("second VM, under KVM: got %+v, %v; want uid 50001 with the device's group", b, err)
	}
	if _, _, err := u.take(false, false); err == nil || !strings.Contains(err.Error(), "all 2 VM user ids from 50000 are in use") {
		t.Fatalf("a third VM: got %v, want the pool exhausted", err)
	}
	e, _, err := u.take(true, false)
	if err != nil || e.Uid != 50002 {
		t.Fatalf("a VM with egress: got %+v, %v; want the egress pool's first uid 50002", e, err)
	}
	releaseA()
	releaseA() // twice is harmless
	if again, _, err := u.take(false, false); err != nil || again.Uid != 50000 {
		t.Errorf("after a release: got %+v, %v; want uid 50000 back", again, err)
	}

	closed := newVMUsers(Config{UIDBase: 50000, UIDCount: 2}, closedKVM)
	if c, _, err := closed.take(false, true); err != nil || c != nil {
		t.Errorf("KVM device open to root only: got %+v, %v; want QEMU as the engine (nil)", c, err)
	}
	off := newVMUsers(Config{UIDBase: -1}, groupKVM)
	if c, _, err := off.take(false, false); err != nil || c != nil {
		t.Errorf("pools off: got %+v, %v; want nil", c, err)
	}
}
