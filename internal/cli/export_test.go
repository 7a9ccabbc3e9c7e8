package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/faasvm/appliance/internal/appliance"
	"github.com/faasvm/appliance/internal/config"
	"github.com/faasvm/appliance/internal/export"
	"github.com/faasvm/appliance/internal/function"
)

const repoRoot = "../.."

// run runs the CLI with the shipped appliance config and env.
func run(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	getenv := func(k string) string {
		if v, ok := env[k]; ok {
			return v
		}
		switch k {
		case "FAAS_CONFIG":
			return filepath.Join(repoRoot, "config", "appliance.yaml")
		case "FAAS_VM_TEMPLATE":
			return filepath.Join(repoRoot, "config", "func-handler.yml")
		}
		return ""
	}
	code = Run(context.Background(), args, &Env{Stdout: &out, Stderr: &errOut, Getenv: getenv})
	return code, out.String(), errOut.String()
}

func writeFolder(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// applianceReason is what the appliance's status says of an invalid folder
// (the controller's "invalid function: " + function.Load's error).
func applianceReason(t *testing.T, dir string) string {
	t.Helper()
	cfg, err := config.Load([]string{"--config", filepath.Join(repoRoot, "config", "appliance.yaml")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	template, err := function.LoadTemplate(filepath.Join(repoRoot, "config", "func-handler.yml"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = function.Load(dir, appliance.FunctionDefaults(cfg), template, function.EngineQEMU)
	if err == nil {
		t.Fatalf("%s loads; the test wants an invalid folder", dir)
	}
	return "invalid function: " + err.Error()
}

func TestExportAllSkipsInvalid(t *testing.T) {
	fns := t.TempDir()
	writeFolder(t, filepath.Join(fns, "good"), map[string]string{"handler.py": "print('hi')"})
	writeFolder(t, filepath.Join(fns, "also-good"), map[string]string{"index.js": "module.exports = async () => 'x'", "function.yaml": "mode: http\n"})
	writeFolder(t, filepath.Join(fns, "typo"), map[string]string{"handler.py": "", "function.yaml": "mode: http\nconcurency: 2\n"})
	writeFolder(t, filepath.Join(fns, "nohandler"), map[string]string{"README.md": "nothing to run"})
	writeFolder(t, filepath.Join(fns, "foreign"), map[string]string{"handler.py": "", "function.yaml": "image: someone/else:latest\n"})
	writeFolder(t, filepath.Join(fns, "7up"), map[string]string{"handler.py": "print(7)"})
	writeFolder(t, filepath.Join(fns, ".hidden"), map[string]string{"handler.py": ""})

	code, stdout, stderr := run(t, nil, "export", "--all", "--skip-image", fns)
	if code != 0 {
		t.Fatalf("exit %d, want 0 (invalid folders are skipped, not failures)\n%s", code, stderr)
	}
	for _, name := range []string{"typo", "nohandler", "foreign"} {
		want := "skipped " + name + ": " + strings.Join(strings.Fields(applianceReason(t, filepath.Join(fns, name))), " ") + "\n"
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks the appliance's reason for %s:\nwant %q\ngot:\n%s", name, want, stderr)
		}
	}
	if !strings.Contains(stderr, "skipped 7up: function 7up cannot be exported: Kubernetes Services need a name that starts with a letter") {
		t.Errorf("stderr does not explain why 7up cannot be exported:\n%s", stderr)
	}
	if strings.Contains(stderr, "hidden") {
		t.Errorf("a hidden folder was considered:\n%s", stderr)
	}
	docs := strings.Split(stdout, "\n---\n")
	if len(docs) != 2 || !strings.Contains(docs[0], "name: also-good") || !strings.Contains(docs[1], "name: good") {
		t.Errorf("stdout: want the Knative Services of also-good and good, in name order, got:\n%s", stdout)
	}
}

func TestExportOneFolder(t *testing.T) {
	fns := t.TempDir()
	writeFolder(t, filepath.Join(fns, "greet"), map[string]string{"handler.py": "def handle(req):\n    return 'hi'\n", "function.yaml": "mode: http\nsecrets: [db-password]\n"})
	writeFolder(t, filepath.Join(fns, "typo"), map[string]string{"handler.py": "", "function.yaml": "mdoe: http\n"})
	out := t.TempDir()

	t.Run("plain manifests into a folder, without a runtime class", func(t *testing.T) {
		code, stdout, stderr := run(t, nil, "export", "--skip-image", "--plain", "--runtime-class", "none", "--namespace", "fn", "-o", out, filepath.Join(fns, "greet"))
		if code != 0 || stdout != "" {
			t.Fatalf("exit %d, stdout %q, want 0 and nothing printed\n%s", code, stdout, stderr)
		}
		b, err := os.ReadFile(filepath.Join(out, "greet.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		m := string(b)
		for _, want := range []string{"kind: Deployment", "kind: Service", "kind: HorizontalPodAutoscaler", "namespace: fn", "name: db-password", "mountPath: /var/openfaas/secrets"} {
			if !strings.Contains(m, want) {
				t.Errorf("greet.yaml lacks %q:\n%s", want, m)
			}
		}
		if strings.Contains(m, "runtimeClassName") {
			t.Errorf("greet.yaml has a runtimeClassName though none was asked for")
		}
		// VMs get their secrets now (FAAS_SECRETS_DIR): no "not yet" warning.
		if strings.Contains(stderr, "warning: greet: secrets") {
			t.Errorf("stderr still warns that VMs do not get secrets:\n%s", stderr)
		}
	})
	t.Run("json report", func(t *testing.T) {
		code, stdout, stderr := run(t, nil, "export", "--skip-image", "--json", "--repo", "registry.example.com/team", filepath.Join(fns, "greet"))
		if code != 0 {
			t.Fatalf("exit %d\n%s", code, stderr)
		}
		var rep struct {
			Exported []struct {
				Name, Version, Tag, Image, Manifest string
			}
			Skipped []export.Skipped
		}
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
			t.Fatalf("stdout is not JSON: %v\n%s", err, stdout)
		}
		if len(rep.Exported) != 1 || rep.Exported[0].Tag != "registry.example.com/team/greet:"+rep.Exported[0].Version ||
			!strings.Contains(rep.Exported[0].Manifest, "image: "+rep.Exported[0].Tag) || !strings.Contains(rep.Exported[0].Manifest, "runtimeClassName: kata-fc") {
			t.Errorf("report: got %+v", rep)
		}
	})
	t.Run("invalid folder", func(t *testing.T) {
		code, stdout, stderr := run(t, nil, "export", "--skip-image", filepath.Join(fns, "typo"))
		want := "faasvm export: " + strings.Join(strings.Fields(applianceReason(t, filepath.Join(fns, "typo"))), " ") + "\n"
		if code != 1 || stdout != "" || stderr != want {
			t.Errorf("got exit %d, stdout %q, stderr %q; want 1, nothing, %q", code, stdout, stderr, want)
		}
	})
}

func TestExportUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		code int
		want string
	}{
		{name: "no folder", args: []string{"export"}, code: 2, want: "want one function folder (or --all), got 0 arguments"},
		{name: "two folders", args: []string{"export", "a", "b"}, code: 2, want: "got 2 arguments"},
		{name: "push without repo", args: []string{"export", "--push", "x"}, code: 2, want: "pushing needs a repository (--repo)"},
		{name: "bad repo", args: []string{"export", "--repo", "Not/Good", "x"}, code: 2, want: `repository "Not/Good"`},
		{name: "unknown flag", args: []string{"export", "--frobnicate", "x"}, code: 2, want: "unknown flag: --frobnicate"},
		{name: "missing agent", args: []string{"export", "--agent", "/nonexistent/agent", "x"}, code: 1, want: "guest agent (--agent, FAAS_AGENT_BIN; make agent builds it)"},
		{name: "bad appliance config", args: []string{"export", "--skip-image", "x"}, env: map[string]string{"FAAS_MIN_REPLICAS": "-1"}, code: 1, want: "appliance config: FAAS_MIN_REPLICAS"},
		{name: "unknown command", args: []string{"exprot"}, code: 2, want: `unknown command "exprot"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := run(t, tt.env, tt.args...)
			if code != tt.code || !strings.Contains(stderr, tt.want) {
				t.Errorf("got exit %d, stderr %q; want %d containing %q", code, stderr, tt.code, tt.want)
			}
		})
	}
	code, stdout, _ := run(t, nil, "help")
	if code != 0 || !strings.Contains(stdout, "export") {
		t.Errorf("help: exit %d, %q", code, stdout)
	}
	code, stdout, _ = run(t, nil, "export", "--help")
	if code != 0 || !strings.Contains(stdout, "--runtime-class") {
		t.Errorf("export --help: exit %d, %q", code, stdout)
	}
}
