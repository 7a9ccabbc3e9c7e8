// Package vm is the VM model every engine consumes and the small interface
// every engine implements.
//
// The model is Ignite's own VM object (github.com/weaveworks/ignite/pkg/apis/ignite):
// name, UID, CPUs, memory, kernel command line, image and status. What Ignite's
// object has no field for (host paths of the boot assets, the agent's config)
// travels beside it in Spec.
package vm

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/google/uuid"
	api "github.com/weaveworks/ignite/pkg/apis/ignite"
	"github.com/weaveworks/ignite/pkg/apis/ignite/scheme"
	"github.com/weaveworks/ignite/pkg/apis/ignite/validation"
	meta "github.com/weaveworks/ignite/pkg/apis/meta/v1alpha1"
	"github.com/weaveworks/libgitops/pkg/runtime"

	"github.com/faasvm/appliance/guest/protocol"
)

// Spec is one VM to start.
type Spec struct {
	// VM is the Ignite object: Name, UID, Spec.CPUs, Spec.Memory,
	// Spec.Kernel.CmdLine (extra kernel arguments), Spec.Image.OCI (the
	// runtime image the root filesystem was made from).
	VM *api.VM
	// Kernel is the host path of an uncompressed vmlinux.
	Kernel string
	// Initrd is the host path of the initramfs holding the guest agent.
	Initrd string
	// RootFS is the host path of the runtime's read-only ext4 image. Many
	// VMs share one file; engines must open it read-only.
	RootFS string
	// Code is the host path of the function's read-only ext4 code snapshot.
	Code string
	// Deps is the host path of the function's read-only ext4 dependency
	// disk (label protocol.DepsLabel), "" when it has none. Shared like
	// RootFS; Agent.Deps says it is attached.
	Deps string
	// Agent is the guest agent's configuration.
	Agent protocol.Config
	// Egress lets the guest open connections to the outside world. The
	// host's loopback and other VMs stay unreachable either way.
	Egress bool
}

// Validate reports the first problem with s.
func (s *Spec) Validate() error {
	if err := s.ValidateMachine(); err != nil {
		return err
	}
	for _, f := range []struct{ what, path string }{
		{"kernel", s.Kernel}, {"initrd", s.Initrd}, {"root filesystem", s.RootFS}, {"code disk", s.Code},
	} {
		if f.path == "" {
			return fmt.Errorf("vm spec %s: no %s path", s.VM.Name, f.what)
		}
		if _, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("vm spec %s: %s: %w", s.VM.Name, f.what, err)
		}
	}
	if s.Deps != "" {
		if _, err := os.Stat(s.Deps); err != nil {
			return fmt.Errorf("vm spec %s: dependency disk: %w", s.VM.Name, err)
		}
	}
	if (s.Deps != "") != s.Agent.Deps {
		return fmt.Errorf("vm spec %s: the agent config and the dependency disk disagree (disk %q, agent expects one: %v)", s.VM.Name, s.Deps, s.Agent.Deps)
	}
	if err := s.Agent.Validate(); err != nil {
		return fmt.Errorf("vm spec %s: %w", s.VM.Name, err)
	}
	return nil
}

// ValidateMachine reports the first problem with the VM object alone (name,
// UID, CPUs, memory): the part of Validate every engine needs, whichever
// of the host files it boots from.
func (s *Spec) ValidateMachine() error {
	if s.VM == nil {
		return errors.New("vm spec: no VM object")
	}
	if s.VM.Name == "" || s.VM.UID == "" {
		return errors.New("vm spec: VM needs a name and a UID")
	}
	if s.VM.Spec.CPUs < 1 {
		return fmt.Errorf("vm spec %s: cpus must be at least 1", s.VM.Name)
	}
	if s.VM.Spec.Memory.MBytes() < 64 {
		return fmt.Errorf("vm spec %s: memory %s is below the 64MB a guest needs", s.VM.Name, s.VM.Spec.Memory)
	}
	return nil
}

// Ignite's defaults for the images a VM object names. The qemu engine boots
// its own kernel and ignores them; the ignite engine uses them.
const (
	DefaultKernelImage  = "weaveworks/ignite-kernel:5.10.51"
	DefaultSandboxImage = "weaveworks/ignite:v0.10.0"
)

// NewVM returns an Ignite VM object with Ignite's defaults applied, the given
// name and a fresh UID.
func NewVM(name string) *api.VM {
	v := &api.VM{}
	scheme.Scheme.Default(v)
	// Defaulting the internal type leaves these unset; use Ignite's
	// v1alpha4 defaults.
	if v.Spec.CPUs == 0 {
		v.Spec.CPUs = 1
	}
	if v.Spec.Memory.Bytes() == 0 {
		v.Spec.Memory = meta.NewSizeFromBytes(512 * 1024 * 1024)
	}
	if v.Spec.DiskSize.Bytes() == 0 {
		v.Spec.DiskSize = meta.NewSizeFromBytes(4 * 1024 * 1024 * 1024)
	}
	if v.Spec.Kernel.OCI.IsUnset() {
		v.Spec.Kernel.OCI, _ = meta.NewOCIImageRef(DefaultKernelImage)
	}
	if v.Spec.Sandbox.OCI.IsUnset() {
		v.Spec.Sandbox.OCI, _ = meta.NewOCIImageRef(DefaultSandboxImage)
	}
	v.Name = name
	v.UID = runtime.UID(uuid.NewString())
	return v
}

// ValidateVM runs Ignite's own validation of a VM object.
func ValidateVM(v *api.VM) error {
	if errs := validation.ValidateVM(v); len(errs) > 0 {
		return fmt.Errorf("vm %s: %w", v.Name, errs.ToAggregate())
	}
	return nil
}

// Engine starts VMs.
//
// Snapshots fit beside it as an optional interface an engine may also
// implement (Snapshot a running Machine to a directory; Restore a Machine
// from one), discovered by a type assertion, so callers that only boot are
// not affected.
type Engine interface {
	// Name says which engine this is ("qemu", "ignite").
	Name() string
	// Start boots the VM described by spec and returns once the guest agent
	// answers its health check, or with an error naming the boot step that
	// failed. ctx bounds the boot only: the VM outlives it.
	Start(ctx context.Context, spec *Spec) (Machine, error)
}

// Machine is one running VM.
type Machine interface {
	// ID is the VM's UID.
	ID() string
	// Endpoint is the host:port of the guest agent's data listener, where
	// the function answers (what the gateway proxies to).
	Endpoint() string
	// ControlEndpoint is the host:port of the guest agent's control
	// listener (health, poweroff), reached only by the engine and the
	// controller, with the control secret.
	ControlEndpoint() string
	// ConsoleLog is the host path of the VM's console log.
	ConsoleLog() string
	// Wait blocks until the VM exits (returning why) or ctx is done.
	Wait(ctx context.Context) error
	// Stop powers the VM off cleanly, forcing it after ctx's deadline, and
	// removes every file the VM used on the host. It is safe to call twice.
	Stop(ctx context.Context) error
}

// ErrExited is wrapped by Wait's error when the VM's process ended.
var ErrExited = errors.New("vm exited")
