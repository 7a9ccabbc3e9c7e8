package function

import (
	"regexp"
	"strings"
	"time"

	"github.com/containers/image/docker/reference"
	meta "github.com/weaveworks/ignite/pkg/apis/meta/v1alpha1"
)

// Policy is the operator's say over what a function folder may ask for
// (internal/config's policy: section). A function outside it is invalid,
// with a reason naming the setting; the appliance always sets every limit.
// Zero limits mean no limit (for tests and tools that load folders
// outside an appliance).
type Policy struct {
	// AllowedImages are patterns an image: in function.yaml must match, in
	// its short form (python:3.12-slim) or its full one
	// (docker.io/library/python:3.12-slim); * matches any run of
	// characters. Empty: no image: at all, only the shipped runtimes.
	AllowedImages []string
	// MaxMemoryMB and MaxCPUs bound the function's VM, whoever set its
	// memory and CPUs (function.yaml, the folder's VM config, the
	// appliance's defaults or template).
	MaxMemoryMB int64
	MaxCPUs     int
	// MaxReplicas bounds minReplicas and maxReplicas.
	MaxReplicas int
	// MaxConcurrency bounds concurrency.
	MaxConcurrency int
	// MaxTimeout bounds the invocation timeout.
	MaxTimeout time.Duration
	// AllowEgress lets a function turn egress on (function.yaml egress:
	// true). Defaults.Egress on implies it.
	AllowEgress bool
}

// policyError is a folder outside the operator's policy.
func policyError(format string, args ...any) error {
	return invalidf(format+" (the operator's policy)", args...)
}

// checkImage refuses an image: no pattern of the policy allows.
func (p Policy) checkImage(mfile, ref string) error {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return invalidf("%s: image %q: %v", mfile, ref, err)
	}
	forms := []string{ref, reference.FamiliarString(named), named.String()}
	for _, pat := range p.AllowedImages {
		re := globRE(pat)
		for _, f := range forms {
			if re.MatchString(f) {
				return nil
			}
		}
	}
	if len(p.AllowedImages) == 0 {
		return policyError("%s: image %q is not allowed: functions run only the shipped runtimes (set runtime: python3, node or bash; an operator may allow images with policy.allowed_images)", mfile, ref)
	}
	return policyError("%s: image %q is not allowed: images must match %s (policy.allowed_images), or use a shipped runtime", mfile, ref, strings.Join(p.AllowedImages, ", "))
}

// globRE turns an image pattern into an anchored regexp: * matches any
// run of characters, everything else itself.
func globRE(pat string) *regexp.Regexp {
	parts := strings.Split(pat, "*")
	for i, part := range parts {
		parts[i] = regexp.QuoteMeta(part)
	}
	return regexp.MustCompile("^" + strings.Join(parts, ".*") + "$")
}

// checkLimits refuses a spec over the policy's bounds. origin says where a
// VM setting came from, for the message.
func (p Policy) checkLimits(s *Spec, mfile string, memOrigin, cpuOrigin string) error {
	switch mem := s.VM.Spec.Memory; {
	case p.MaxMemoryMB > 0 && int64(mem.MBytes()) > p.MaxMemoryMB:
		return policyError("memory %s (%s) is over the limit of %s (policy.max_memory)", mem, memOrigin, meta.NewSizeFromBytes(uint64(p.MaxMemoryMB)<<20))
	case p.MaxCPUs > 0 && s.VM.Spec.CPUs > uint64(p.MaxCPUs):
		return policyError("cpus %d (%s) is over the limit of %d (policy.max_cpus)", s.VM.Spec.CPUs, cpuOrigin, p.MaxCPUs)
	case p.MaxReplicas > 0 && s.Scale.MaxReplicas > p.MaxReplicas:
		return policyError("%s: maxReplicas %d is over the limit of %d (policy.max_replicas)", mfile, s.Scale.MaxReplicas, p.MaxReplicas)
	case p.MaxReplicas > 0 && s.Scale.MinReplicas > p.MaxReplicas:
		return policyError("%s: minReplicas %d is over the limit of %d (policy.max_replicas)", mfile, s.Scale.MinReplicas, p.MaxReplicas)
	case p.MaxConcurrency > 0 && s.Scale.Concurrency > p.MaxConcurrency:
		return policyError("%s: concurrency %d is over the limit of %d (policy.max_concurrency)", mfile, s.Scale.Concurrency, p.MaxConcurrency)
	case p.MaxTimeout > 0 && s.Timeout > p.MaxTimeout:
		return policyError("%s: timeout %s is over the limit of %s (policy.max_timeout)", mfile, s.Timeout, p.MaxTimeout)
	}
	return nil
}

// checkEgress refuses egress the operator does not allow.
func (p Policy) checkEgress(mfile string, d Defaults) error {
	if p.AllowEgress || d.Egress {
		return nil
	}
	return policyError("%s: egress: true is not allowed: the operator keeps functions off the network (egress false, policy.allow_egress %s)",
		mfile, map[bool]string{true: "true", false: "auto or false"}[p.AllowEgress])
}

// origin names where a VM setting came from.
func origin(fromManifest bool, mfile string, vc *vmConfig, field string) string {
	switch {
	case fromManifest:
		return "from " + mfile
	case vc != nil && vc.sets(field):
		return "from " + vc.file
	}
	return "from the appliance's defaults or VM template"
}

// sets reports whether the VM config file sets field (a vmFields path).
func (vc *vmConfig) sets(field string) bool {
	for _, f := range vc.set {
		if f.path == field {
			return true
		}
	}
	return false
}

// neverFromFolder are the VM config fields a function folder cannot set,
// whatever the engine: they pick what runs on the host. They are reported
// as warnings and never merged.
var neverFromFolder = map[string]string{
	"sandbox.oci": "the sandbox image runs on the host (with Ignite, with SYS_ADMIN, NET_ADMIN and /dev/kvm): only the appliance's VM template (vm_template) chooses it",
	"kernel.oci":  "the kernel comes from the appliance: only its VM template (vm_template) or kernel_dir chooses it",
}
