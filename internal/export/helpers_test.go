package export

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	api "github.com/weaveworks/ignite/pkg/apis/ignite"

	"github.com/faasvm/appliance/internal/appliance"
	"github.com/faasvm/appliance/internal/config"
	"github.com/faasvm/appliance/internal/function"
)

var update = flag.Bool("update", false, "rewrite the golden manifests in testdata/golden")

// repoRoot is the repository, from this package's folder.
const repoRoot = "../.."

// applianceSettings are the shipped appliance config's defaults and VM
// template: what the appliance reads a folder with.
func applianceSettings(t testing.TB) (function.Defaults, *api.VM) {
	t.Helper()
	cfg, err := config.Load([]string{"--config", filepath.Join(repoRoot, "config", "appliance.yaml")}, nil)
	if err != nil {
		t.Fatalf("appliance config: %v", err)
	}
	template, err := function.LoadTemplate(filepath.Join(repoRoot, cfg.VMTemplate))
	if err != nil {
		t.Fatalf("VM template: %v", err)
	}
	return appliance.FunctionDefaults(cfg), template
}

// loadSpec reads a folder as the appliance does.
func loadSpec(t testing.TB, dir string) *function.Spec {
	t.Helper()
	d, template := applianceSettings(t)
	s, err := function.Load(dir, d, template, function.EngineQEMU)
	if err != nil {
		t.Fatalf("function.Load(%s): %v", dir, err)
	}
	return s
}

// writeFolder creates <tmp>/<name> with files (name → content) and returns
// it.
func writeFolder(t testing.TB, name string, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	for f, content := range files {
		p := filepath.Join(dir, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// copyTree copies src to dst like cp -r.
func copyTree(t testing.TB, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-r", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -r %s %s: %v %s", src, dst, err, out)
	}
}

// toolBin finds a tool `make test` builds into .cache/bin (scripts/kube-tools.sh):
// env names its override. Under -short the test is skipped; otherwise a
// missing tool fails the test, saying how to build it.
func toolBin(t testing.TB, env, name string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		return p
	}
	p, _ := filepath.Abs(filepath.Join(repoRoot, ".cache", "bin", name))
	if _, err := os.Stat(p); err != nil {
		if testing.Short() {
			t.Skipf("-short: %s not built (make test builds it)", name)
		}
		t.Fatalf("%s is missing (%v): run `bash scripts/kube-tools.sh .cache/bin` (make test does) or set %s", name, err, env)
	}
	return p
}

// lines splits output into its non-empty lines.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}
