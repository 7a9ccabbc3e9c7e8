package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/faasvm/appliance/guest/protocol"
)

// The PID-1 boot sequence. Each step has a name that its errors and log
// lines carry; the first failing step ends the boot and the machine reboots
// (which, with QEMU's -no-reboot, ends the VM so the host sees it).
//
// Paths inside the initramfs, before the switch to the real root.
const (
	modulesDir   = "/lib/modules"
	modulesList  = "/lib/modules/modules.list"
	lowerDir     = "/mnt/lower" // the read-only runtime rootfs
	rwDir        = "/mnt/rw"    // tmpfs holding the overlay's upper and work dirs
	newRoot      = "/newroot"   // the overlay that becomes /
	initBinary   = "/init"
	probeFlag    = "faas.probe=1"
	probeMessage = "FAAS-PROBE-OK"
	// bootstrapRunDir is where the http-mode bootstrap is written, after the
	// switch to the real root.
	bootstrapRunDir = "/run/faas"
)

// Bounded waits for devices, which appear asynchronously after their
// drivers load. Generous because TCG is slow.
const (
	diskWait    = 15 * time.Second
	netdevWait  = 10 * time.Second
	devicePoll  = 5 * time.Millisecond
	mountNoExec = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
)

type bootStep struct {
	name string
	run  func(ctx context.Context) error
}

// boot carries what the steps learn from one another.
type boot struct {
	log   *slog.Logger
	disks disks
	cfg   *protocol.Config
}

func (b *boot) steps() []bootStep {
	return []bootStep{
		{"early-mounts", b.earlyMounts},
		{"probe", b.probe},
		{"load-modules", b.loadModules},
		{"find-disks", b.findDisks},
		{"read-config", b.readConfig},
		{"mount-root", b.mountRoot},
		{"switch-root", b.switchRoot},
		{"secrets", b.secrets},
		{"network", b.network},
	}
}

// run runs every step in order and returns the first failure, naming its step.
func (b *boot) run(ctx context.Context) error {
	for _, s := range b.steps() {
		began := time.Now()
		if err := s.run(ctx); err != nil {
			return fmt.Errorf("boot step %s: %w", s.name, err)
		}
		b.log.Info("boot step done", "step", s.name, "took", time.Since(began).Round(time.Microsecond))
	}
	return nil
}

type mountSpec struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

func (m mountSpec) mount() error {
	if err := os.MkdirAll(m.target, 0o755); err != nil {
		return fmt.Errorf("creating mount point %s: %w", m.target, err)
	}
	if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
		return fmt.Errorf("mounting %s (%s) on %s: %w", m.source, m.fstype, m.target, err)
	}
	return nil
}

// earlyMounts mounts /dev, /proc and /sys in the initramfs, and makes sure
// the console is on fds 0-2 (if the initramfs had no /dev/console node, the
// kernel started us without any).
func (b *boot) earlyMounts(context.Context) error {
	if err := (mountSpec{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"}).mount(); err != nil {
		return err
	}
	if err := attachConsole(); err != nil {
		return err
	}
	for _, m := range []mountSpec{
		{"proc", "/proc", "proc", mountNoExec, ""},
		{"sysfs", "/sys", "sysfs", mountNoExec, ""},
	} {
		if err := m.mount(); err != nil {
			return err
		}
	}
	// Nice to have for handlers (ptys, POSIX shared memory); not fatal.
	for _, m := range []mountSpec{
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "mode=0620,ptmxmode=0666"},
		{"shm", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	} {
		if err := m.mount(); err != nil {
			b.log.Warn("optional mount failed", "step", "early-mounts", "err", err)
		}
	}
	return nil
}

// attachConsole opens /dev/console onto fds 0, 1 and 2 when stdout is not open.
func attachConsole() error {
	if _, err := unix.FcntlInt(1, unix.F_GETFD, 0); err == nil {
		return nil
	}
	fd, err := unix.Open("/dev/console", unix.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return fmt.Errorf("opening /dev/console: %w", err)
	}
	for target := 0; target <= 2; target++ {
		if fd == target {
			continue
		}
		if err := unix.Dup3(fd, target, 0); err != nil {
			return fmt.Errorf("attaching /dev/console to fd %d: %w", target, err)
		}
	}
	if fd > 2 {
		_ = unix.Close(fd) // fds 0-2 hold it now
	}
	return nil
}

// probe answers the host's "can this machine boot a guest at all" test:
// with faas.probe=1 on the kernel command line, print the marker and reboot.
func (b *boot) probe(context.Context) error {
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return fmt.Errorf("reading kernel command line: %w", err)
	}
	if !cmdlineHas(string(cmdline), probeFlag) {
		return nil
	}
	fmt.Fprintln(os.Stdout, probeMessage)
	reboot(b.log, "probe answered")
	return errors.New("reboot after probe returned") // reboot does not return
}

// cmdlineHas reports whether the kernel command line has param as one of
// its space-separated words.
func cmdlineHas(cmdline, param string) bool {
	for _, f := range strings.Fields(cmdline) {
		if f == param {
			return true
		}
	}
	return false
}

func (b *boot) loadModules(context.Context) error {
	list, err := os.ReadFile(modulesList)
	if errors.Is(err, os.ErrNotExist) {
		b.log.Info("no module list; assuming the drivers are built in", "step", "load-modules", "path", modulesList)
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading module list: %w", err)
	}
	names := parseModuleList(string(list))
	passes, err := loadModules(names, func(name string) error {
		return finitModule(filepath.Join(modulesDir, name))
	})
	if err != nil {
		return err
	}
	b.log.Info("modules loaded", "step", "load-modules", "count", len(names), "passes", passes)
	return nil
}

func (b *boot) findDisks(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, diskWait)
	defer cancel()
	d, err := waitForDisks(ctx, "/sys/block", "/dev", devicePoll)
	if err != nil {
		return err
	}
	b.disks = d
	b.log.Info("disks found", "step", "find-disks", "rootfs", d.root, "code", d.code, "config", d.config, "deps", d.deps)
	return nil
}

func (b *boot) readConfig(context.Context) error {
	cfg, err := protocol.DecodeDisk(b.disks.configData)
	if err != nil {
		return fmt.Errorf("config disk %s: %w", b.disks.config, err)
	}
	b.cfg = cfg
	b.log = b.log.With("function", cfg.Name)
	b.log.Info("config read", "step", "read-config", "mode", cfg.Mode, "runtime", cfg.Runtime,
		"handler", cfg.Handler, "timeout", time.Duration(cfg.Timeout), "address", cfg.Network.Address)
	return nil
}

// mountRoot builds the future root: the shared read-only rootfs under a
// tmpfs overlay (so the guest can write, and nothing reaches the shared
// image), with the code disk read-only at protocol.CodeDir.
func (b *boot) mountRoot(context.Context) error {
	steps := []func() error{
		mountSpec{b.disks.root, lowerDir, "ext4", unix.MS_RDONLY, ""}.mount,
		mountSpec{"tmpfs", rwDir, "tmpfs", 0, "mode=0755"}.mount,
		func() error {
			for _, d := range []string{rwDir + "/upper", rwDir + "/work"} {
				if err := os.Mkdir(d, 0o755); err != nil {
					return fmt.Errorf("creating overlay directory: %w", err)
				}
			}
			return nil
		},
		mountSpec{"overlay", newRoot, "overlay", 0,
			"lowerdir=" + lowerDir + ",upperdir=" + rwDir + "/upper,workdir=" + rwDir + "/work"}.mount,
		mountSpec{b.disks.code, newRoot + protocol.CodeDir, "ext4", unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV, ""}.mount,
	}
	if b.disks.deps != "" {
		steps = append(steps, mountSpec{b.disks.deps, newRoot + protocol.DepsDir, "ext4", unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV, ""}.mount)
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}
	return nil
}

// switchRoot moves /proc, /sys and /dev into the new root, gives it fresh
// /tmp and /run, and makes it / (the initramfs is rootfs, which cannot be
// pivoted away: move the new root over it and chroot, as switch_root does).
// The agent keeps running from memory.
func (b *boot) switchRoot(context.Context) error {
	for _, d := range []string{"/proc", "/sys", "/dev"} {
		target := newRoot + d
		if err := os.MkdirAll(target, 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", target, err)
		}
		if err := unix.Mount(d, target, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("moving %s to %s: %w", d, target, err)
		}
	}
	for _, m := range []mountSpec{
		{"tmpfs", newRoot + "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"tmpfs", newRoot + "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	} {
		if err := m.mount(); err != nil {
			return err
		}
	}
	// The initramfs stays in memory under the new root: drop what it no
	// longer needs (the modules are loaded, the agent runs from memory).
	for _, p := range []string{modulesDir, initBinary} {
		if err := os.RemoveAll(p); err != nil {
			b.log.Warn("freeing initramfs", "step", "switch-root", "path", p, "err", err)
		}
	}
	if err := unix.Chdir(newRoot); err != nil {
		return fmt.Errorf("entering %s: %w", newRoot, err)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("moving %s to /: %w", newRoot, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot into the new root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("entering the new root: %w", err)
	}
	return nil
}

func (b *boot) network(ctx context.Context) error {
	if err := setupNetwork(ctx, b.cfg.Network, "/sys/class/net", "/etc"); err != nil {
		return err
	}
	b.log.Info("network configured", "step", "network", "address", b.cfg.Network.Address,
		"gateway", b.cfg.Network.Gateway, "dns", b.cfg.Network.DNS)
	return nil
}

// reboot syncs, lets the console drain and restarts the machine; QEMU runs
// with -no-reboot, so the VM exits. If the reboot call fails the agent
// exits, and the kernel's panic (panic=-1) restarts the machine instead.
func reboot(log *slog.Logger, why string) {
	log.Info("rebooting", "step", "reboot", "why", why)
	unix.Sync()
	drainConsole()
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	log.Error("reboot failed; exiting PID 1 instead", "step", "reboot", "err", err)
	drainConsole()
	os.Exit(1)
}

// drainConsole waits until the serial console has sent what was written
// to it (tcdrain), so the last lines reach the host before the machine goes.
func drainConsole() {
	_ = unix.IoctlSetInt(1, unix.TCSBRK, 1) // not a tty, or nothing pending: nothing to wait for
}
