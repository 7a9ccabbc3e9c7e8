package function

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Fuzz targets of what a function author writes: function.yaml, Ignite VM
// configs, function names and duration values. Run by scripts/fuzz.sh;
// the seeds (and any crasher found) live in testdata/fuzz/<Target>/.

// FuzzParseManifest: any function.yaml parses or is refused, never a panic;
// a parsed one never carries a negative number.
func FuzzParseManifest(f *testing.F) {
	for _, s := range []string{
		"runtime: python3\nhandler: handler.py\n",
		"mode: http\nport: 8080\ntimeout: 5s\nmemory: 256MB\nenv:\n  A: b\nsecrets: [db]\n",
		"scale:\n  min: 0\n  max: 3\n  concurrency: 4\n",
		"egress: true\nimage: python:3.12-slim\n",
		"{}", "", "- a\n- b\n", "env: [1, 2]\n", "timeout: -1s\n", "memory: 99999999999999999999TB\n",
		"&a [*a]\n", "a: &x\n  b: *x\n", "\xff\xfe", "runtime: python3\nruntime: node\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = parseManifest("function.yaml", data)
	})
}

// FuzzLoad: a folder with a fuzzed function.yaml loads or is refused with
// an error, never a panic; a loaded spec is valid and names its snapshot.
func FuzzLoad(f *testing.F) {
	for _, s := range []string{
		"runtime: python3\n",
		"runtime: python3\nhandler: handler.py\nmode: http\n",
		"runtime: bash\nhandler: handler.py\n",
		"timeout: 1ns\n", "memory: 1B\n", "cpus: 1000\n", "scale: {min: 5, max: 1}\n",
		"env:\n  PATH: /x\n  \"\": y\n", "secrets: [\"../x\"]\n",
		"apiVersion: ignite.weave.works/v1alpha4\nkind: VM\n",
	} {
		f.Add([]byte(s))
	}
	d := testDefaults(f)
	f.Fuzz(func(t *testing.T, manifest []byte) {
		dir := filepath.Join(t.TempDir(), "fn")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "handler.py"), []byte("def handle(req):\n    return req\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "function.yaml"), manifest, 0o644); err != nil {
			t.Fatal(err)
		}
		spec, err := Load(dir, d, nil, "qemu")
		if err != nil {
			return
		}
		defer spec.RemoveSnapshot()
		if spec.Timeout <= 0 || spec.Scale.MaxReplicas < spec.Scale.MinReplicas || spec.Scale.MaxReplicas < 1 {
			t.Fatalf("loaded an invalid spec from %q: timeout %s, scale %+v", manifest, spec.Timeout, spec.Scale)
		}
		if spec.Snapshot == "" || strings.HasPrefix(spec.Snapshot, dir) {
			t.Fatalf("snapshot %q is not a private copy", spec.Snapshot)
		}
	})
}

// FuzzDecodeVMConfig: any Ignite VM config decodes or is refused, never a
// panic.
func FuzzDecodeVMConfig(f *testing.F) {
	for _, s := range []string{
		"apiVersion: ignite.weave.works/v1alpha4\nkind: VM\nspec:\n  cpus: 2\n  memory: 512MB\n",
		"apiVersion: ignite.weave.works/v1alpha2\nkind: VM\nspec:\n  diskSize: 4GB\n",
		"apiVersion: ignite.weave.works/v1alpha4\nkind: VM\nspec:\n  memory: -1\n",
		"apiVersion: ignite.weave.works/v1alpha4\nkind: VM\nspec:\n  image:\n    oci: \"::\"\n",
		"apiVersion: ignite.weave.works/v1alpha4\nkind: VM\nspec:\n  network:\n    ports:\n    - hostPort: 99999\n",
		"kind: VM\n", "{}", "apiVersion: ignite.weave.works/v1alpha4\nkind: VM\nspec: 3\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = decodeVMConfig("vm.yaml", data)
		_ = isVMConfigCandidate("vm.yaml", data)
	})
}

// FuzzValidateName: a name that validates is one safe path element.
func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"hello", "a-b_c.d", "", ".", "..", "a/b", "A", "x\x00", strings.Repeat("a", 300), "-x", "ünï"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if ValidateName(name) != nil {
			return
		}
		if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00") || filepath.Base(name) != name {
			t.Fatalf("ValidateName accepted %q, not a safe path element", name)
		}
		if !IsCandidate(name) {
			t.Fatalf("ValidateName accepted %q that is no candidate folder", name)
		}
	})
}

// FuzzParsePositiveDuration: what parses is above zero.
func FuzzParsePositiveDuration(f *testing.F) {
	for _, s := range []string{"5s", "1m30s", "0", "-1s", "1ns", "9999999h", "1e3s", "", "10"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d, err := parsePositiveDuration("function.yaml", "timeout", v)
		if err == nil && d <= 0 {
			t.Fatalf("parsePositiveDuration(%q) = %s", v, d)
		}
	})
}
