package ignite

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/faasvm/appliance/internal/vm"
)

// Container runtimes Ignite can run its sandbox containers with
// (`ignite run --runtime`).
const (
	RuntimeDocker     = "docker"
	RuntimeContainerd = "containerd"
)

// Network plugins Ignite can connect VMs with (`ignite run --network-plugin`).
const (
	// NetworkCNI is Ignite's default: a CNI bridge (10.61.0.0/16) on the
	// host, reachable from the host by IP.
	NetworkCNI = "cni"
	// NetworkDockerBridge uses Docker's default bridge (runtime docker only).
	NetworkDockerBridge = "docker-bridge"
)

// Defaults applied by Config.withDefaults.
const (
	DefaultIgnitePath     = "ignite"
	DefaultDockerPath     = "docker"
	DefaultBootTimeout    = 90 * time.Second // below the controller's 2m bound
	DefaultStopTimeout    = 10 * time.Second
	DefaultCommandTimeout = 30 * time.Second
	DefaultStatusInterval = 2 * time.Second
	DefaultLogInterval    = 10 * time.Second
)

// Config configures an Engine. The zero value of every field except
// StateDir and AgentPath means "use the default"; New applies the defaults
// and validates.
type Config struct {
	// IgnitePath is the ignite binary (v0.10.x): a path, or a name looked up
	// in PATH. Default DefaultIgnitePath.
	IgnitePath string
	// Runtime is the container runtime Ignite runs each VM's sandbox
	// container with: RuntimeDocker (default) or RuntimeContainerd.
	Runtime string
	// NetworkPlugin is NetworkCNI (default) or NetworkDockerBridge. Either
	// way the host reaches the guest agent at the VM's IP.
	NetworkPlugin string
	// DockerPath is the docker CLI, used with RuntimeDocker only, to read
	// the console of a VM that has already stopped (ignite logs refuses
	// then). Default DefaultDockerPath; a missing docker CLI only loses
	// those last lines.
	DockerPath string
	// AgentPath is the host path of the static guest agent binary
	// (CGO_ENABLED=0 go build ./guest/agent), copied into every VM.
	// Required.
	AgentPath string
	// StateDir is where per-VM directories live (StateDir/ignite/<uid>/:
	// the VM config handed to ignite, the agent config, the console log).
	// Required, absolute.
	StateDir string
	// KeepLogsDir, when set, receives each VM's console log on Stop (as
	// <name>-<uid>.console.log) instead of it being deleted with the VM's
	// directory; only the vm.DefaultKeptLogs newest of each VM name stay
	// (see vm.KeepLog). Must be absolute when set.
	KeepLogsDir string
	// BootTimeout bounds `ignite run` plus the wait for the agent's health
	// check (a first run of an image also imports it, which can take a
	// minute: import images beforehand, see docs/ignite.md). Default
	// DefaultBootTimeout.
	BootTimeout time.Duration
	// StopTimeout bounds the clean poweroff in Stop before the VM is
	// removed by force. Default DefaultStopTimeout.
	StopTimeout time.Duration
	// CommandTimeout bounds every CLI call other than `ignite run` (inspect,
	// ps, logs, rm). Default DefaultCommandTimeout.
	CommandTimeout time.Duration
	// StatusInterval is how often a running VM's state is read with
	// `ignite ps` to notice that it stopped. Default DefaultStatusInterval.
	StatusInterval time.Duration
	// LogInterval is how often a running VM's console log file is refreshed
	// from `ignite logs`. Default DefaultLogInterval.
	LogInterval time.Duration
	// Logger receives the engine's logs. Default slog.Default().
	Logger *slog.Logger
}

// withDefaults returns a copy of c with every unset field defaulted. It is
// the one place defaults are set.
func (c Config) withDefaults() Config {
	if c.IgnitePath == "" {
		c.IgnitePath = DefaultIgnitePath
	}
	if c.Runtime == "" {
		c.Runtime = RuntimeDocker
	}
	if c.NetworkPlugin == "" {
		c.NetworkPlugin = NetworkCNI
	}
	if c.DockerPath == "" {
		c.DockerPath = DefaultDockerPath
	}
	if c.BootTimeout == 0 {
		c.BootTimeout = DefaultBootTimeout
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = DefaultStopTimeout
	}
	if c.CommandTimeout == 0 {
		c.CommandTimeout = DefaultCommandTimeout
	}
	if c.StatusInterval == 0 {
		c.StatusInterval = DefaultStatusInterval
	}
	if c.LogInterval == 0 {
		c.LogInterval = DefaultLogInterval
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports the first problem with c. Unset fields that have a
// default are accepted.
func (c *Config) Validate() error {
	switch c.Runtime {
	case "", RuntimeDocker, RuntimeContainerd:
	default:
		return fmt.Errorf("ignite config: runtime %q is not %q or %q", c.Runtime, RuntimeDocker, RuntimeContainerd)
	}
	switch c.NetworkPlugin {
	case "", NetworkCNI:
	case NetworkDockerBridge:
		if c.Runtime == RuntimeContainerd {
			return fmt.Errorf("ignite config: network plugin %q needs runtime %q", NetworkDockerBridge, RuntimeDocker)
		}
	default:
		return fmt.Errorf("ignite config: network plugin %q is not %q or %q", c.NetworkPlugin, NetworkCNI, NetworkDockerBridge)
	}
	if c.AgentPath == "" {
		return errors.New("ignite config: agent path is empty")
	}
	if err := vm.ValidateDirs("ignite", c.StateDir, c.KeepLogsDir); err != nil {
		return err
	}
	return vm.ValidateDurations("ignite",
		vm.NamedDuration{Name: "boot timeout", Value: c.BootTimeout},
		vm.NamedDuration{Name: "stop timeout", Value: c.StopTimeout},
		vm.NamedDuration{Name: "command timeout", Value: c.CommandTimeout},
		vm.NamedDuration{Name: "status interval", Value: c.StatusInterval},
		vm.NamedDuration{Name: "log interval", Value: c.LogInterval},
	)
}
