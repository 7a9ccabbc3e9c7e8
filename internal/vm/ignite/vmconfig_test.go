package ignite

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	api "github.com/weaveworks/ignite/pkg/apis/ignite"
	meta "github.com/weaveworks/ignite/pkg/apis/meta/v1alpha1"
	"github.com/weaveworks/libgitops/pkg/runtime"

	"github.com/faasvm/appliance/guest/protocol"
	"github.com/faasvm/appliance/internal/function"
	"github.com/faasvm/appliance/internal/vm"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// Fixed inputs, so that the generated configs are byte for byte stable.
const (
	goldenUUID     = "6f1c2a9e-3b4d-4c5e-8f70-91a2b3c4d5e6"
	goldenStateDir = "/var/lib/faasvm/state"
	goldenAgent    = "/opt/faasvm/bin/agent"
	goldenCode     = "/var/lib/faasvm/state/images/code/5d41402abc4b2a76b9719d911017c592.ext4"
)

var goldenCreated = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// repoFile is a path relative to the repository root.
func repoFile(rel string) string { return filepath.Join("..", "..", "..", rel) }

// loadTemplate reads a VM template the way the appliance does.
func loadTemplate(t *testing.T, rel string) *api.VM {
	t.Helper()
	v, err := function.LoadTemplate(repoFile(rel))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// fromTemplate is the VM the controller hands an engine for a function
// without its own VM config: a copy of the template with the function's
// name, a UID, and the runtime image as Spec.Image.
func fromTemplate(t *testing.T, rel string) *api.VM {
	t.Helper()
	v := loadTemplate(t, rel).DeepCopy()
	v.Name = "hello"
	v.UID = goldenUUID
	setImage(t, v, "faasvm/runtime-python3:latest")
	return v
}

func setImage(t *testing.T, v *api.VM, ref string) {
	t.Helper()
	img, err := meta.NewOCIImageRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	v.Spec.Image.OCI = img
}

// withOverrides loads a function folder that overrides the template: its
// function.yaml sets memory, cpus and an image (one the policy allows); its
// vm.yaml sets the disk size and extra kernel arguments, and a sandbox
// image and ssh, which are not used.
func withOverrides(t *testing.T) *api.VM {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "resize")
	files := map[string]string{
		"handler.py":    "import sys\nprint(sys.stdin.read())\n",
		"function.yaml": "memory: 256MB\ncpus: 2\nimage: python:3.12-slim\n",
		"vm.yaml": `apiVersion: ignite.weave.works/v1alpha4
kind: VM
metadata:
  name: ignored
spec:
  diskSize: 6GB
  kernel:
    cmdLine: "console=ttyS0 loglevel=7 mitigations=off"
  sandbox:
    oci: registry.example.com/ignite:v0.10.0-patched
  ssh: true
`,
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	spec, err := function.Load(dir, function.Defaults{
		Timeout: 30 * time.Second, MaxReplicas: 3, Concurrency: 4, IdleTimeout: 5 * time.Minute,
		TargetUtilization: 0.8, MaxSize: 1 << 20, SnapshotDir: t.TempDir(),
		Policy: function.Policy{AllowedImages: []string{"python:*"}},
	}, loadTemplate(t, "config/func-handler.yml"), function.EngineIgnite)
	if err != nil {
		t.Fatal(err)
	}
	v := spec.VM.DeepCopy()
	v.UID = goldenUUID
	setImage(t, v, spec.Image)
	return v
}

func size(t *testing.T, s string) uint64 {
	t.Helper()
	v, err := meta.NewSizeFromString(s)
	if err != nil {
		t.Fatal(err)
	}
	return v.Bytes()
}

func goldenSpec(v *api.VM) *vm.Spec {
	return &vm.Spec{
		VM:   v,
		Code: goldenCode,
		Agent: protocol.Config{
			Name: v.Name, Secret: "s3cret", ControlSecret: "c0ntrol", Mode: protocol.ModeExec, Command: []string{"python3", "handler.py"},
			Timeout: protocol.Duration(30 * time.Second),
		},
	}
}

func TestVMConfigGolden(t *testing.T) {
	tests := []struct {
		name      string
		vm        func(*testing.T) *api.VM
		wantName  string
		wantImage string
		wantCPUs  uint64
		wantMem   string
		wantDisk  string
		wantCmd   string
		wantBox   string
	}{
		{
			name:      "default-template",
			vm:        func(t *testing.T) *api.VM { return fromTemplate(t, "config/func-handler.yml") },
			wantName:  "hello-6f1c2a9e3b4d4c5e",
			wantImage: "faasvm/runtime-python3-ignite:latest",
			wantCPUs:  1, wantMem: "800MB", wantDisk: "2GB",
			wantCmd: DefaultCmdLine,
			wantBox: "weaveworks/ignite:v0.10.0",
		},
		{
			name:      "function-overrides",
			vm:        withOverrides,
			wantName:  "resize-6f1c2a9e3b4d4c5e",
			wantImage: "python-ignite:3.12-slim",
			wantCPUs:  2, wantMem: "256MB", wantDisk: "6GB",
			wantCmd: DefaultCmdLine + " loglevel=7 mitigations=off",
			wantBox: "weaveworks/ignite:v0.10.0", // the folder's sandbox is never used
		},
		{
			name:      "seed-v1alpha2",
			vm:        func(t *testing.T) *api.VM { return fromTemplate(t, "internal/function/testdata/seed/func-handler.yml") },
			wantName:  "hello-6f1c2a9e3b4d4c5e",
			wantImage: "faasvm/runtime-python3-ignite:latest",
			wantCPUs:  1, wantMem: "800MB", wantDisk: "2GB",
			wantCmd: DefaultCmdLine,
			wantBox: "weaveworks/ignite:v0.10.0",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := goldenSpec(tt.vm(t))
			image, err := ImageFor(spec.VM.Spec.Image.OCI.String())
			if err != nil {
				t.Fatal(err)
			}
			uid := IgniteUID(goldenUUID)
			built, err := buildVM(vmInput{
				Spec: spec, Image: image, AgentPath: goldenAgent,
				Config: filepath.Join(goldenStateDir, vmsDirName, uid, agentConfigName), Code: goldenCode,
				Owner: ownerID(goldenStateDir), Created: goldenCreated,
			})
			if err != nil {
				t.Fatal(err)
			}
			out, err := encodeVMConfig(built)
			if err != nil {
				t.Fatal(err)
			}

			golden := filepath.Join("testdata", tt.name+".golden")
			if *update {
				if err := os.WriteFile(golden, out, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -run TestVMConfigGolden -update to create it)", err)
			}
			if !bytes.Equal(out, want) {
				t.Errorf("generated config differs from %s (go test -update rewrites it):\ngot:\n%s\nwant:\n%s", golden, out, want)
			}

			// Round trip through Ignite's own decoder, as ignite run --config does.
			got, err := decodeVMConfig(out)
			if err != nil {
				t.Fatal(err)
			}
			again, err := encodeVMConfig(got)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again, out) {
				t.Errorf("decode+encode changed the config:\ngot:\n%s\nwant:\n%s", again, out)
			}
			checks := []struct {
				what      string
				got, want any
			}{
				{"name", got.Name, tt.wantName},
				{"name prefix", strings.HasPrefix(got.Name, spec.VM.Name+"-"), true},
				{"uid", got.UID, runtime.UID("6f1c2a9e3b4d4c5e")},
				{"created", got.Created.Time.Time.Equal(goldenCreated), true},
				{"owner label", got.Labels[LabelOwner], ownerID(goldenStateDir)},
				{"function label", got.Labels[LabelFunction], spec.Agent.Name},
				{"vm-id label", got.Labels[LabelVMID], goldenUUID},
				{"image", got.Spec.Image.OCI.String(), tt.wantImage},
				{"sandbox", got.Spec.Sandbox.OCI.String(), tt.wantBox},
				{"kernel", got.Spec.Kernel.OCI.String(), vm.DefaultKernelImage},
				{"cmdLine", got.Spec.Kernel.CmdLine, tt.wantCmd},
				{"cpus", got.Spec.CPUs, tt.wantCPUs},
				{"memory", got.Spec.Memory.Bytes(), size(t, tt.wantMem)},
				{"diskSize", got.Spec.DiskSize.Bytes(), size(t, tt.wantDisk)},
				{"ssh", got.Spec.SSH == nil, true},
				{"ports", len(got.Spec.Network.Ports), 0},
				{"volumes", len(got.Spec.Storage.Volumes), 0},
				{"copyFiles", got.Spec.CopyFiles, []api.FileMapping{
					{HostPath: goldenAgent, VMPath: GuestAgentPath},
					{HostPath: filepath.Join(goldenStateDir, "ignite", "6f1c2a9e3b4d4c5e", "agent.json"), VMPath: GuestConfigPath},
					{HostPath: goldenCode, VMPath: GuestCodeImage},
				}},
			}
			for _, c := range checks {
				if !reflect.DeepEqual(c.got, c.want) {
					t.Errorf("%s: got %v, want %v", c.what, c.got, c.want)
				}
			}
			if bytes.Contains(out, []byte("status:")) {
				t.Errorf("config has a status section; ignite would patch it over the VM's own:\n%s", out)
			}
		})
	}
}

func TestBuildVMRefusesInvalid(t *testing.T) {
	tests := []struct {
		name   string
		change func(*vmInput)
		want   string
	}{
		{"no image", func(in *vmInput) { in.Image = "" }, "image"},
		{"relative agent path", func(in *vmInput) { in.AgentPath = "bin/agent" }, "copyFiles"},
		{"name ignite refuses", func(in *vmInput) { in.Spec.VM.Name = "Hello_World" }, "metadata.name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := vm.NewVM("hello")
			in := vmInput{
				Spec: goldenSpec(v), Image: "faasvm/runtime-python3-ignite:latest", AgentPath: goldenAgent,
				Config: "/s/agent.json", Code: goldenCode, Owner: "o", Created: goldenCreated,
			}
			tt.change(&in)
			_, err := buildVM(in)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

func TestImageFor(t *testing.T) {
	tests := []struct {
		base, want, wantErr string
	}{
		{base: "faasvm/runtime-python3:latest", want: "faasvm/runtime-python3-ignite:latest"},
		{base: "faasvm/runtime-node", want: "faasvm/runtime-node-ignite:latest"},
		{base: "python:3.12-slim", want: "python-ignite:3.12-slim"},
		{base: "docker.io/library/python:3.12", want: "python-ignite:3.12"},
		{base: "registry.local:5000/team/fn:v2", want: "registry.local:5000/team/fn-ignite:v2"},
		{base: "team/fn-ignite:v2", want: "team/fn-ignite:v2"},
		{base: "python@sha256:" + strings.Repeat("a", 64), wantErr: "by tag"},
		{base: "Not A Ref", wantErr: "Not A Ref"},
	}
	for _, tt := range tests {
		t.Run(tt.base, func(t *testing.T) {
			got, err := ImageFor(tt.base)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("got %q, %v; want an error mentioning %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestIgniteUID(t *testing.T) {
	tests := []struct{ uid, want string }{
		{goldenUUID, "6f1c2a9e3b4d4c5e"},
		{"6F1C2A9E-3B4D-4C5E-8F70-91A2B3C4D5E6", "6f1c2a9e3b4d4c5e"},
		{"not-a-uuid", IgniteUID("not-a-uuid")}, // stable
	}
	for _, tt := range tests {
		t.Run(tt.uid, func(t *testing.T) {
			got := IgniteUID(tt.uid)
			if got != tt.want || !uidPattern(got) {
				t.Errorf("got %q, want %q (16 of a-z0-9)", got, tt.want)
			}
		})
	}
	if a, b := IgniteUID("x"), IgniteUID("y"); a == b {
		t.Errorf("different UIDs map to the same Ignite UID %q", a)
	}
}

func TestKernelCmdLine(t *testing.T) {
	tests := []struct{ extra, want string }{
		{"", DefaultCmdLine},
		{DefaultCmdLine, DefaultCmdLine},
		{"loglevel=7", DefaultCmdLine + " loglevel=7"},
		{"  console=ttyS0   quiet ", DefaultCmdLine + " quiet"},
	}
	for _, tt := range tests {
		t.Run(tt.extra, func(t *testing.T) {
			if got := kernelCmdLine(tt.extra); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestAgentConfig(t *testing.T) {
	c := protocol.Config{
		Name: "hello", Secret: "s3cret", ControlSecret: "c0ntrol", Mode: protocol.ModeHTTP, Runtime: "python3", Handler: "handler.py",
		Timeout: protocol.Duration(5 * time.Second),
		Network: protocol.Network{Address: protocol.GuestAddress, Gateway: protocol.GuestGateway, DNS: protocol.GuestDNS},
	}
	b, err := agentConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	var got protocol.Config
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := c
	want.Network = protocol.Network{}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if _, err := agentConfig(protocol.Config{Mode: protocol.ModeExec}); err == nil {
		t.Error("got no error for a config without secret")
	}
}
