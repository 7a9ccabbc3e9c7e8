package function

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	api "github.com/weaveworks/ignite/pkg/apis/ignite"
	"github.com/weaveworks/ignite/pkg/apis/ignite/scheme"
	meta "github.com/weaveworks/ignite/pkg/apis/meta/v1alpha1"
	"sigs.k8s.io/yaml"

	"github.com/faasvm/appliance/internal/vm"
)

// Engines Load knows the VM config fields of.
const (
	EngineQEMU   = "qemu"
	EngineIgnite = "ignite"
)

// vmConfigNames are the file names that always hold an Ignite VM config.
// Any other top-level *.yml / *.yaml file is one when it says kind: VM and
// apiVersion: ignite.weave.works/...
var vmConfigNames = []string{"func-handler.yml", "vm.yaml", "vm.yml"}

// igniteGroup is the API group of Ignite's objects.
const igniteGroup = "ignite.weave.works/"

// minMemoryMB is the least memory a guest boots with (internal/vm checks
// the same bound).
const minMemoryMB = 64

// vmField is one VM config field the merge and the warnings know.
type vmField struct {
	path  string                         // as written in YAML, below spec
	isSet func(spec map[string]any) bool // whether a config file sets it
	copy  func(dst, src *api.VMSpec)     // merges it (ignored fields too, for the record); nil: never merged
}

func has(keys ...string) func(map[string]any) bool {
	return func(m map[string]any) bool {
		var cur any = m
		for _, k := range keys {
			mm, ok := cur.(map[string]any)
			if !ok {
				return false
			}
			if cur, ok = mm[k]; !ok || cur == nil {
				return false
			}
		}
		return true
	}
}

// vmFields are the spec fields a folder's VM config may set, in the order
// warnings are reported.
var vmFields = []vmField{
	{"image.oci", has("image", "oci"), func(d, s *api.VMSpec) { d.Image = s.Image }},
	// Never merged (neverFromFolder): they choose what runs on the host.
	{"sandbox.oci", has("sandbox", "oci"), nil},
	{"kernel.oci", has("kernel", "oci"), nil},
	{"kernel.cmdLine", has("kernel", "cmdLine"), func(d, s *api.VMSpec) { d.Kernel.CmdLine = s.Kernel.CmdLine }},
	{"cpus", has("cpus"), func(d, s *api.VMSpec) { d.CPUs = s.CPUs }},
	{"memory", has("memory"), func(d, s *api.VMSpec) { d.Memory = s.Memory }},
	{"diskSize", has("diskSize"), func(d, s *api.VMSpec) { d.DiskSize = s.DiskSize }},
	{"network.ports", has("network", "ports"), func(d, s *api.VMSpec) { d.Network = s.Network }},
	{"storage", has("storage"), func(d, s *api.VMSpec) { d.Storage = s.Storage }},
	{"copyFiles", has("copyFiles"), func(d, s *api.VMSpec) { d.CopyFiles = s.CopyFiles }},
	{"ssh", has("ssh"), func(d, s *api.VMSpec) { d.SSH = s.SSH }},
}

// ignoredFields says, per engine, which VM config fields mean nothing to it
// and why. They are still merged into Spec.VM (it records what was asked)
// and reported as warnings.
var ignoredFields = map[string]map[string]string{
	EngineQEMU: {
		"image.oci":     "the runtime decides the root filesystem (set image in function.yaml to use another image)",
		"diskSize":      "the root filesystem is a shared read-only image and the code comes on its own disk",
		"network.ports": "functions are reached through the gateway at /invoke/<name>",
		"storage":       "a function gets no volumes besides its code",
		"copyFiles":     "the function's folder is its code; put the files in it",
		"ssh":           "the appliance talks to the guest agent over HTTP; nothing listens for SSH",
	},
	EngineIgnite: {
		"image.oci":     "the runtime decides the root filesystem (set image in function.yaml to use another image)",
		"network.ports": "functions are reached through the gateway at /invoke/<name>",
		"storage":       "a function gets no volumes besides its code",
		"copyFiles":     "the function's folder is its code; put the files in it",
		"ssh":           "the appliance talks to the guest agent over HTTP; nothing listens for SSH",
	},
}

// vmConfig is a folder's decoded VM config.
type vmConfig struct {
	file string
	vm   *api.VM
	set  []vmField // fields the file sets, in vmFields order
}

// LoadTemplate reads the appliance's default VM template (an Ignite VM
// config, any apiVersion Ignite knows). Every function's VM starts from a
// copy of it.
func LoadTemplate(path string) (*api.VM, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading vm template: %w", err)
	}
	vc, err := decodeVMConfig(filepath.Base(path), data)
	if err != nil {
		return nil, fmt.Errorf("vm template %s: %w", path, err)
	}
	return vc.vm, nil
}

// defaultVM is Ignite's v1alpha4 defaults, used when Load has no template.
func defaultVM() *api.VM {
	v := &api.VM{}
	// Decoding a bare object is how Ignite's own defaults get applied.
	if err := scheme.Serializer.DecodeInto([]byte("apiVersion: ignite.weave.works/v1alpha4\nkind: VM\n"), v); err != nil {
		panic(fmt.Sprintf("decoding an empty ignite vm: %v", err)) // cannot happen: a constant input
	}
	return v
}

// isVMConfigCandidate reports whether a top-level file should be read as an
// Ignite VM config, looking at its name and, for other YAML files, at its
// kind and apiVersion.
func isVMConfigCandidate(name string, data []byte) bool {
	if slices.Contains(vmConfigNames, name) {
		return true
	}
	ext := filepath.Ext(name)
	if (ext != ".yml" && ext != ".yaml") || name == ManifestFile || name == manifestAltFile {
		return false
	}
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(data, &head); err != nil {
		return false // not YAML we understand: the function's own data
	}
	return head.Kind == "VM" && strings.HasPrefix(head.APIVersion, igniteGroup)
}

// decodeVMConfig decodes an Ignite VM config with Ignite's own scheme
// (conversion from v1alpha2..v1alpha4, strict fields, Ignite's defaults)
// and records which spec fields the file itself sets.
func decodeVMConfig(file string, data []byte) (*vmConfig, error) {
	var raw map[string]any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, invalidf("%s: %s", file, yamlMessage(err))
	}
	kind, _ := raw["kind"].(string)
	apiVersion, _ := raw["apiVersion"].(string)
	if kind != "VM" || !strings.HasPrefix(apiVersion, igniteGroup) {
		return nil, invalidf("%s: not an Ignite VM config: want kind: VM and apiVersion: %sv1alpha4 (or v1alpha2, v1alpha3), got kind %q, apiVersion %q",
			file, igniteGroup, kind, apiVersion)
	}
	v := &api.VM{}
	if err := scheme.Serializer.DecodeInto(data, v); err != nil {
		return nil, invalidf("%s: %s", file, cleanDecodeError(err, data))
	}
	// A reference the file leaves unset (Ignite's scheme defaults most,
	// not all) has no String: it panics. Refuse rather than crash.
	// (The image is the appliance's choice: the controller sets it.)
	switch {
	case v.Spec.Kernel.OCI.IsUnset():
		return nil, invalidf("%s: spec.kernel.oci is empty (is apiVersion one Ignite knows?)", file)
	case v.Spec.Sandbox.OCI.IsUnset():
		return nil, invalidf("%s: spec.sandbox.oci is empty (is apiVersion one Ignite knows?)", file)
	}
	if v.Spec.Sandbox.OCI.String() == devSandboxImage {
		// The library defaults an unnamed sandbox to its unreleased dev tag;
		// name the release this appliance supports instead.
		v.Spec.Sandbox.OCI, _ = meta.NewOCIImageRef(vm.DefaultSandboxImage)
	}
	vc := &vmConfig{file: file, vm: v}
	spec, _ := raw["spec"].(map[string]any)
	for _, f := range vmFields {
		if f.isSet(spec) {
			vc.set = append(vc.set, f)
		}
	}
	return vc, nil
}

// devSandboxImage is what Ignite's library defaults an unset sandbox image to.
const devSandboxImage = "weaveworks/ignite:dev"

// cleanDecodeError shortens the errors of Ignite's strict decoder, which
// repeat the whole document and a JSON excerpt.
func cleanDecodeError(err error, data []byte) string {
	msg := err.Error()
	msg = strings.Replace(msg, "strict decoder error for "+string(data)+": ", "", 1)
	if i := strings.Index(msg, ", error found in #"); i >= 0 {
		msg = msg[:i]
	}
	return msg
}

// findVMConfig returns the folder's VM config, or nil when it has none.
func findVMConfig(t *tree) (*vmConfig, error) {
	var found []string
	for name := range t.files {
		data, ok := t.top[name]
		if !ok {
			if slices.Contains(vmConfigNames, name) {
				return nil, invalidf("%s is larger than %d bytes", name, maxParsedFile)
			}
			continue // too large to be a config: the function's data
		}
		if isVMConfigCandidate(name, data) {
			found = append(found, name)
		}
	}
	sort.Strings(found)
	switch len(found) {
	case 0:
		return nil, nil
	case 1:
		return decodeVMConfig(found[0], t.top[found[0]])
	default:
		return nil, invalidf("several Ignite VM configs: %s; keep one", strings.Join(found, ", "))
	}
}

// mergeVM builds the function's VM: a copy of the template (Ignite's
// defaults when nil), then the appliance defaults for memory and CPUs, then
// every field the folder's VM config sets, then function.yaml's memory and
// cpus. The VM is named after the function and has no UID: the caller gives
// each instance its own.
func mergeVM(name string, template *api.VM, d Defaults, vc *vmConfig, memory *meta.Size, cpus int) (*api.VM, error) {
	var v *api.VM
	if template != nil {
		v = template.DeepCopy()
	} else {
		v = defaultVM()
	}
	v.Name = name
	v.UID = ""
	if d.Memory != "" {
		size, err := meta.NewSizeFromString(d.Memory)
		if err != nil {
			return nil, fmt.Errorf("defaults: memory %q: %w", d.Memory, err)
		}
		v.Spec.Memory = size
	}
	if d.CPUs > 0 {
		v.Spec.CPUs = uint64(d.CPUs)
	}
	if vc != nil {
		for _, f := range vc.set {
			if f.copy != nil {
				f.copy(&v.Spec, &vc.vm.Spec)
			}
		}
	}
	if memory != nil {
		v.Spec.Memory = *memory
	}
	if cpus > 0 {
		v.Spec.CPUs = uint64(cpus)
	}
	if v.Spec.CPUs < 1 {
		return nil, invalidf("vm: cpus must be at least 1, got %d", v.Spec.CPUs)
	}
	if v.Spec.Memory.MBytes() < minMemoryMB {
		return nil, invalidf("vm: memory %s is below the %dMB a guest needs", v.Spec.Memory, minMemoryMB)
	}
	return v, nil
}

// vmWarnings reports the fields the folder's VM config sets that are never
// taken from a folder, and those the engine ignores.
func vmWarnings(vc *vmConfig, engine string) []string {
	if vc == nil {
		return nil
	}
	var out []string
	for _, f := range vc.set {
		if why, ok := neverFromFolder[f.path]; ok {
			out = append(out, fmt.Sprintf("%s: spec.%s is never taken from a function folder, so it is not used: %s", vc.file, f.path, why))
			continue
		}
		if why, ok := ignoredFields[engine][f.path]; ok {
			out = append(out, fmt.Sprintf("%s: spec.%s is ignored by the %s engine: %s", vc.file, f.path, engine, why))
		}
	}
	return out
}
