package function

import (
	"errors"
	"strings"
	"testing"
	"time"

	meta "github.com/weaveworks/ignite/pkg/apis/meta/v1alpha1"

	"github.com/faasvm/appliance/internal/vm"
)

// shippedPolicy is the appliance's default policy (config/appliance.yaml).
func shippedPolicy() Policy {
	return Policy{MaxMemoryMB: 2048, MaxCPUs: 4, MaxReplicas: 10, MaxConcurrency: 1000, MaxTimeout: 15 * time.Minute}
}

func TestPolicy(t *testing.T) {
	tests := []struct {
		name     string
		policy   func(*Policy)
		egress   bool   // Defaults.Egress
		manifest string // function.yaml
		vmYAML   string // vm.yaml spec, "" for none
		wantErr  string // "" valid
	}{
		{name: "a shipped runtime is always fine", manifest: "runtime: python3\n"},
		{name: "no image may be named by default", manifest: "image: python:3.12-slim\n",
			wantErr: `function.yaml: image "python:3.12-slim" is not allowed: functions run only the shipped runtimes (set runtime: python3, node or bash; an operator may allow images with policy.allowed_images) (the operator's policy)`},
		{name: "a private image in the host's daemon", manifest: "image: registry.internal/secrets-vault:latest\n",
			policy:  func(p *Policy) { p.AllowedImages = []string{"python:*"} },
			wantErr: `image "registry.internal/secrets-vault:latest" is not allowed: images must match python:* (policy.allowed_images)`},
		{name: "a pattern allows its images", manifest: "image: python:3.12-slim\n",
			policy: func(p *Policy) { p.AllowedImages = []string{"node:*", "python:*"} }},
		{name: "patterns match the full form too", manifest: "image: python:3.12-slim\n",
			policy: func(p *Policy) { p.AllowedImages = []string{"docker.io/library/python:3.12-*"} }},
		{name: "an untagged name is :latest", manifest: "image: python\n",
			policy: func(p *Policy) { p.AllowedImages = []string{"python:latest"} }},
		{name: "a pattern is not a prefix", manifest: "image: python-evil:1\n",
			policy:  func(p *Policy) { p.AllowedImages = []string{"python:*"} },
			wantErr: `image "python-evil:1" is not allowed`},
		{name: "a pattern's dot is a dot", manifest: "image: registryXexample.com/team/app:1\n",
			policy:  func(p *Policy) { p.AllowedImages = []string{"registry.example.com/team/*"} },
			wantErr: `is not allowed`},
		{name: "memory over the limit", manifest: "memory: 4GB\n",
			wantErr: `memory 4.0 GB (from function.yaml) is over the limit of 2.0 GB (policy.max_memory) (the operator's policy)`},
		{name: "memory over the limit from the VM config", vmYAML: "memory: 3GB\n",
			wantErr: `memory 3.0 GB (from vm.yaml) is over the limit of 2.0 GB (policy.max_memory)`},
		{name: "memory at the limit", manifest: "memory: 2GB\n"},
		{name: "cpus over the limit", manifest: "cpus: 64\n",
			wantErr: `cpus 64 (from function.yaml) is over the limit of 4 (policy.max_cpus)`},
		{name: "cpus over the limit from the VM config", vmYAML: "cpus: 8\n",
			wantErr: `cpus 8 (from vm.yaml) is over the limit of 4 (policy.max_cpus)`},
		{name: "maxReplicas over the limit", manifest: "maxReplicas: 1000\n",
			wantErr: `function.yaml: maxReplicas 1000 is over the limit of 10 (policy.max_replicas)`},
		{name: "replicas within a raised limit", manifest: "minReplicas: 11\nmaxReplicas: 11\n",
			policy: func(p *Policy) { p.MaxReplicas = 12 }},
		{name: "minReplicas over the limit", manifest: "minReplicas: 50\nmaxReplicas: 50\n",
			wantErr: `maxReplicas 50 is over the limit of 10`},
		{name: "concurrency over the limit", manifest: "concurrency: 100000\n",
			wantErr: `function.yaml: concurrency 100000 is over the limit of 1000 (policy.max_concurrency)`},
		{name: "timeout over the limit", manifest: "timeout: 24h\n",
			wantErr: `function.yaml: timeout 24h0m0s is over the limit of 15m0s (policy.max_timeout)`},
		{name: "egress:true cannot override an operator's egress off", manifest: "egress: true\n",
			wantErr: `function.yaml: egress: true is not allowed: the operator keeps functions off the network (egress false, policy.allow_egress auto or false) (the operator's policy)`},
		{name: "egress allowed by the policy", manifest: "egress: true\n", policy: func(p *Policy) { p.AllowEgress = true }},
		{name: "egress on by default", egress: true, manifest: "egress: true\n"},
		{name: "egress off is always fine", manifest: "egress: false\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := testDefaults(t)
			d.Policy = shippedPolicy()
			if tt.policy != nil {
				tt.policy(&d.Policy)
			}
			d.Egress = tt.egress
			files := map[string]string{"handler.py": "print(1)\n", "function.yaml": tt.manifest}
			if tt.vmYAML != "" {
				files["vm.yaml"] = "apiVersion: ignite.weave.works/v1alpha4\nkind: VM\nspec:\n  " + strings.ReplaceAll(strings.TrimSpace(tt.vmYAML), "\n", "\n  ") + "\n"
			}
			dir := makeFunc(t, "policed", files)
			s, err := Load(dir, d, nil, EngineQEMU)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Load: got %v, want the function valid", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Load: got %v (spec %v), want an invalid function: %q", err, s != nil, tt.wantErr)
			}
		})
	}
}

// TestPolicyHostImages: under both engines a folder's VM config never
// chooses the sandbox or kernel image (with Ignite the sandbox runs on the
// host with SYS_ADMIN and /dev/kvm): the template's stay, with a warning.
func TestPolicyHostImages(t *testing.T) {
	template := vm.NewVM("template")
	template.Spec.Sandbox.OCI, _ = meta.NewOCIImageRef("weaveworks/ignite:v0.10.0")
	template.Spec.Kernel.OCI, _ = meta.NewOCIImageRef("weaveworks/ignite-kernel:5.10.51")
	for _, engine := range []string{EngineQEMU, EngineIgnite} {
		t.Run(engine, func(t *testing.T) {
			dir := makeFunc(t, "hostile", map[string]string{
				"handler.py": "print(1)\n",
				"vm.yaml": `apiVersion: ignite.weave.works/v1alpha4
kind: VM
spec:
  sandbox: {oci: "attacker/root-shell:latest"}
  kernel: {oci: "attacker/kernel:latest"}
`,
			})
			s, err := Load(dir, testDefaults(t), template, engine)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got := s.VM.Spec.Sandbox.OCI.String(); got != "weaveworks/ignite:v0.10.0" {
				t.Errorf("sandbox: got %s, want the template's", got)
			}
			if got := s.VM.Spec.Kernel.OCI.String(); got != "weaveworks/ignite-kernel:5.10.51" {
				t.Errorf("kernel image: got %s, want the template's", got)
			}
			for _, f := range []string{"spec.sandbox.oci", "spec.kernel.oci"} {
				want := "vm.yaml: " + f + " is never taken from a function folder, so it is not used"
				if !hasWarning(s.Warnings, want) {
					t.Errorf("warnings %q: want one saying %q", s.Warnings, want)
				}
			}
		})
	}
}
