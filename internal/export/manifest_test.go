package export

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/faasvm/appliance/internal/function"
)

// goldenCase is one function exported one way.
type goldenCase struct {
	name string // golden file: testdata/golden/<name>.yaml
	dir  func(t testing.TB) string
	opts ManifestOptions
}

// fullFunction sets every setting that reaches a manifest.
func fullFunction(t testing.TB) string {
	return writeFolder(t, "orders", map[string]string{
		"handler.sh": "#!/bin/bash\ncat /var/openfaas/secrets/db-password >/dev/null && echo ok\n",
		"function.yaml": `runtime: bash
timeout: 45s
env:
  GREETING: "hello"
  LEVEL: "3"
memory: 256MB
cpus: 2
minReplicas: 0
maxReplicas: 7
concurrency: 3
idleTimeout: 2h
targetUtilization: 0.5
secrets: [db-password, api-key]
`,
	})
}

func shipped(name string) func(testing.TB) string {
	return func(testing.TB) string { return filepath.Join(repoRoot, "functions", name) }
}

func seed(testing.TB) string {
	return filepath.Join(repoRoot, "internal", "function", "testdata", "seed")
}

// goldenCases are the manifests golden-tested and validated: every shipped
// example and the seed demo's folder, both kinds, plus a function with
// every setting.
func goldenCases() []goldenCase {
	kn := ManifestOptions{RuntimeClass: DefaultRuntimeClass}
	plain := ManifestOptions{RuntimeClass: DefaultRuntimeClass, Plain: true}
	var cases []goldenCase
	for _, n := range []string{"hello", "echo", "node-hello", "bash-hello"} {
		cases = append(cases,
			goldenCase{name: n + ".knative", dir: shipped(n), opts: kn},
			goldenCase{name: n + ".plain", dir: shipped(n), opts: plain})
	}
	return append(cases,
		goldenCase{name: "seed.knative", dir: seed, opts: kn},
		goldenCase{name: "seed.plain", dir: seed, opts: plain},
		goldenCase{name: "orders.knative", dir: fullFunction, opts: ManifestOptions{RuntimeClass: "kata-qemu", Namespace: "shop"}},
		goldenCase{name: "orders.plain", dir: fullFunction, opts: ManifestOptions{Plain: true, Namespace: "shop"}},
	)
}

func goldenPath(name string) string { return filepath.Join("testdata", "golden", name+".yaml") }

// testImage is the image the golden manifests name.
func testImage(s *function.Spec) string {
	return "registry.example.com/fn/" + s.Name + ":" + s.Version()
}

func TestManifestGolden(t *testing.T) {
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			s := loadSpec(t, tc.dir(t))
			got, _, err := Manifest(s, testImage(s), tc.opts)
			if err != nil {
				t.Fatalf("Manifest: %v", err)
			}
			path := goldenPath(tc.name)
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (go test ./internal/export -run TestManifestGolden -update writes it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("manifest differs from %s (a changed example changes its version: rerun with -update and review the diff)\ngot:\n%s", path, got)
			}
		})
	}
}

// TestManifestSettings checks, setting by setting, that the function's
// values reach the manifest (the golden files show the whole).
func TestManifestSettings(t *testing.T) {
	s := loadSpec(t, fullFunction(t))
	out, warnings, err := Manifest(s, "img", ManifestOptions{RuntimeClass: DefaultRuntimeClass})
	if err != nil {
		t.Fatal(err)
	}
	var svc knativeService
	if err := yaml.Unmarshal(out, &svc); err != nil {
		t.Fatal(err)
	}
	ann := svc.Spec.Template.Metadata.Annotations
	c := svc.Spec.Template.Spec.Containers[0]
	checks := []struct {
		what      string
		got, want any
	}{
		{"min-scale", ann["autoscaling.knative.dev/min-scale"], "0"},
		{"max-scale", ann["autoscaling.knative.dev/max-scale"], "7"},
		{"target", ann["autoscaling.knative.dev/target"], "3"},
		{"utilization", ann["autoscaling.knative.dev/target-utilization-percentage"], "50"},
		{"scale-down-delay (clamped)", ann["autoscaling.knative.dev/scale-down-delay"], "3600s"},
		{"containerConcurrency (exec, set)", svc.Spec.Template.Spec.ContainerConcurrency, 3},
		{"timeoutSeconds", svc.Spec.Template.Spec.TimeoutSeconds, 47},
		{"runtimeClassName", svc.Spec.Template.Spec.RuntimeClassName, "kata-fc"},
		{"memory", c.Resources.Limits["memory"], "256Mi"},
		{"cpu", c.Resources.Limits["cpu"], "2"},
		{"env", len(c.Env), 2},
		{"env order", c.Env[0].Name + "=" + c.Env[0].Value, "GREETING=hello"},
		{"readiness port", c.ReadinessProbe.HTTPGet.Port, ControlPort},
		{"readiness path", c.ReadinessProbe.HTTPGet.Path, HealthPath},
		{"liveness", strings.Join(c.LivenessProbe.Exec.Command, " "), AgentPath + " health -live"},
		{"data port", c.Ports[0].ContainerPort, DataPort},
		{"secrets mount", c.VolumeMounts[0].MountPath, SecretsDir},
		{"secret sources", len(svc.Spec.Template.Spec.Volumes[0].Projected.Sources), 2},
		{"secret file", svc.Spec.Template.Spec.Volumes[0].Projected.Sources[1].Secret.Items[0].Path, "api-key"},
		{"secret mode", svc.Spec.Template.Spec.Volumes[0].Projected.DefaultMode, 0o444},
		{"warnings", len(warnings), 1},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s: got %v, want %v", ch.what, ch.got, ch.want)
		}
	}
}

func TestManifestConcurrency(t *testing.T) {
	tests := []struct {
		name     string
		manifest string
		handler  string
		want     int
	}{
		{name: "exec mode defaults to one at a time", handler: "handler.py", want: 1},
		{name: "exec mode with concurrency set", manifest: "concurrency: 5\n", handler: "handler.py", want: 5},
		{name: "http mode takes the appliance default", manifest: "mode: http\n", handler: "handler.py", want: 8},
		{name: "http mode with concurrency set", manifest: "mode: http\nconcurrency: 20\n", handler: "handler.py", want: 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := map[string]string{tt.handler: "def handle(req):\n    return 'x'\n"}
			if tt.manifest != "" {
				files["function.yaml"] = tt.manifest
			}
			s := loadSpec(t, writeFolder(t, "conc", files))
			if got := concurrency(s); got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
		})
	}
}

func TestManifestRefusals(t *testing.T) {
	hello := func(name string) *function.Spec {
		return loadSpec(t, writeFolder(t, name, map[string]string{"handler.py": "print(1)"}))
	}
	long := strings.Repeat("a", 58)
	tests := []struct {
		name    string
		spec    *function.Spec
		opts    ManifestOptions
		wantErr string
		unexp   bool
	}{
		{name: "name starting with a digit", spec: hello("1fn"), wantErr: "starts with a letter", unexp: true},
		{name: "name too long for knative revisions", spec: hello(long), wantErr: "at most 57", unexp: true},
		{name: "bad runtime class", spec: hello("ok"), opts: ManifestOptions{RuntimeClass: "Kata FC"}, wantErr: `runtime class "Kata FC"`},
		{name: "bad namespace", spec: hello("ok"), opts: ManifestOptions{Namespace: "a.b"}, wantErr: `namespace "a.b"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Manifest(tt.spec, "img", tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
			}
			if errors.Is(err, ErrUnexportable) != tt.unexp {
				t.Errorf("errors.Is(err, ErrUnexportable): got %v, want %v", !tt.unexp, tt.unexp)
			}
		})
	}
	// The long name is fine for plain Kubernetes objects.
	if _, _, err := Manifest(hello(long), "img", ManifestOptions{Plain: true}); err != nil {
		t.Errorf("plain manifests of a 58-character name: %v", err)
	}
}

func TestManifestRuntimeClassOmitted(t *testing.T) {
	s := loadSpec(t, shipped("hello")(t))
	for _, plain := range []bool{false, true} {
		out, _, err := Manifest(s, "img", ManifestOptions{Plain: plain})
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(out, []byte("runtimeClassName")) {
			t.Errorf("plain=%v: runtimeClassName written though none was asked for:\n%s", plain, out)
		}
	}
}
