package ignite

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/containers/image/docker/reference"
	"github.com/google/uuid"
	api "github.com/weaveworks/ignite/pkg/apis/ignite"
	"github.com/weaveworks/ignite/pkg/apis/ignite/scheme"
	meta "github.com/weaveworks/ignite/pkg/apis/meta/v1alpha1"
	"github.com/weaveworks/ignite/pkg/version"
	"github.com/weaveworks/libgitops/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/faasvm/appliance/guest/protocol"
	"github.com/faasvm/appliance/internal/vm"
)

// Where the engine puts things inside an Ignite VM (through the VM config's
// copyFiles). guest/ignite/faas-agent.service and function.mount refer to
// the same paths.
const (
	// GuestAgentPath is the agent binary, started by faas-agent.service.
	GuestAgentPath = "/usr/lib/faas/agent"
	// GuestConfigPath is the agent's JSON config (protocol.Config).
	GuestConfigPath = "/etc/faas/agent.json"
	// GuestCodeImage is the function's code snapshot, the same read-only
	// ext4 image (label protocol.CodeLabel) the qemu engine attaches as a
	// disk; function.mount loop-mounts it read-only at protocol.CodeDir.
	GuestCodeImage = "/var/lib/faas/code.ext4"
)

// DefaultCmdLine is Ignite v0.10's default kernel command line. ip=dhcp
// matters: the kernel configures eth0 from ignite-spawn's DHCP server, so
// the image needs no network tooling.
const DefaultCmdLine = "console=ttyS0 reboot=k panic=1 pci=off ip=dhcp"

// Labels the engine puts on every VM it creates.
const (
	// LabelOwner's value identifies the engine (a hash of its state dir),
	// so Cleanup removes only its own leftovers.
	LabelOwner = "faasvm.io/owner"
	// LabelFunction is the function's name.
	LabelFunction = "faasvm.io/function"
	// LabelVMID is the appliance's VM ID (vm.Machine.ID).
	LabelVMID = "faasvm.io/vm-id"
)

// ImageSuffix is appended to a runtime image's repository to name its
// Ignite variant (guest/ignite/Dockerfile layered on it).
const ImageSuffix = "-ignite"

// ImageFor returns the Ignite variant of a runtime image: the same
// repository with ImageSuffix and the same tag ("latest" when none), e.g.
// faasvm/runtime-python3:latest → faasvm/runtime-python3-ignite:latest. A
// repository that already ends in ImageSuffix is taken as it is. Digest
// references are refused: the variant is a different image.
func ImageFor(base string) (string, error) {
	named, err := reference.ParseNormalizedNamed(base)
	if err != nil {
		return "", fmt.Errorf("image %q: %w", base, err)
	}
	if _, ok := named.(reference.Digested); ok {
		return "", fmt.Errorf("image %q: a digest names one exact image, but VMs boot its Ignite variant (%s): name it by tag", base, ImageSuffix)
	}
	tag := "latest"
	if t, ok := named.(reference.Tagged); ok {
		tag = t.Tag()
	}
	name := reference.FamiliarName(named)
	if !strings.HasSuffix(name, ImageSuffix) {
		name += ImageSuffix
	}
	return name + ":" + tag, nil
}

// IgniteUID turns a VM's UID into the 16 lowercase hex digits Ignite
// requires: the first 16 hex digits of a UUID (so `ignite ps` and the
// appliance's logs are easy to match up), else a hash of the UID.
func IgniteUID(uid string) string {
	if u, err := uuid.Parse(uid); err == nil {
		return strings.ReplaceAll(u.String(), "-", "")[:16]
	}
	sum := sha256.Sum256([]byte(uid))
	return hex.EncodeToString(sum[:8])
}

// VMName is the Ignite VM name of an instance of a function: unique, since
// a function runs several instances and Ignite names must be unique.
func VMName(function, igniteUID string) string {
	return function + "-" + igniteUID
}

// ownerID identifies an engine by its state directory.
func ownerID(stateDir string) string {
	sum := sha256.Sum256([]byte(stateDir))
	return hex.EncodeToString(sum[:6])
}

// kernelCmdLine is Ignite's default command line plus each word of extra
// it does not already hold. (A VM template decoded by Ignite's scheme
// already carries the default; the qemu engine, too, treats cmdLine as
// extra arguments.)
func kernelCmdLine(extra string) string {
	words := strings.Fields(DefaultCmdLine)
	for _, w := range strings.Fields(extra) {
		if !slices.Contains(words, w) {
			words = append(words, w)
		}
	}
	return strings.Join(words, " ")
}

// vmInput is everything buildVM turns into an Ignite VM object.
type vmInput struct {
	Spec      *vm.Spec
	Image     string    // the Ignite image to boot (ImageFor of the runtime image)
	AgentPath string    // host path of the agent binary
	Config    string    // host path of the agent's JSON config
	Code      string    // host path of the code image
	Owner     string    // LabelOwner value
	Created   time.Time // creation time recorded in the object
}

// buildVM returns the Ignite VM object for one instance: name, Ignite UID
// and labels; the image to boot; the VM template's sandbox, kernel image,
// CPUs, memory and disk size; Ignite's kernel command line plus the
// template's extra words; and copyFiles bringing the agent, its config and
// the code snapshot in. Fields the engine cannot honour (ssh, ports,
// volumes, the template's own copyFiles) are left out: the function loader
// already warns about them.
func buildVM(in vmInput) (*api.VM, error) {
	src := in.Spec.VM
	uid := IgniteUID(string(src.UID))
	image, err := meta.NewOCIImageRef(in.Image)
	if err != nil {
		return nil, fmt.Errorf("image %q: %w", in.Image, err)
	}
	v := &api.VM{}
	v.Name = VMName(src.Name, uid)
	v.UID = runtime.UID(uid)
	v.Created = runtime.Time{}
	v.Created.Time.Time = in.Created.UTC().Truncate(time.Second)
	v.SetLabel(LabelOwner, in.Owner)
	v.SetLabel(LabelFunction, in.Spec.Agent.Name)
	v.SetLabel(LabelVMID, string(src.UID))

	v.Spec.Image.OCI = image
	v.Spec.Sandbox.OCI = src.Spec.Sandbox.OCI
	if v.Spec.Sandbox.OCI.IsUnset() || v.Spec.Sandbox.OCI.String() == unreleasedSandbox() {
		v.Spec.Sandbox.OCI, _ = meta.NewOCIImageRef(vm.DefaultSandboxImage)
	}
	v.Spec.Kernel.OCI = src.Spec.Kernel.OCI
	if v.Spec.Kernel.OCI.IsUnset() {
		v.Spec.Kernel.OCI, _ = meta.NewOCIImageRef(vm.DefaultKernelImage)
	}
	v.Spec.Kernel.CmdLine = kernelCmdLine(src.Spec.Kernel.CmdLine)
	v.Spec.CPUs = src.Spec.CPUs
	v.Spec.Memory = src.Spec.Memory
	v.Spec.DiskSize = src.Spec.DiskSize
	if v.Spec.DiskSize.Bytes() == 0 {
		v.Spec.DiskSize = meta.NewSizeFromBytes(defaultDiskSize)
	}
	v.Spec.CopyFiles = []api.FileMapping{
		{HostPath: in.AgentPath, VMPath: GuestAgentPath},
		{HostPath: in.Config, VMPath: GuestConfigPath},
		{HostPath: in.Code, VMPath: GuestCodeImage},
	}
	if err := vm.ValidateVM(v); err != nil {
		return nil, err
	}
	return v, nil
}

// unreleasedSandbox is the sandbox image Ignite's library defaults a VM to
// when it decodes a config without one (a v1alpha2 config such as the
// seed's, or a template leaving sandbox out): "weaveworks/ignite:dev", since
// only release builds of the ignite binary set the tag. No such image
// exists; the engine boots vm.DefaultSandboxImage instead.
func unreleasedSandbox() string {
	return version.GetIgnite().SandboxImage.String()
}

// defaultDiskSize is Ignite's default VM disk size (4GB).
const defaultDiskSize = 4 << 30

// encodeVMConfig renders v the way `ignite run --config` reads it: YAML of
// apiVersion ignite.weave.works/v1alpha4, written by Ignite's own scheme
// serializer, without the status section. (Ignite patches the file onto a
// VM it has already given a status: the runtime, network plugin and ID
// prefix chosen by flags. An encoded empty status would overwrite them.)
func encodeVMConfig(v *api.VM) ([]byte, error) {
	js, err := scheme.Serializer.EncodeJSON(v)
	if err != nil {
		return nil, fmt.Errorf("encoding vm %s: %w", v.Name, err)
	}
	var obj map[string]any
	if err := json.Unmarshal(js, &obj); err != nil {
		return nil, fmt.Errorf("encoding vm %s: %w", v.Name, err)
	}
	delete(obj, "status")
	out, err := yaml.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("encoding vm %s: %w", v.Name, err)
	}
	return out, nil
}

// decodeVMConfig is what `ignite run --config` does with the file first:
// Ignite's scheme decoder (strict, with conversion and defaults).
func decodeVMConfig(b []byte) (*api.VM, error) {
	v := &api.VM{}
	if err := scheme.Serializer.DecodeInto(b, v); err != nil {
		return nil, fmt.Errorf("decoding vm config: %w", err)
	}
	return v, nil
}

// agentConfig is the agent's JSON config as the VM gets it. The guest's
// network comes from Ignite (DHCP through the kernel's ip=dhcp), so the
// agent is told to configure none; in development mode it would not anyway.
func agentConfig(c protocol.Config) ([]byte, error) {
	c.Network = protocol.Network{}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding agent config: %w", err)
	}
	return append(b, '\n'), nil
}
