package qemu

import (
	"fmt"
	"log/slog"
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
	DefaultQEMUPath  = "qemu-system-x86_64"
	DefaultPasstPath = "passt"
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
	// PasstPath is the passt binary, used only for VMs with egress. Default
	// DefaultPasstPath. A missing passt fails only the VMs that need it.
	PasstPath string
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
	// Logger receives the engine's logs. Default slog.Default().
	Logger *slog.Logger
}

// withDefaults returns a copy of c with every unset field defaulted. It is
// the one place defaults are set.
func (c Config) withDefaults() Config {
	if c.QEMUPath == "" {
		c.QEMUPath = DefaultQEMUPath
	}
	if c.PasstPath == "" {
		c.PasstPath = DefaultPasstPath
	}
	if c.Accel == "" {
		c.Accel = AccelAuto
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
