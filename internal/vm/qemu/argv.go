package qemu

import (
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/faasvm/appliance/guest/protocol"
)

// File names inside a VM's directory.
const (
	configDiskName = "config.img"
	consoleLogName = "console.log"
	qmpSocketName  = "qmp.sock"
	qemuPidName    = "qemu.pid"
	qemuStderrName = "qemu.stderr"
)

// vmDir is the directory of the VM with the given UID.
func vmDir(stateDir, uid string) string {
	return filepath.Join(stateDir, "vms", uid)
}

// baseCmdLine is the kernel command line every guest gets: the serial
// console, an exit (not a reboot) on reboot and panic (QEMU runs with
// -no-reboot), and a quiet kernel.
const baseCmdLine = "console=ttyS0 reboot=t panic=-1 quiet"

// kernelCmdLine assembles the guest kernel command line: the base
// arguments, the TSC rate when known (tscKHz > 0), then extra.
func kernelCmdLine(tscKHz int, extra string) string {
	parts := []string{baseCmdLine}
	if tscKHz > 0 {
		parts = append(parts, "tsc_early_khz="+strconv.Itoa(tscKHz))
	}
	parts = append(parts, "tsc=reliable cryptomgr.notests")
	if extra = strings.TrimSpace(extra); extra != "" {
		parts = append(parts, extra)
	}
	return strings.Join(parts, " ")
}

// machineArgs is the part of every QEMU command line that selects the
// machine and accelerator.
func machineArgs(accel string) []string {
	args := []string{"-M", "microvm,x-option-roms=off,isa-serial=on,rtc=on"}
	if accel == AccelKVM {
		return append(args, "-accel", "kvm", "-cpu", "host")
	}
	return append(args, "-accel", "tcg", "-cpu", "max")
}

// sandboxArgs turns on QEMU's seccomp filter with every optional group
// denied: obsolete system calls, privilege changes (set*uid and friends),
// spawning processes (fork and exec: so no "exec:" migration, snapshots
// hand QEMU a descriptor with QMP getfd instead) and resource control
// (scheduler and priority changes). All of them boot under TCG and KVM.
func sandboxArgs() []string {
	return []string{"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"}
}

// Descriptors QEMU inherits, in exec.Cmd.ExtraFiles order (stdin, stdout
// and stderr are 0-2: stdout is the console log). QEMU opens no file of
// its own: the engine opens each one and hands it over, so QEMU can run as
// a user that may open nothing of the appliance's.
const (
	fdKernel = 3 + iota // read through /proc/self/fd (the loader opens a path)
	fdInitrd
	fdRoot // the drives come as fd sets (/dev/fdset/N)
	fdCode
	fdConfig
	fdQMP // a listening unix socket, already bound in the VM's directory
	// fdDeps is the dependency disk, passed only when the VM has one (last,
	// so the others keep their numbers).
	fdDeps
)

// extraFileCount is how many descriptors buildQEMUArgs refers to.
const extraFileCount = fdQMP - 2

// qemuArgs is everything that varies between two VMs' command lines.
type qemuArgs struct {
	Name      string // VM name, shown by ps and QMP
	Accel     string // AccelKVM or AccelTCG
	MemoryMiB uint64
	CPUs      uint64
	CmdLine   string // complete kernel command line (kernelCmdLine)
	// Host paths of what the descriptors hold, recorded as the fd sets'
	// opaque strings (so ps and Cleanup can tell which VM a QEMU is).
	RootFS, Code, Config string
	Deps                 string // "" when the VM has no dependency disk
	Egress               bool   // restrict=off: the guest may open connections
	MAC                  string
	// Memory, when set, puts guest RAM in a file QEMU inherited (snapshots).
	Memory *memoryFile
	// TBSizeMiB sizes TCG's translation cache (tb-size); 0: QEMU's default.
	TBSizeMiB int
	// Incoming makes QEMU wait for a migration stream (-incoming defer):
	// the engine starts it over QMP from an inherited descriptor.
	Incoming bool
}

// memoryFile is guest RAM in a file: QEMU maps the inherited descriptor FD
// (it reopens it through /proc/self/fd). Shared (MAP_SHARED) while a
// snapshot's VM runs, so the file receives the RAM; private (MAP_PRIVATE)
// for a restore, so the clone's writes stay its own and the file never
// changes.
type memoryFile struct {
	FD     int
	Shared bool
}

// memBackendID names the memory backend object.
const memBackendID = "mem"

// buildQEMUArgs returns QEMU's arguments (without the binary) for a.
func buildQEMUArgs(a qemuArgs) []string {
	args := machineArgs(a.Accel)
	if a.Accel == AccelTCG && a.TBSizeMiB > 0 {
		args[3] += ",tb-size=" + strconv.Itoa(a.TBSizeMiB)
	}
	if a.Memory != nil {
		share := "off"
		if a.Memory.Shared {
			share = "on"
		}
		args[1] += ",memory-backend=" + memBackendID
		args = append(args, "-object", fmt.Sprintf("memory-backend-file,id=%s,size=%dM,mem-path=%s,share=%s,prealloc=off",
			memBackendID, a.MemoryMiB, procFD(a.Memory.FD), share))
	}
	if a.Incoming {
		args = append(args, "-incoming", "defer")
	}
	args = append(args, sandboxArgs()...)
	args = append(args,
		"-name", "guest="+optEscape(a.Name),
		"-m", strconv.FormatUint(a.MemoryMiB, 10),
		"-smp", strconv.FormatUint(a.CPUs, 10),
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-kernel", procFD(fdKernel),
		"-initrd", procFD(fdInitrd),
		"-append", a.CmdLine,
	)
	drives := []struct {
		id, file string
		fd       int
	}{
		{"root", a.RootFS, fdRoot}, {"code", a.Code, fdCode}, {"config", a.Config, fdConfig},
	}
	if a.Deps != "" {
		drives = append(drives, struct {
			id, file string
			fd       int
		}{"deps", a.Deps, fdDeps})
	}
	for set, d := range drives {
		args = append(args,
			"-add-fd", fmt.Sprintf("fd=%d,set=%d,opaque=%s", d.fd, set+1, optEscape(d.id+":"+d.file)),
			"-drive", fmt.Sprintf("file=/dev/fdset/%d,format=raw,if=none,id=%s,readonly=on", set+1, d.id),
			"-device", "virtio-blk-device,drive="+d.id,
		)
	}
	return append(args,
		"-netdev", userNetdev(a.Egress),
		"-device", "virtio-net-device,netdev=n0,mac="+a.MAC,
		"-chardev", "stdio,id=con,signal=off",
		"-serial", "chardev:con",
		"-chardev", fmt.Sprintf("socket,id=qmp,fd=%d,server=on,wait=off", fdQMP),
		"-mon", "chardev=qmp,mode=control",
	)
}

// procFD names an inherited descriptor as a path QEMU can open.
func procFD(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// userNetdev is the -netdev value: QEMU's user-mode network, with forwards
// from free loopback ports to the agent's data and control ports. Without
// egress, restrict=on: the guest can reach nothing at all. With egress the
// guest may open connections, which QEMU makes from its own process, as
// its own user: the firewall (see Config.Firewall) is what keeps those off
// the appliance, the host and the local networks. IPv6 is off either way.
func userNetdev(egress bool) string {
	restrict := "on"
	if egress {
		restrict = "off"
	}
	return fmt.Sprintf("user,id=n0,restrict=%s,ipv6=off,hostfwd=tcp:127.0.0.1:0-:%d,hostfwd=tcp:127.0.0.1:0-:%d",
		restrict, protocol.AgentPort, protocol.ControlPort)
}

// probeArgs returns the arguments of the probe boot that tells whether KVM
// really runs a guest: the agent sees faas.probe=1, prints probeOKLine on
// the console (QEMU's stdout) and reboots, which ends QEMU (-no-reboot).
// The kernel and initramfs come as descriptors fdKernel and fdInitrd, as
// for a VM.
func probeArgs(tscKHz int) []string {
	args := machineArgs(AccelKVM)
	args = append(args, sandboxArgs()...)
	return append(args,
		"-m", "256", "-smp", "1",
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-kernel", procFD(fdKernel),
		"-initrd", procFD(fdInitrd),
		"-append", kernelCmdLine(tscKHz, "faas.probe=1"),
		"-chardev", "stdio,id=con,signal=off",
		"-serial", "chardev:con",
	)
}

// probeOKLine is what the agent prints when booted with faas.probe=1.
const probeOKLine = "FAAS-PROBE-OK"

// optEscape escapes a value for QEMU's key=value,... option syntax, where a
// comma is written as two.
func optEscape(s string) string {
	return strings.ReplaceAll(s, ",", ",,")
}

// macFromUID derives a stable, locally administered unicast MAC address
// from a VM's UID.
func macFromUID(uid string) string {
	h := sha256.Sum256([]byte(uid))
	return fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", h[0], h[1], h[2], h[3], h[4])
}
