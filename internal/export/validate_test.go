package export

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// kubecheck runs build/exportcheck's kubecheck (the real Kubernetes and
// Knative API types, and Knative's Service validation) on files.
func kubecheck(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin := toolBin(t, "FAAS_KUBECHECK_BIN", "kubecheck")
	out, err := exec.Command(bin, args...).CombinedOutput()
	return string(out), err
}

func goldenFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, tc := range goldenCases() {
		files = append(files, goldenPath(tc.name))
	}
	return files
}

// TestManifestsValidate decodes every golden manifest strictly with the
// real API types and runs Knative's validation (with the runtime-class
// feature flag on, as docs/beyond-one-host.md installs it): every object
// passes, without a warning.
func TestManifestsValidate(t *testing.T) {
	out, err := kubecheck(t, goldenFiles(t)...)
	if err != nil {
		t.Fatalf("kubecheck: %v\n%s", err, out)
	}
	objects := 0
	for _, l := range lines(out) {
		if !strings.Contains(l, ": ok ") {
			t.Errorf("kubecheck: %s", l)
		}
		objects++
	}
	// One Knative Service, or three plain objects, per case.
	want := 0
	for _, tc := range goldenCases() {
		if tc.opts.Plain {
			want += 3
		} else {
			want++
		}
	}
	if objects != want {
		t.Errorf("kubecheck checked %d objects, want %d:\n%s", objects, want, out)
	}
}

// TestManifestsValidateRefuses shows the checker refusing what it should,
// so that its passes mean something.
func TestManifestsValidateRefuses(t *testing.T) {
	golden, err := os.ReadFile(goldenPath("echo.knative"))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := os.ReadFile(goldenPath("echo.plain"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		manifest []byte
		args     []string
		want     string
	}{
		{name: "runtimeClassName without Knative's feature flag", manifest: golden, args: []string{"-features", ""},
			want: "must not set the field(s): spec.template.spec.runtimeClassName"},
		{name: "unknown field", manifest: bytes.Replace(golden, []byte("containerConcurrency:"), []byte("containerConcurency:"), 1),
			want: `unknown field "spec.template.spec.containerConcurency"`},
		{name: "duplicate field", manifest: bytes.Replace(golden, []byte("      timeoutSeconds: 12\n"), []byte("      timeoutSeconds: 12\n      timeoutSeconds: 13\n"), 1),
			want: `key "timeoutSeconds" already set`},
		{name: "scale-down-delay over an hour", manifest: bytes.Replace(golden, []byte("scale-down-delay: 300s"), []byte("scale-down-delay: 2h"), 1),
			want: "scale-down-delay"},
		{name: "timeout over Knative's maximum", manifest: bytes.Replace(golden, []byte("timeoutSeconds: 12"), []byte("timeoutSeconds: 6000"), 1),
			want: "timeoutSeconds"},
		{name: "probe on a named port that is not the container's", manifest: bytes.Replace(golden, []byte("port: 8081"), []byte("port: metrics"), 1),
			want: "Probe port must match container port"},
		{name: "service selecting no pods", manifest: bytes.Replace(plain, []byte("  selector:\n    app.kubernetes.io/name: echo\n  ports:"), []byte("  selector:\n    app.kubernetes.io/name: other\n  ports:"), 1),
			want: "spec.selector matches no Deployment's pods"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if bytes.Equal(tt.manifest, golden) && len(tt.args) == 0 {
				t.Fatal("the test's edit did not change the manifest")
			}
			file := filepath.Join(t.TempDir(), "m.yaml")
			if err := os.WriteFile(file, tt.manifest, 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := kubecheck(t, append(tt.args, file)...)
			if err == nil || !strings.Contains(out, tt.want) {
				t.Errorf("kubecheck: got %v\n%s\nwant a failure mentioning %q", err, out, tt.want)
			}
		})
	}
}
