package function

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	api "github.com/weaveworks/ignite/pkg/apis/ignite"
)

func TestSeedDemoFolder(t *testing.T) {
	template, err := LoadTemplate("../../config/func-handler.yml")
	if err != nil {
		t.Fatalf("LoadTemplate: %v", err)
	}
	tests := []struct {
		name         string
		engine       string
		template     *api.VM
		wantWarn     []string
		wantNoWarn   []string
		wantWarnings int
	}{
		{
			name: "qemu", engine: EngineQEMU, template: template,
			wantWarn:     []string{"spec.ssh is ignored by the qemu engine", "spec.diskSize is ignored", "spec.image.oci is ignored"},
			wantWarnings: 3,
		},
		{
			name: "qemu without template", engine: EngineQEMU,
			wantWarn:     []string{"spec.ssh", "spec.diskSize", "spec.image.oci"},
			wantWarnings: 3,
		},
		{
			name: "ignite", engine: EngineIgnite, template: template,
			wantWarn:     []string{"spec.ssh is ignored by the ignite engine", "spec.image.oci"},
			wantNoWarn:   []string{"diskSize"},
			wantWarnings: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := testDefaults(t)
			d.Memory = "256MB" // the folder's VM config overrides the appliance default
			s, err := Load("testdata/seed", d, tt.template, tt.engine)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if s.Name != "seed" || s.Runtime != RuntimePython3 || s.Mode != ModeExec || s.Handler != "localfunction.sh" {
				t.Errorf("got name %s runtime %s mode %s handler %s, want seed python3 exec localfunction.sh", s.Name, s.Runtime, s.Mode, s.Handler)
			}
			if want := []string{"bash", "localfunction.sh"}; !reflect.DeepEqual(s.Command, want) {
				t.Errorf("got command %q, want %q", s.Command, want)
			}
			if got := s.VM.Spec.Memory.String(); got != "800.0 MB" {
				t.Errorf("got memory %s, want 800.0 MB", got)
			}
			if s.VM.Spec.CPUs != 1 {
				t.Errorf("got cpus %d, want 1", s.VM.Spec.CPUs)
			}
			if s.VM.Name != "seed" {
				t.Errorf("got VM name %q, want the function's name, not the config's function-handler-vm", s.VM.Name)
			}
			for _, w := range tt.wantWarn {
				if !hasWarning(s.Warnings, w) {
					t.Errorf("got warnings %q, want one containing %q", s.Warnings, w)
				}
			}
			for _, w := range tt.wantNoWarn {
				if hasWarning(s.Warnings, w) {
					t.Errorf("got warnings %q, want none containing %q", s.Warnings, w)
				}
			}
			if len(s.Warnings) != tt.wantWarnings {
				t.Errorf("got %d warnings %q, want %d", len(s.Warnings), s.Warnings, tt.wantWarnings)
			}
			for _, w := range s.Warnings {
				if !strings.HasPrefix(w, "func-handler.yml: ") {
					t.Errorf("got warning %q, want it to name the file", w)
				}
			}
		})
	}
}

func TestVMConfig(t *testing.T) {
	const v4 = "apiVersion: ignite.weave.works/v1alpha4\nkind: VM\nmetadata:\n  name: x\n"
	template, err := LoadTemplate("../../config/func-handler.yml")
	if err != nil {
		t.Fatalf("LoadTemplate: %v", err)
	}
	tests := []struct {
		name       string
		files      map[string]string
		memory     string // default memory (appliance config)
		wantMemory string
		wantCPUs   uint64
		wantWarn   []string
		wantErr    string
	}{
		{name: "template only", wantMemory: "800.0 MB", wantCPUs: 1},
		{name: "default memory over template", memory: "300MB", wantMemory: "300.0 MB", wantCPUs: 1},
		{name: "v1alpha4 vm.yaml", files: map[string]string{"vm.yaml": v4 + "spec:\n  cpus: 2\n  memory: 1GB\n"},
			memory: "300MB", wantMemory: "1024.0 MB", wantCPUs: 2},
		{name: "v1alpha3 vm.yml", files: map[string]string{"vm.yml": strings.Replace(v4, "v1alpha4", "v1alpha3", 1) + "spec:\n  memory: 128MB\n"},
			wantMemory: "128.0 MB", wantCPUs: 1},
		{name: "function.yaml beats the VM config", files: map[string]string{
			"vm.yaml":       v4 + "spec:\n  cpus: 2\n  memory: 1GB\n",
			"function.yaml": "memory: 512MB\ncpus: 3\n"}, wantMemory: "512.0 MB", wantCPUs: 3},
		{name: "any yaml with kind VM", files: map[string]string{"machine.yaml": v4 + "spec:\n  cpus: 4\n  network:\n    ports:\n    - {hostPort: 8080, vmPort: 80}\n"},
			wantMemory: "800.0 MB", wantCPUs: 4, wantWarn: []string{"machine.yaml: spec.network.ports is ignored"}},
		{name: "every ignored field", files: map[string]string{"vm.yaml": v4 + `spec:
  image: {oci: "weaveworks/ignite-ubuntu"}
  sandbox: {oci: "weaveworks/ignite:v0.10.0"}
  kernel: {oci: "weaveworks/ignite-kernel:5.10.51", cmdLine: "quiet"}
  diskSize: 1GB
  storage:
    volumes: [{name: v, blockDevice: {path: /dev/null}}]
  copyFiles: [{hostPath: /etc/hosts, vmPath: /etc/hosts}]
  ssh: true
`}, wantMemory: "800.0 MB", wantCPUs: 1, wantWarn: []string{"spec.image.oci", "spec.sandbox.oci", "spec.kernel.oci", "spec.diskSize", "spec.storage", "spec.copyFiles", "spec.ssh"}},
		{name: "other yaml is data", files: map[string]string{"data.yaml": "kind: Deployment\napiVersion: apps/v1\n", "list.yml": "- a\n- b\n", "bad.yaml": ": :\n"},
			wantMemory: "800.0 MB", wantCPUs: 1},
		{name: "broken yaml", files: map[string]string{"func-handler.yml": "apiVersion: ignite.weave.works/v1alpha4\nkind: VM\nspec: [\n"},
			wantErr: "func-handler.yml: yaml: line"},
		{name: "unknown spec field", files: map[string]string{"vm.yaml": v4 + "spec:\n  cpu: 2\n"},
			wantErr: "vm.yaml: v1alpha4.VM.Spec: v1alpha4.VMSpec.ReadObject: found unknown field: cpu"},
		{name: "bad memory", files: map[string]string{"vm.yaml": v4 + "spec:\n  memory: lots\n"},
			wantErr: `vm.yaml: v1alpha4.VM.Spec: v1alpha4.VMSpec.Memory`},
		{name: "memory too small", files: map[string]string{"vm.yaml": v4 + "spec:\n  memory: 16MB\n"},
			wantErr: "vm: memory 16.0 MB is below the 64MB a guest needs"},
		{name: "named file of another kind", files: map[string]string{"func-handler.yml": "apiVersion: v1\nkind: Pod\n"},
			wantErr: `func-handler.yml: not an Ignite VM config: want kind: VM and apiVersion: ignite.weave.works/v1alpha4 (or v1alpha2, v1alpha3), got kind "Pod", apiVersion "v1"`},
		{name: "empty named file", files: map[string]string{"vm.yaml": ""},
			wantErr: `vm.yaml: not an Ignite VM config`},
		{name: "unknown version", files: map[string]string{"vm.yaml": "apiVersion: ignite.weave.works/v9\nkind: VM\n"},
			wantErr: `vm.yaml: no kind "VM" is registered for version "ignite.weave.works/v9"`},
		{name: "two configs", files: map[string]string{"vm.yaml": v4, "func-handler.yml": v4},
			wantErr: "several Ignite VM configs: func-handler.yml, vm.yaml; keep one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := map[string]string{"handler.py": "print(1)\n"}
			for k, v := range tt.files {
				files[k] = v
			}
			d := testDefaults(t)
			d.Memory = tt.memory
			s, err := Load(makeFunc(t, "vmcfg", files), d, template, EngineQEMU)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				if !errors.Is(err, ErrInvalid) {
					t.Errorf("got error %v, want it to match ErrInvalid", err)
				}
				if strings.Contains(err.Error(), "error found in #") || strings.Contains(err.Error(), "strict decoder error") {
					t.Errorf("got error %q, want the decoder's noise trimmed", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got := s.VM.Spec.Memory.String(); got != tt.wantMemory {
				t.Errorf("got memory %s, want %s", got, tt.wantMemory)
			}
			if s.VM.Spec.CPUs != tt.wantCPUs {
				t.Errorf("got cpus %d, want %d", s.VM.Spec.CPUs, tt.wantCPUs)
			}
			for _, w := range tt.wantWarn {
				if !hasWarning(s.Warnings, w) {
					t.Errorf("got warnings %q, want one containing %q", s.Warnings, w)
				}
			}
			if len(s.Warnings) != len(tt.wantWarn) {
				t.Errorf("got %d warnings %q, want %d", len(s.Warnings), s.Warnings, len(tt.wantWarn))
			}
		})
	}
}

// TestMergeKeepsTemplate checks that a folder's VM config changes only what
// it sets, and that the template itself is not modified.
func TestMergeKeepsTemplate(t *testing.T) {
	template, err := LoadTemplate("../../config/func-handler.yml")
	if err != nil {
		t.Fatalf("LoadTemplate: %v", err)
	}
	before := template.DeepCopy()
	dir := makeFunc(t, "merge", map[string]string{
		"handler.py": "",
		"vm.yaml":    "apiVersion: ignite.weave.works/v1alpha4\nkind: VM\nspec:\n  kernel:\n    cmdLine: quiet\n  memory: 1GB\n",
	})
	s, err := Load(dir, testDefaults(t), template, EngineQEMU)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if !reflect.DeepEqual(template, before) {
		t.Errorf("template changed: got %+v, want %+v", template.Spec, before.Spec)
	}
	checks := []struct {
		field     string
		got, want any
	}{
		{"memory", s.VM.Spec.Memory.String(), "1024.0 MB"},
		{"cmdLine", s.VM.Spec.Kernel.CmdLine, "quiet"},
		{"kernel image", s.VM.Spec.Kernel.OCI.String(), template.Spec.Kernel.OCI.String()},
		{"diskSize", s.VM.Spec.DiskSize, template.Spec.DiskSize},
		{"image", s.VM.Spec.Image.OCI.String(), template.Spec.Image.OCI.String()},
		{"ssh", s.VM.Spec.SSH, template.Spec.SSH},
		{"name", s.VM.Name, "merge"},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %v, want %v", c.field, c.got, c.want)
		}
	}
}

func TestLoadTemplate(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"v2.yml":     "apiVersion: ignite.weave.works/v1alpha2\nkind: VM\nmetadata:\n  name: t\nspec:\n  cpus: 2\n  memory: 256MB\n",
		"image.yaml": "apiVersion: ignite.weave.works/v1alpha4\nkind: Image\nmetadata:\n  name: t\n",
		"empty.yaml": "",
	})
	tests := []struct {
		name       string
		path       string
		wantCPUs   uint64
		wantMemory string
		wantErr    string
	}{
		{name: "repo template", path: "../../config/func-handler.yml", wantCPUs: 1, wantMemory: "800.0 MB"},
		{name: "v1alpha2", path: filepath.Join(dir, "v2.yml"), wantCPUs: 2, wantMemory: "256.0 MB"},
		{name: "missing", path: filepath.Join(dir, "nope.yml"), wantErr: "reading vm template"},
		{name: "not a VM", path: filepath.Join(dir, "image.yaml"), wantErr: `not an Ignite VM config: want kind: VM`},
		{name: "empty", path: filepath.Join(dir, "empty.yaml"), wantErr: `not an Ignite VM config`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := LoadTemplate(tt.path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadTemplate: %v", err)
			}
			if v.Spec.CPUs != tt.wantCPUs || v.Spec.Memory.String() != tt.wantMemory {
				t.Errorf("got cpus %d memory %s, want %d %s", v.Spec.CPUs, v.Spec.Memory, tt.wantCPUs, tt.wantMemory)
			}
		})
	}
}

// TestRepoTemplateValues pins what config/func-handler.yml promises: the
// seed demo's VM.
func TestRepoTemplateValues(t *testing.T) {
	v, err := LoadTemplate("../../config/func-handler.yml")
	if err != nil {
		t.Fatalf("LoadTemplate: %v", err)
	}
	if _, err := os.Stat("../../config/func-handler.yml"); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		field     string
		got, want any
	}{
		{"name", v.Name, "function-handler-vm"},
		{"cpus", v.Spec.CPUs, uint64(1)},
		{"memory", v.Spec.Memory.String(), "800.0 MB"},
		{"diskSize", v.Spec.DiskSize.String(), "2.0 GB"},
		{"image", v.Spec.Image.OCI.String(), "weaveworks/ignite-ubuntu:latest"},
		{"sandbox", v.Spec.Sandbox.OCI.String(), "weaveworks/ignite:v0.10.0"},
		{"ssh", v.Spec.SSH != nil && v.Spec.SSH.Generate, true},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %v, want %v", c.field, c.got, c.want)
		}
	}
}
