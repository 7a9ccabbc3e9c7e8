package qemu

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/faasvm/appliance/internal/vm"
)

// Accelerator choices for Config.Accel.
const (
	// AccelAuto uses KVM when /dev/kvm opens and a probe guest really runs
	// under it, and falls back to TCG (with a warning) otherwise.
	AccelAuto = "auto"
	// AccelKVM requires KVM; starting a VM fails when KVM is unusable.
	AccelKVM = "kvm"
	// AccelTCG always uses QEMU's software emulation.
	AccelTCG = "tcg"
)

// Defaults applied by Config.withDefaults.
const (
	DefaultQEMUPath = "qemu-system-x86_64"
	// DefaultUIDBase and DefaultUIDCount place the VM user pools at uids
	// 40000-40999 (no egress) and 41000-41999 (egress): inside the 65536
	// ids a user-namespaced container has, away from system and login
	// users.
	DefaultUIDBase  = 40000
	DefaultUIDCount = 1000
	// DefaultBootTimeout is generous because under TCG on a busy host a
	// guest (and an interpreter starting in it) runs many times slower; a
	// handler that fails to start is reported at once, not at the timeout.
	DefaultBootTimeout  = 90 * time.Second
	DefaultStopTimeout  = 10 * time.Second
	DefaultProbeTimeout = 20 * time.Second
)

// Config configures an Engine. The zero value of every field except
// StateDir means "use the default"; New applies the defaults and validates.
type Config struct {
	// QEMUPath is the qemu-system-x86_64 binary: a path, or a name looked up
	// in PATH. Default DefaultQEMUPath.
	QEMUPath string
	// UIDBase is the first user ID QEMU runs as (each VM its own uid, and
	// gid of the same number; see UIDPools). Default DefaultUIDBase;
	// negative: QEMU runs as the engine's own user. An engine that is not
	// root runs QEMU as itself whatever this says.
	UIDBase int
	// UIDCount is the size of each of the two pools (VMs without and with
	// egress), so at most this many VMs of a kind run at once. Snapshots'
	// RAM files get group IDs of their own right after both pools (2 x
	// UIDCount of them). Default DefaultUIDCount.
	UIDCount int
	// Firewall keeps the VMs' own connections off the appliance. Without
	// one (nil), VMs with egress are refused: the guest could reach the
	// gateway and the host through the container's addresses.
	Firewall Firewall
	// Accel is AccelAuto, AccelKVM or AccelTCG. Default AccelAuto.
	Accel string
	// StateDir is where per-VM directories live (StateDir/vms/<uid>/: config
	// disk, console log, QMP socket, pid files). Required, absolute.
	StateDir string
	// KeepLogsDir, when set, receives each VM's console log on Stop (as
	// <name>-<uid>.console.log) instead of it being deleted with the VM's
	// directory; only the vm.DefaultKeptLogs newest of each VM name stay
	// (see vm.KeepLog). Must be absolute when set.
	KeepLogsDir string
	// ConsoleMaxSize bounds each running VM's console log on disk (the
	// newest output is kept; see console.go). Default
	// DefaultConsoleMaxSize; at least 16 KiB is used.
	ConsoleMaxSize int64
	// BootTimeout bounds Start from the network step (just before QEMU is
	// launched) until the guest agent answers its health check. Default
	// DefaultBootTimeout.
	BootTimeout time.Duration
	// StopTimeout bounds the clean poweroff in Stop before QEMU is told to
	// quit and then killed. Default DefaultStopTimeout.
	StopTimeout time.Duration
	// ProbeTimeout bounds the probe boot that decides whether KVM works
	// (Accel AccelAuto or AccelKVM). Default DefaultProbeTimeout.
	ProbeTimeout time.Duration
	// TBSizeMiB sizes the TCG translation cache of each VM (QEMU's
	// tb-size, in MiB); 0 keeps QEMU's default. Only under TCG.
	TBSizeMiB int
	// Logger receives the engine's logs. Default slog.Default().
	Logger *slog.Logger
}

// withDefaults returns a copy of c with every unset field defaulted. It is
// the one place defaults are set.
func (c Config) withDefaults() Config {
	if c.QEMUPath == "" {
		c.QEMUPath = DefaultQEMUPath
	}
	if c.UIDBase == 0 {
		c.UIDBase = DefaultUIDBase
	}
	if c.UIDCount == 0 {
		c.UIDCount = DefaultUIDCount
	}
	if c.Accel == "" {
		c.Accel = AccelAuto
	}
	if c.ConsoleMaxSize <= 0 {
		c.ConsoleMaxSize = DefaultConsoleMaxSize
	}
	if c.BootTimeout == 0 {
		c.BootTimeout = DefaultBootTimeout
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = DefaultStopTimeout
	}
	if c.ProbeTimeout == 0 {
		c.ProbeTimeout = DefaultProbeTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports the first problem with c. Unset fields that have a
// default are accepted.
func (c *Config) Validate() error {
	switch c.Accel {
	case "", AccelAuto, AccelKVM, AccelTCG:
	default:
		return fmt.Errorf("qemu config: accel %q is not %q, %q or %q", c.Accel, AccelAuto, AccelKVM, AccelTCG)
	}
	if c.TBSizeMiB < 0 {
		return fmt.Errorf("qemu config: tb size %d MiB is negative", c.TBSizeMiB)
	}
	if c.UIDCount < 0 {
		return fmt.Errorf("qemu config: uid count %d is negative", c.UIDCount)
	}
	if d := c.withDefaults(); d.UIDBase > 0 && int64(d.UIDBase)+4*int64(d.UIDCount) > math.MaxUint32-1 {
		return fmt.Errorf("qemu config: uids from %d for 2 x %d VMs (and as many snapshot groups after them) go past the largest user id", d.UIDBase, d.UIDCount)
	}
	if err := vm.ValidateDirs("qemu", c.StateDir, c.KeepLogsDir); err != nil {
		return err
	}
	// A QMP socket path must fit in sockaddr_un (108 bytes with the NUL).
	if n := len(vmDir(c.StateDir, exampleUID)) + len("/"+qmpSocketName); n > maxUnixPath {
		return fmt.Errorf("qemu config: state dir %q is too long: VM sockets would need %d bytes, unix sockets allow %d", c.StateDir, n, maxUnixPath)
	}
	return vm.ValidateDurations("qemu",
		vm.NamedDuration{Name: "boot timeout", Value: c.BootTimeout},
		vm.NamedDuration{Name: "stop timeout", Value: c.StopTimeout},
		vm.NamedDuration{Name: "probe timeout", Value: c.ProbeTimeout},
	)
}

// maxUnixPath is the longest path a unix socket address holds on Linux.
const maxUnixPath = 107

// exampleUID has the length of the UIDs vm.NewVM makes (a UUID string).
const exampleUID = "00000000-0000-0000-0000-000000000000"

// Firewall keeps what QEMU processes connect to themselves (user-mode
// networking makes a guest's connections from inside QEMU) away from the
// appliance: for the uids of VMs without egress, no new connection at all;
// for those with egress, nothing local, link-local, on the local networks
// or on the operator's deny list. Engine.Start calls Ensure before every
// boot, so rules are refreshed when the host's addresses change.
type Firewall interface {
	Ensure(ctx context.Context) error
}
