package qemu

import (
	"fmt"
	"os"
	"sync"
	"syscall"
)

// UIDRange is a range of user IDs, both ends included.
type UIDRange struct{ First, Last uint32 }

// Contains reports whether uid is in r.
func (r UIDRange) Contains(uid uint32) bool { return uid >= r.First && uid <= r.Last }

// UIDPools returns the two ranges of user IDs the engine runs QEMU as: one
// uid per VM, never shared by two running VMs, from isolated for VMs
// without egress and from egress for VMs with it (so a firewall can tell
// them apart by uid). ok is false when the engine does not change user
// (Config.UIDBase negative).
func (c Config) UIDPools() (isolated, egress UIDRange, ok bool) {
	c = c.withDefaults()
	if c.UIDBase < 0 {
		return UIDRange{}, UIDRange{}, false
	}
	base, n := uint32(c.UIDBase), uint32(c.UIDCount)
	return UIDRange{base, base + n - 1}, UIDRange{base + n, base + 2*n - 1}, true
}

// vmUsers hands out the VMs' user IDs. Each VM gets a uid nobody else uses
// while it runs, and the gid of the same number, with no supplementary
// group but the KVM device's when a VM needs it: a QEMU that a guest took
// over cannot signal, trace or read another VM's QEMU, and can open none of
// the appliance's files (the engine hands QEMU every file it needs as a
// descriptor). It is safe for concurrent use.
type vmUsers struct {
	enabled           bool
	isolated, egress  UIDRange
	kvmGID            uint32 // group that may open the KVM device
	kvmGroup, kvmOpen bool   // the device is group / world read-write

	mu    sync.Mutex
	inUse map[uint32]bool
}

// newVMUsers returns the pools of cfg. Without root (or CAP_SETUID) the
// engine cannot change user, and runs QEMU as itself.
func newVMUsers(cfg Config, kvmDev string) *vmUsers {
	iso, egr, ok := cfg.UIDPools()
	u := &vmUsers{enabled: ok && os.Geteuid() == 0, isolated: iso, egress: egr, inUse: map[uint32]bool{}}
	if fi, err := os.Stat(kvmDev); err == nil {
		st, _ := fi.Sys().(*syscall.Stat_t)
		u.kvmOpen = fi.Mode().Perm()&0o006 == 0o006
		u.kvmGroup = st != nil && fi.Mode().Perm()&0o060 == 0o060
		if st != nil {
			u.kvmGID = st.Gid
		}
	}
	return u
}

// canUseKVM reports whether a VM user may open the KVM device.
func (u *vmUsers) canUseKVM() bool { return u.kvmOpen || u.kvmGroup }

// take reserves a uid for one VM and returns the credential to start QEMU
// with and the function that gives the uid back (call it once QEMU has
// been reaped). With the pools disabled, or kvm set and the device not
// open to the VM users, the credential is nil: QEMU runs as the engine.
func (u *vmUsers) take(egress, kvm bool) (*syscall.Credential, func(), error) {
	if !u.enabled || (kvm && !u.canUseKVM()) {
		return nil, func() {}, nil
	}
	pool := u.isolated
	if egress {
		pool = u.egress
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	for uid := pool.First; ; uid++ {
		if !u.inUse[uid] {
			u.inUse[uid] = true
			cred := &syscall.Credential{Uid: uid, Gid: uid, Groups: []uint32{}}
			if kvm && !u.kvmOpen {
				cred.Groups = []uint32{u.kvmGID}
			}
			var once sync.Once
			return cred, func() {
				once.Do(func() {
					u.mu.Lock()
					delete(u.inUse, uid)
					u.mu.Unlock()
				})
			}, nil
		}
		if uid == pool.Last {
			break
		}
	}
	return nil, nil, fmt.Errorf("all %d VM user ids from %d are in use (raise vm_uid_count)", pool.Last-pool.First+1, pool.First)
}
