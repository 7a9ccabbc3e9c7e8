package qemu

import (
	"crypto/sha256"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/faasvm/appliance/guest/protocol"
)

// File names inside a VM's directory.
const (
	configDiskName  = "config.img"
	consoleLogName  = "console.log"
	qmpSocketName   = "qmp.sock"
	qemuPidName     = "qemu.pid"
	qemuStderrName  = "qemu.stderr"
	passtPidName    = "passt.pid"
	passtLogName    = "passt.log"
	passtStderrName = "passt.stderr"
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

// qemuArgs is everything that varies between two VMs' command lines.
type qemuArgs struct {
	Name      string // VM name, shown by ps and QMP
	Accel     string // AccelKVM or AccelTCG
	MemoryMiB uint64
	CPUs      uint64
	Kernel    string
	Initrd    string
	CmdLine   string // complete kernel command line (kernelCmdLine)
	RootFS    string
	Code      string
	Config    string // raw config disk
	Netdev    string // value of -netdev, id n0 (userNetdev or streamNetdev)
	MAC       string
	Dir       string // the VM's directory: console log, QMP socket, pid file
}

// buildQEMUArgs returns QEMU's arguments (without the binary) for a.
func buildQEMUArgs(a qemuArgs) []string {
	args := machineArgs(a.Accel)
	args = append(args,
		"-name", "guest="+optEscape(a.Name),
		"-m", strconv.FormatUint(a.MemoryMiB, 10),
		"-smp", strconv.FormatUint(a.CPUs, 10),
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-kernel", a.Kernel,
		"-initrd", a.Initrd,
		"-append", a.CmdLine,
	)
	for _, d := range []struct{ id, file string }{
		{"root", a.RootFS}, {"code", a.Code}, {"config", a.Config},
	} {
		args = append(args,
			"-drive", "file="+optEscape(d.file)+",format=raw,if=none,id="+d.id+",readonly=on",
			"-device", "virtio-blk-device,drive="+d.id,
		)
	}
	return append(args,
		"-netdev", a.Netdev,
		"-device", "virtio-net-device,netdev=n0,mac="+a.MAC,
		"-chardev", "file,id=con,path="+optEscape(filepath.Join(a.Dir, consoleLogName)),
		"-serial", "chardev:con",
		"-qmp", "unix:"+optEscape(filepath.Join(a.Dir, qmpSocketName))+",server=on,wait=off",
		"-pidfile", filepath.Join(a.Dir, qemuPidName),
	)
}

// userNetdev is the -netdev value for a VM without egress: user-mode
// networking that lets the guest reach nothing (restrict=on) while the host
// reaches the agent through a forward from a free loopback port.
func userNetdev() string {
	return fmt.Sprintf("user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:0-:%d", protocol.AgentPort)
}

// streamFD is the descriptor number under which QEMU and passt each inherit
// their end of the socketpair that carries the guest's frames (the first
// entry of exec.Cmd.ExtraFiles).
const streamFD = 3

// streamNetdev is the -netdev value for a VM with egress: frames travel
// over an inherited, already connected socket to passt.
func streamNetdev(fd int) string {
	return fmt.Sprintf("stream,id=n0,server=off,addr.type=fd,addr.str=%d", fd)
}

// passtArgs is everything that varies between two passt command lines.
type passtArgs struct {
	FD       int    // inherited socket connected to QEMU
	HostPort int    // loopback port forwarded to the agent
	Dir      string // the VM's directory, for the log file
}

// buildPasstArgs returns passt's arguments (without the binary). passt
// serves one client on an inherited socket and exits when QEMU closes it
// (--one-off), so it never outlives its VM. --no-map-gw keeps the host's
// loopback out of the guest's reach; the guest gets the same addresses as
// with QEMU's user-mode network, and DNS queries to protocol.GuestDNS go
// to the host's resolver.
func buildPasstArgs(a passtArgs) []string {
	addr := netip.MustParsePrefix(protocol.GuestAddress)
	return []string{
		"--foreground", "--one-off",
		"--fd", strconv.Itoa(a.FD),
		"--log-file", filepath.Join(a.Dir, passtLogName),
		"--ipv4-only",
		"--no-map-gw",
		"--address", addr.Addr().String(),
		"--netmask", strconv.Itoa(addr.Bits()),
		"--gateway", protocol.GuestGateway,
		"--dns", protocol.GuestDNS,
		"--dns-forward", protocol.GuestDNS,
		"--tcp-ports", fmt.Sprintf("127.0.0.1/%d:%d", a.HostPort, protocol.AgentPort),
		"--udp-ports", "none",
	}
}

// probeArgs returns the arguments of the probe boot that tells whether KVM
// really runs a guest: the agent sees faas.probe=1, prints probeOKLine on
// the console (QEMU's stdout) and reboots, which ends QEMU (-no-reboot).
func probeArgs(kernel, initrd string, tscKHz int) []string {
	args := machineArgs(AccelKVM)
	return append(args,
		"-m", "256", "-smp", "1",
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-kernel", kernel,
		"-initrd", initrd,
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
