package function

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestValidateName(t *testing.T) {
	tests := []struct {
		name  string
		input string
		valid bool
	}{
		{"single letter", "a", true},
		{"word", "hello", true},
		{"dash", "node-hello", true},
		{"leading digit", "0day", true},
		{"63 chars", strings.Repeat("a", 63), true},
		{"empty", "", false},
		{"leading dash", "-hello", false},
		{"upper case", "Hello", false},
		{"underscore", "a_b", false},
		{"dot", "a.b", false},
		{"hidden", ".git", false},
		{"64 chars", strings.Repeat("a", 64), false},
		{"non-ascii", "héllo", false},
		{"space", "a b", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateName(tt.input)
			if got := err == nil; got != tt.valid {
				t.Fatalf("ValidateName(%q) = %v, want valid %v", tt.input, err, tt.valid)
			}
			if err == nil {
				return
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("got error %v, want it to match ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), "lowercase letters a-z, digits 0-9 and '-'") {
				t.Errorf("got %q, want the rule explained", err)
			}
		})
	}
}

func TestIsCandidate(t *testing.T) {
	tests := []struct {
		input string
		want  bool
	}{
		{"hello", true},
		{"Not_Valid", true}, // a candidate: Load reports why the name is invalid
		{".git", false},
		{".hello.swp", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.input, func(t *testing.T) {
			if got := IsCandidate(tt.input); got != tt.want {
				t.Errorf("IsCandidate(%q) = %v, want %v", tt.input, got, tt.want)
			}
		})
	}
}

func TestLoadDefaults(t *testing.T) {
	d := testDefaults(t)
	d.Memory = "256MB"
	d.CPUs = 2
	dir := makeFunc(t, "plain", map[string]string{"handler.py": "print('hi')\n"})
	s, err := Load(dir, d, nil, EngineQEMU)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	checks := []struct {
		field     string
		got, want any
	}{
		{"Name", s.Name, "plain"},
		{"Dir", s.Dir, dir},
		{"Runtime", s.Runtime, RuntimePython3},
		{"Handler", s.Handler, "handler.py"},
		{"Mode", s.Mode, ModeExec},
		{"Command", s.Command, []string{"python3", "handler.py"}},
		{"Timeout", s.Timeout, 30 * time.Second},
		{"Egress", s.Egress, false},
		{"Image", s.Image, ""},
		{"Env", len(s.Env), 0},
		{"Scale", s.Scale, Scale{MinReplicas: 0, MaxReplicas: 3, Concurrency: 4, IdleTimeout: 5 * time.Minute, TargetUtilization: 0.8}},
		{"VM.Name", s.VM.Name, "plain"},
		{"VM.UID", string(s.VM.UID), ""},
		{"VM memory", s.VM.Spec.Memory.String(), "256.0 MB"},
		{"VM cpus", s.VM.Spec.CPUs, uint64(2)},
		{"Size", s.Size, int64(len("print('hi')\n"))},
		{"Warnings", len(s.Warnings), 0},
		{"Digest length", len(s.Digest), 64},
		{"Version", s.Version(), s.Digest[:12]},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %v, want %v", c.field, c.got, c.want)
		}
	}
}

func TestLoadFullManifest(t *testing.T) {
	dir := makeFunc(t, "full", map[string]string{
		"src/app.js": "module.exports = async (req) => 'hi';\n",
		"function.yaml": `runtime: node
image: node:20-slim
handler: ./src/app.js
mode: http
timeout: 5s
env:
  GREETING: "hello"
  LEVEL: "3"
memory: 512MB
cpus: 2
egress: true
minReplicas: 1
maxReplicas: 5
concurrency: 10
idleTimeout: 2m
targetUtilization: 0.5
`,
	})
	s, err := Load(dir, testDefaults(t), nil, EngineQEMU)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	checks := []struct {
		field     string
		got, want any
	}{
		{"Runtime", s.Runtime, RuntimeNode},
		{"Image", s.Image, "node:20-slim"},
		{"Handler", s.Handler, "src/app.js"},
		{"Mode", s.Mode, ModeHTTP},
		{"Command", len(s.Command), 0},
		{"Timeout", s.Timeout, 5 * time.Second},
		{"Env", s.Env, map[string]string{"GREETING": "hello", "LEVEL": "3"}},
		{"Egress", s.Egress, true},
		{"Scale", s.Scale, Scale{MinReplicas: 1, MaxReplicas: 5, Concurrency: 10, IdleTimeout: 2 * time.Minute, TargetUtilization: 0.5, ConcurrencySet: true}},
		{"Secrets", s.Secrets, []string(nil)},
		{"VM memory", s.VM.Spec.Memory.String(), "512.0 MB"},
		{"VM cpus", s.VM.Spec.CPUs, uint64(2)},
		{"Warnings", s.Warnings, []string(nil)},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %v, want %v", c.field, c.got, c.want)
		}
	}
}

func TestLoadSecrets(t *testing.T) {
	dir := makeFunc(t, "withsecrets", map[string]string{
		"handler.py":    "print(open('/var/openfaas/secrets/db-password').read())",
		"function.yaml": "secrets: [db-password, api-key]\n",
	})
	s, err := Load(dir, testDefaults(t), nil, EngineQEMU)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if want := []string{"db-password", "api-key"}; !reflect.DeepEqual(s.Secrets, want) {
		t.Errorf("Secrets: got %v, want %v", s.Secrets, want)
	}
	if len(s.Warnings) != 0 {
		t.Errorf("Warnings: got %q, want none (the VMs get the secrets)", s.Warnings)
	}
	if s.Scale.ConcurrencySet {
		t.Errorf("Scale.ConcurrencySet: got true, want false (function.yaml sets no concurrency)")
	}
}

func TestLoadManifestErrors(t *testing.T) {
	tests := []struct {
		name     string
		manifest string
		files    map[string]string // besides handler.py and function.yaml
		want     string
	}{
		{"unknown field", "runtim: python3\n", nil, `function.yaml: line 1: unknown field "runtim" (known fields: runtime, image, handler, mode, timeout, env, memory, cpus, egress, minReplicas`},
		{"wrong case", "Runtime: python3\n", nil, `unknown field "Runtime" (did you mean "runtime"?`},
		{"duplicate key", "mode: exec\nmode: http\n", nil, `function.yaml: line 2: mode is set twice (first on line 1)`},
		{"yaml syntax", "mode: [exec\n", nil, "function.yaml: yaml: line"},
		{"several documents", "mode: exec\n---\nruntime: node\n", nil, "function.yaml: holds more than one YAML document"},
		{"not a mapping", "- mode\n", nil, "function.yaml: must be a mapping of settings (runtime: python3, ...), got a list"},
		{"runtime", "runtime: ruby\n", nil, `function.yaml: runtime "ruby": want python3, node or bash`},
		{"mode", "mode: grpc\n", nil, `function.yaml: mode "grpc": want exec`},
		{"timeout syntax", "timeout: abc\n", nil, `function.yaml: timeout "abc": time: invalid duration "abc"`},
		{"timeout negative", "timeout: -1s\n", nil, `function.yaml: timeout "-1s": must be positive`},
		{"timeout number", "timeout: 30\n", nil, `function.yaml: line 1: timeout: got the number 30, want a duration such as "30s"`},
		{"timeout unit", "timeout: 30x\n", nil, `function.yaml: timeout "30x": time: unknown unit "x" in duration "30x"`},
		{"timeout list", "timeout: [1]\n", nil, `function.yaml: line 1: timeout: got a list, want a duration such as "30s"`},
		{"env name", "env:\n  1X: a\n", nil, `function.yaml: env "1X": not a valid variable name`},
		{"env Http_", "env:\n  Http_Method: a\n", nil, `function.yaml: env "Http_Method": names starting with Http_`},
		{"env FAAS_", "env:\n  FAAS_SECRET: a\n", nil, `function.yaml: env "FAAS_SECRET": names starting with FAAS_ are reserved`},
		{"env value number", "env:\n  NUM: 1\n", nil, `function.yaml: line 2: env NUM: value must be a string; quote it: NUM: "1"`},
		{"env value bool", "env:\n  DEBUG: true\n", nil, `function.yaml: line 2: env DEBUG: value must be a string; quote it: DEBUG: "true"`},
		{"env value empty", "env:\n  EMPTY:\n", nil, `function.yaml: line 2: env EMPTY: value must be a string; quote it: EMPTY: ""`},
		{"env key set twice", "env:\n  A: x\n  A: y\n", nil, `function.yaml: line 3: env A is set twice`},
		{"env not a map", "env: [a]\n", nil, `function.yaml: line 1: env: got a list, want a mapping of NAME: "value"`},
		{"memory syntax", "memory: lots\n", nil, `function.yaml: memory "lots":`},
		{"memory small", "memory: 32MB\n", nil, `function.yaml: memory "32MB": below the 64MB a guest needs`},
		{"cpus zero", "cpus: 0\n", nil, "function.yaml: cpus 0: must be at least 1"},
		{"cpus type", "cpus: two\n", nil, `function.yaml: line 1: cpus: got the string "two", want a whole number`},
		{"cpus fraction", "cpus: 1.5\n", nil, `function.yaml: line 1: cpus: got the number 1.5, want a whole number`},
		{"egress type", "egress: yes\n", nil, `function.yaml: line 1: egress: got the string "yes", want true or false`},
		{"target type", "targetUtilization: high\n", nil, `function.yaml: line 1: targetUtilization: got the string "high", want a number`},
		{"image", "image: 'Not A Ref'\n", nil, `function.yaml: image "Not A Ref":`},
		{"minReplicas", "minReplicas: -1\n", nil, "function.yaml: minReplicas -1: must be 0 or more"},
		{"maxReplicas", "maxReplicas: 0\n", nil, "function.yaml: maxReplicas 0: must be at least 1"},
		{"max below min", "minReplicas: 3\nmaxReplicas: 2\n", nil, "function.yaml: maxReplicas 2 is below minReplicas 3"},
		{"min above default max", "minReplicas: 4\n", nil, "function.yaml: maxReplicas 3 (the appliance default) is below minReplicas 4"},
		{"concurrency", "concurrency: 0\n", nil, "function.yaml: concurrency 0: must be at least 1"},
		{"target zero", "targetUtilization: 0\n", nil, "function.yaml: targetUtilization 0: must be above 0 and at most 1"},
		{"target above one", "targetUtilization: 1.5\n", nil, "function.yaml: targetUtilization 1.5: must be above 0"},
		{"idleTimeout", "idleTimeout: 0s\n", nil, `function.yaml: idleTimeout "0s": must be positive`},
		{"secrets not a list", "secrets: db\n", nil, `function.yaml: line 1: secrets: got the string "db", want a list of secret names such as [db-password]`},
		{"secret name", "secrets: [Db_Pass]\n", nil, `function.yaml: line 1: secret name "Db_Pass": use 1 to 63 characters`},
		{"secret not a string", "secrets: [1]\n", nil, `function.yaml: line 1: secrets: got the number 1, want a secret name`},
		{"secret twice", "secrets:\n  - a\n  - a\n", nil, `function.yaml: line 3: secret a is listed twice`},
		{"handler escapes", "handler: ../x.py\n", nil, `function.yaml: handler "../x.py": must name a file inside the folder`},
		{"handler absolute", "handler: /etc/passwd\n", nil, `function.yaml: handler "/etc/passwd": must be a path relative`},
		{"handler missing", "handler: nope.py\n", nil, `function.yaml: handler "nope.py": no such file`},
		{"handler is a folder", "handler: lib\n", map[string]string{"lib/x.py": ""}, `function.yaml: handler "lib": no such file`},
		{"http bash", "mode: http\nruntime: bash\n", map[string]string{"run.sh": "echo"}, "mode http needs a runtime with an HTTP bootstrap"},
		{"http sh handler", "mode: http\nruntime: python3\nhandler: run.sh\n", map[string]string{"run.sh": "echo"}, "mode http in runtime python3 needs a .py handler, got run.sh"},
		{"exec py in node", "runtime: node\nhandler: handler.py\n", nil, "handler handler.py is a .py file but the runtime is node"},
		{"unknown extension", "handler: run\n", map[string]string{"run": "x"}, "cannot tell the runtime of handler run"},
		{"both manifests", "mode: exec\n", map[string]string{"function.yml": "mode: exec\n"}, "both function.yaml and function.yml exist"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := map[string]string{"handler.py": "print(1)\n", "function.yaml": tt.manifest}
			for k, v := range tt.files {
				files[k] = v
			}
			dir := makeFunc(t, "broken", files)
			_, err := Load(dir, testDefaults(t), nil, EngineQEMU)
			if err == nil {
				t.Fatalf("Load: got no error, want %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got error %q, want it to contain %q", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "function broken: ") {
				t.Errorf("got error %q, want it to start with the function's name", err)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("got error %v, want it to match ErrInvalid", err)
			}
		})
	}
}

func TestEgress(t *testing.T) {
	tests := []struct {
		name     string
		def      bool
		manifest string
		want     bool
	}{
		{"default off", false, "", false},
		{"default on", true, "", true},
		{"function turns it on", false, "egress: true\n", true},
		{"function turns it off", true, "egress: false\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := testDefaults(t)
			d.Egress = tt.def
			dir := makeFunc(t, "egress", map[string]string{"handler.py": "", "function.yaml": tt.manifest})
			s, err := Load(dir, d, nil, EngineQEMU)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if s.Egress != tt.want {
				t.Errorf("got egress %v, want %v", s.Egress, tt.want)
			}
		})
	}
}

func TestLoadManifestVariants(t *testing.T) {
	tests := []struct {
		name     string
		file     string
		manifest string
		check    func(*Spec) (got, want any)
	}{
		{"function.yml", "function.yml", "timeout: 7s\n", func(s *Spec) (any, any) { return s.Timeout, 7 * time.Second }},
		{"empty manifest", "function.yaml", "", func(s *Spec) (any, any) { return s.Mode, ModeExec }},
		{"comments only", "function.yaml", "# nothing\n", func(s *Spec) (any, any) { return s.Runtime, RuntimePython3 }},
		{"egress false", "function.yaml", "egress: false\n", func(s *Spec) (any, any) { return s.Egress, false }},
		{"null field", "function.yaml", "timeout:\nmode: ~\n", func(s *Spec) (any, any) { return s.Timeout, 30 * time.Second }},
		{"env keys YAML 1.1 would turn into booleans", "function.yaml", "env:\n  N: \"no\"\n  Y: yes\n", func(s *Spec) (any, any) {
			return s.Env, map[string]string{"N": "no", "Y": "yes"}
		}},
		{"empty env", "function.yaml", "env: {}\n", func(s *Spec) (any, any) { return len(s.Env), 0 }},
		{"image digest", "function.yaml", "image: python@sha256:" + strings.Repeat("a", 64) + "\n", func(s *Spec) (any, any) { return s.Image, "python@sha256:" + strings.Repeat("a", 64) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := makeFunc(t, "variant", map[string]string{"handler.py": "print(1)\n", tt.file: tt.manifest})
			s, err := Load(dir, testDefaults(t), nil, EngineQEMU)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got, want := tt.check(s); !reflect.DeepEqual(got, want) {
				t.Errorf("got %v, want %v", got, want)
			}
		})
	}
}

func TestInference(t *testing.T) {
	tests := []struct {
		name        string
		files       map[string]string
		wantRuntime string
		wantHandler string
		wantCommand []string // nil: http mode
		wantErr     string
	}{
		{name: "handler.py", files: map[string]string{"handler.py": ""},
			wantRuntime: "python3", wantHandler: "handler.py", wantCommand: []string{"python3", "handler.py"}},
		{name: "main.py before others", files: map[string]string{"main.py": "", "other.py": ""},
			wantRuntime: "python3", wantHandler: "main.py", wantCommand: []string{"python3", "main.py"}},
		{name: "handler.py before index.js", files: map[string]string{"index.js": "", "handler.py": ""},
			wantRuntime: "python3", wantHandler: "handler.py", wantCommand: []string{"python3", "handler.py"}},
		{name: "index.js", files: map[string]string{"index.js": "", "lib.js": ""},
			wantRuntime: "node", wantHandler: "index.js", wantCommand: []string{"node", "index.js"}},
		{name: "handler.sh", files: map[string]string{"handler.sh": "echo hi"},
			wantRuntime: "bash", wantHandler: "handler.sh", wantCommand: []string{"bash", "handler.sh"}},
		{name: "sh running python3 beside .py", files: map[string]string{"localfunction.sh": "python3 hello-world.py\n", "hello-world.py": ""},
			wantRuntime: "python3", wantHandler: "localfunction.sh", wantCommand: []string{"bash", "localfunction.sh"}},
		{name: "sh mentioning python3 without .py", files: map[string]string{"main.sh": "python3 -c 'print(1)'\n"},
			wantRuntime: "bash", wantHandler: "main.sh", wantCommand: []string{"bash", "main.sh"}},
		{name: "sh with .py but no python3", files: map[string]string{"main.sh": "echo hi\n", "lib/x.py": ""},
			wantRuntime: "bash", wantHandler: "main.sh", wantCommand: []string{"bash", "main.sh"}},
		{name: "sh running node beside .js", files: map[string]string{"main.sh": "exec node app.js\n", "app.js": ""},
			wantRuntime: "node", wantHandler: "main.sh", wantCommand: []string{"bash", "main.sh"}},
		{name: "sh mentioning node_modules only", files: map[string]string{"main.sh": "ls node_modules\n", "app.js": ""},
			wantRuntime: "bash", wantHandler: "main.sh", wantCommand: []string{"bash", "main.sh"}},
		{name: "single py", files: map[string]string{"whatever.py": "", "README.md": ""},
			wantRuntime: "python3", wantHandler: "whatever.py", wantCommand: []string{"python3", "whatever.py"}},
		{name: "single js", files: map[string]string{"fn.js": "", "data.json": ""},
			wantRuntime: "node", wantHandler: "fn.js", wantCommand: []string{"node", "fn.js"}},
		{name: "hidden file not a candidate", files: map[string]string{".tool.py": "", "fn.sh": ""},
			wantRuntime: "bash", wantHandler: "fn.sh", wantCommand: []string{"bash", "fn.sh"}},
		{name: "nested files not candidates", files: map[string]string{"lib/handler.py": "", "run.sh": ""},
			wantRuntime: "bash", wantHandler: "run.sh", wantCommand: []string{"bash", "run.sh"}},
		{name: "runtime node picks index.js", files: map[string]string{"handler.py": "", "index.js": "", "function.yaml": "runtime: node\n"},
			wantRuntime: "node", wantHandler: "index.js", wantCommand: []string{"node", "index.js"}},
		{name: "runtime python3 takes a .sh candidate", files: map[string]string{"handler.sh": "", "function.yaml": "runtime: python3\n"},
			wantRuntime: "python3", wantHandler: "handler.sh", wantCommand: []string{"bash", "handler.sh"}},
		{name: "runtime with extensionless handler", files: map[string]string{"run": "", "function.yaml": "runtime: python3\nhandler: run\n"},
			wantRuntime: "python3", wantHandler: "run", wantCommand: []string{"python3", "run"}},
		{name: "handler names runtime", files: map[string]string{"a.py": "", "b.py": "", "function.yaml": "handler: b.py\n"},
			wantRuntime: "python3", wantHandler: "b.py", wantCommand: []string{"python3", "b.py"}},
		{name: "manifest sh handler in a subfolder", files: map[string]string{"bin/start.sh": "python3 app.py\n", "app.py": "", "function.yaml": "handler: bin/start.sh\n"},
			wantRuntime: "python3", wantHandler: "bin/start.sh", wantCommand: []string{"bash", "bin/start.sh"}},
		{name: "http skips sh", files: map[string]string{"handler.sh": "", "app.py": "def handle(req):\n  return 'x'\n", "function.yaml": "mode: http\n"},
			wantRuntime: "python3", wantHandler: "app.py"},
		{name: "http node", files: map[string]string{"index.js": "module.exports = () => 'x'\n", "function.yaml": "mode: http\n"},
			wantRuntime: "node", wantHandler: "index.js"},
		{name: "several", files: map[string]string{"a.py": "", "b.js": ""},
			wantErr: "cannot tell which file is the handler among a.py, b.js"},
		{name: "none", files: map[string]string{"README.md": ""},
			wantErr: "no handler found: add a *.py, *.js or *.sh file (tried handler.py, main.py"},
		{name: "none for runtime bash", files: map[string]string{"handler.py": "", "function.yaml": "runtime: bash\n"},
			wantErr: "no handler found: add a *.sh file"},
		{name: "none for http", files: map[string]string{"handler.sh": "", "function.yaml": "mode: http\n"},
			wantErr: "no handler found: add a *.py or *.js file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := makeFunc(t, "infer", tt.files)
			s, err := Load(dir, testDefaults(t), nil, EngineQEMU)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if s.Runtime != tt.wantRuntime || s.Handler != tt.wantHandler || !reflect.DeepEqual(s.Command, tt.wantCommand) {
				t.Errorf("got runtime %s handler %s command %q, want %s %s %q",
					s.Runtime, s.Handler, s.Command, tt.wantRuntime, tt.wantHandler, tt.wantCommand)
			}
		})
	}
}

func TestHTTPHandlerWarnings(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  string // "" : no warning
	}{
		{"python defines handle", map[string]string{"handler.py": "def handle(req):\n    return 'x'\n"}, ""},
		{"python imports handle", map[string]string{"handler.py": "from impl import handle\n"}, ""},
		{"python without handle", map[string]string{"handler.py": "print('x')\n"}, "handler.py does not seem to define handle(req)"},
		{"node exports", map[string]string{"index.js": "module.exports = async () => 'x'\n"}, ""},
		{"node exports handle", map[string]string{"index.js": "exports.handle = async () => 'x'\n"}, ""},
		{"node ES module default", map[string]string{"index.js": "export default async function (req) { return 'x' }\n"}, ""},
		{"node ES module handle", map[string]string{"index.js": "export async function handle(req) { return 'x' }\n"}, ""},
		{"node without exports", map[string]string{"index.js": "console.log('x')\n"}, "index.js does not seem to export a function"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.files["function.yaml"] = "mode: http\n"
			s, err := Load(makeFunc(t, "warn", tt.files), testDefaults(t), nil, EngineQEMU)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if tt.want == "" && len(s.Warnings) > 0 {
				t.Errorf("got warnings %q, want none", s.Warnings)
			}
			if tt.want != "" && !hasWarning(s.Warnings, tt.want) {
				t.Errorf("got warnings %q, want one containing %q", s.Warnings, tt.want)
			}
		})
	}
}

func TestLoadFolderErrors(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, map[string]string{
		"afile":         "x",
		"real/main.py":  "",
		"linked":        "->real",
		"Bad_Name/x.py": "",
	})
	tests := []struct {
		name        string
		dir         string
		d           func(*Defaults)
		engine      string
		want        string
		wantInvalid bool
		wantNotExit bool
	}{
		{name: "missing", dir: filepath.Join(root, "gone"), want: "function gone: reading folder", wantNotExit: true},
		{name: "a file", dir: filepath.Join(root, "afile"), want: "is not a folder", wantInvalid: true},
		{name: "symlinked folder", dir: filepath.Join(root, "linked"), want: "is a symlink; a function must be a real folder", wantInvalid: true},
		{name: "bad name", dir: filepath.Join(root, "Bad_Name"), want: `function "Bad_Name": name "Bad_Name" is not a valid function name`, wantInvalid: true},
		{name: "unknown engine", dir: filepath.Join(root, "real"), engine: "firecracker", want: `unknown engine "firecracker"`},
		{name: "bad defaults timeout", dir: filepath.Join(root, "real"), d: func(d *Defaults) { d.Timeout = 0 }, want: "defaults: timeout 0s: must be positive"},
		{name: "bad defaults memory", dir: filepath.Join(root, "real"), d: func(d *Defaults) { d.Memory = "x" }, want: `defaults: memory "x"`},
		{name: "bad defaults scale", dir: filepath.Join(root, "real"), d: func(d *Defaults) { d.Concurrency = 0 }, want: "defaults: concurrency 0: must be at least 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := testDefaults(t)
			if tt.d != nil {
				tt.d(&d)
			}
			engine := EngineQEMU
			if tt.engine != "" {
				engine = tt.engine
			}
			_, err := Load(tt.dir, d, nil, engine)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got error %v, want one containing %q", err, tt.want)
			}
			if got := errors.Is(err, ErrInvalid); got != tt.wantInvalid {
				t.Errorf("errors.Is(err, ErrInvalid) = %v, want %v (err %v)", got, tt.wantInvalid, err)
			}
			if got := errors.Is(err, fs.ErrNotExist); got != tt.wantNotExit {
				t.Errorf("errors.Is(err, fs.ErrNotExist) = %v, want %v (err %v)", got, tt.wantNotExit, err)
			}
		})
	}
}

func TestSymlinks(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  string // "" : loads
	}{
		{"link inside", map[string]string{"impl.py": "print(1)\n", "handler.py": "->impl.py"}, ""},
		{"link into subfolder", map[string]string{"lib/impl.py": "", "main.py": "->lib/impl.py"}, ""},
		{"link to a folder inside", map[string]string{"lib/impl.py": "", "handler.py": "", "alias": "->lib"}, ""},
		{"escape with dotdot", map[string]string{"handler.py": "", "secret": "->../../etc/passwd"}, "symlink secret -> ../../etc/passwd points outside the folder"},
		{"escape to parent", map[string]string{"handler.py": "", "up": "->.."}, "symlink up -> .. points outside the folder"},
		{"absolute", map[string]string{"handler.py": "", "abs": "->/etc/passwd"}, "symlink abs points to the absolute path /etc/passwd"},
		{"escape through another link", map[string]string{"handler.py": "", "self": "->.", "sub/up": "->../self/.."}, "symlink sub/up -> ../self/.. points outside the folder"},
		{"dangling", map[string]string{"handler.py": "", "gone": "->missing"}, "symlink gone -> missing does not resolve"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := makeFunc(t, "links", tt.files)
			_, err := Load(dir, testDefaults(t), nil, EngineQEMU)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got error %v, want one containing %q", err, tt.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("got error %v, want it to match ErrInvalid", err)
			}
		})
	}
}

func TestSpecialFileRefused(t *testing.T) {
	dir := makeFunc(t, "fifo", map[string]string{"handler.py": ""})
	if err := syscall.Mkfifo(filepath.Join(dir, "pipe"), 0o644); err != nil {
		t.Fatalf("mkfifo: %v", err)
	}
	_, err := Load(dir, testDefaults(t), nil, EngineQEMU)
	if err == nil || !strings.Contains(err.Error(), "pipe is a named pipe") {
		t.Fatalf("got error %v, want one naming the pipe", err)
	}
}

func TestSizeLimit(t *testing.T) {
	tests := []struct {
		name    string
		maxSize int64
		wantErr bool
	}{
		{"under", 100, false},
		{"exact", 60, false},
		{"over", 59, true},
		{"no limit", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := makeFunc(t, "big", map[string]string{
				"handler.py":  strings.Repeat("#", 30),
				"data/blob.x": strings.Repeat("x", 30),
			})
			d := testDefaults(t)
			d.MaxSize = tt.maxSize
			_, err := Load(dir, d, nil, EngineQEMU)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), "folder holds more than the 59 bytes a function may have") {
					t.Fatalf("got error %v, want the size limit named", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
		})
	}
}

func TestDigest(t *testing.T) {
	base := map[string]string{"handler.py": "print(1)\n", "lib/util.py": "X = 1\n"}
	load := func(t *testing.T, dir string) string {
		t.Helper()
		s, err := Load(dir, testDefaults(t), nil, EngineQEMU)
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		return s.Digest
	}
	tests := []struct {
		name   string
		change func(t *testing.T, dir string)
		same   bool
	}{
		{"unchanged", func(*testing.T, string) {}, true},
		{"mtime only", func(t *testing.T, dir string) {
			old := time.Now().Add(-time.Hour)
			for _, p := range []string{"handler.py", "lib/util.py", "lib"} {
				if err := os.Chtimes(filepath.Join(dir, p), old, old); err != nil {
					t.Fatal(err)
				}
			}
		}, true},
		{"content", func(t *testing.T, dir string) { writeFiles(t, dir, map[string]string{"lib/util.py": "X = 2\n"}) }, false},
		{"same size content", func(t *testing.T, dir string) { writeFiles(t, dir, map[string]string{"handler.py": "print(2)\n"}) }, false},
		{"mode", func(t *testing.T, dir string) {
			if err := os.Chmod(filepath.Join(dir, "handler.py"), 0o755); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"new file", func(t *testing.T, dir string) { writeFiles(t, dir, map[string]string{".env": ""}) }, false},
		{"empty folder", func(t *testing.T, dir string) {
			if err := os.Mkdir(filepath.Join(dir, "empty"), 0o755); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"rename", func(t *testing.T, dir string) {
			if err := os.Rename(filepath.Join(dir, "lib/util.py"), filepath.Join(dir, "lib/util2.py")); err != nil {
				t.Fatal(err)
			}
		}, false},
	}
	// The folder's own name and location are not part of the digest.
	want := load(t, makeFunc(t, "first", base))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := makeFunc(t, "second", base)
			tt.change(t, dir)
			got := load(t, dir)
			if (got == want) != tt.same {
				t.Errorf("got digest %s, base %s: want same=%v", got, want, tt.same)
			}
		})
	}
}

// TestFolderNotModified runs every kind of Load over copies of the seed
// demo and the examples and checks nothing below them changed, not even a
// timestamp.
func TestFolderNotModified(t *testing.T) {
	sources := []string{"testdata/seed", "../../functions/hello", "../../functions/echo", "../../functions/node-hello", "../../functions/bash-hello"}
	for _, src := range sources {
		t.Run(filepath.Base(src), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), filepath.Base(src))
			copyDir(t, src, dir)
			old := time.Now().Add(-24 * time.Hour)
			if err := os.Chtimes(dir, old, old); err != nil {
				t.Fatal(err)
			}
			before := listing(t, dir)
			for _, engine := range []string{EngineQEMU, EngineIgnite} {
				if _, err := Load(dir, testDefaults(t), nil, engine); err != nil {
					t.Fatalf("Load: %v", err)
				}
			}
			if after := listing(t, dir); after != before {
				t.Errorf("folder changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

func TestExamples(t *testing.T) {
	tests := []struct {
		name        string
		wantRuntime string
		wantMode    string
		wantHandler string
		wantCommand []string
	}{
		{"hello", RuntimePython3, ModeExec, "handler.py", []string{"python3", "handler.py"}},
		{"echo", RuntimePython3, ModeHTTP, "handler.py", nil},
		{"node-hello", RuntimeNode, ModeHTTP, "index.js", nil},
		{"bash-hello", RuntimeBash, ModeExec, "handler.sh", []string{"bash", "handler.sh"}},
	}
	template, err := LoadTemplate("../../config/func-handler.yml")
	if err != nil {
		t.Fatalf("LoadTemplate: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Load(filepath.Join("../../functions", tt.name), testDefaults(t), template, EngineQEMU)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if s.Runtime != tt.wantRuntime || s.Mode != tt.wantMode || s.Handler != tt.wantHandler || !reflect.DeepEqual(s.Command, tt.wantCommand) {
				t.Errorf("got runtime %s mode %s handler %s command %q, want %s %s %s %q",
					s.Runtime, s.Mode, s.Handler, s.Command, tt.wantRuntime, tt.wantMode, tt.wantHandler, tt.wantCommand)
			}
			if len(s.Warnings) != 0 {
				t.Errorf("got warnings %q, want none", s.Warnings)
			}
		})
	}
}

func TestParseManifestDocuments(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		wantErr bool
	}{
		{name: "one document", data: "mode: http\n"},
		{name: "leading marker", data: "---\nmode: http\n"},
		{name: "trailing marker", data: "mode: http\n---\n"},
		{name: "trailing marker and comment", data: "mode: http\n---\n# done\n"},
		{name: "second document", data: "mode: http\n---\nruntime: node\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := parseManifest("function.yaml", []byte(tt.data))
			if tt.wantErr {
				if err == nil {
					t.Errorf("got no error, want one")
				}
				return
			}
			if err != nil || m.Mode != "http" {
				t.Errorf("got %+v, %v; want mode http and no error", m, err)
			}
		})
	}
}
