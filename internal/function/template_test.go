package function

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/faasvm/appliance/guest/protocol"
)

// contractDir is where the bootstraps' contract tests keep their handlers.
const contractDir = "../../guest/agent/bootstrap/testdata"

func readContract(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	entries, err := os.ReadDir(filepath.Join(contractDir, dir))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(contractDir, dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = string(b)
	}
	return files
}

func TestTemplates(t *testing.T) {
	tests := []struct {
		name     string
		contract string            // a folder of contractDir, or "" for files alone
		files    map[string]string // added to (or replacing) the folder's
		wantErr  string
		wantTmpl string
		wantFn   string
		wantMode string
		wantRT   string
		wantHdlr string
		wantCmd  []string
	}{
		{name: "python3-http detected", contract: "py-http", wantTmpl: protocol.TemplateOpenFaaSHTTP, wantMode: ModeHTTP, wantRT: RuntimePython3, wantHdlr: "handler.py"},
		{name: "python3-http with mode http", contract: "py-http", files: map[string]string{"function.yaml": "mode: http\n"}, wantTmpl: protocol.TemplateOpenFaaSHTTP, wantMode: ModeHTTP},
		{name: "explicit mode exec keeps our contract", contract: "py-http", files: map[string]string{"function.yaml": "mode: exec\n"}, wantTmpl: protocol.TemplateFaasVM, wantMode: ModeExec},
		{name: "node20 detected", contract: "node20", wantTmpl: protocol.TemplateOpenFaaSNode, wantMode: ModeHTTP, wantRT: RuntimeNode},
		{name: "python lambda detected", contract: "py-lambda", wantTmpl: protocol.TemplateLambda, wantFn: "lambda_handler", wantMode: ModeHTTP, wantHdlr: "lambda_function.py"},
		{name: "node lambda detected", contract: "node-lambda", wantTmpl: protocol.TemplateLambda, wantFn: "handler", wantMode: ModeHTTP, wantHdlr: "index.js"},
		{name: "classic python detected", contract: "py-classic", wantTmpl: protocol.TemplateOpenFaaSClassic, wantMode: ModeExec, wantCmd: []string{"python3", "handler.py"}},
		{name: "classic node detected", contract: "node-classic", wantTmpl: protocol.TemplateOpenFaaSClassic, wantMode: ModeExec, wantCmd: []string{"node", "handler.js"}},
		{name: "our handle(req) in http mode", files: map[string]string{"handler.py": "def handle(req):\n    return 'x'\n", "function.yaml": "mode: http\n"},
			wantTmpl: protocol.TemplateFaasVM, wantMode: ModeHTTP},
		{name: "a script that calls handle itself stays a script", files: map[string]string{"handler.py": "import sys\ndef handle(req):\n    return req\nprint(handle(sys.stdin.read()))\n"},
			wantTmpl: protocol.TemplateFaasVM, wantMode: ModeExec},
		{name: "a plain script stays a script", files: map[string]string{"handler.py": "print('hi')\n"}, wantTmpl: protocol.TemplateFaasVM, wantMode: ModeExec},
		{name: "a node script reading stdin stays a script", files: map[string]string{"index.js": "process.stdin.pipe(process.stdout);\nmodule.exports = (x) => x;\n"},
			wantTmpl: protocol.TemplateFaasVM, wantMode: ModeExec},
		{name: "lambda file.function handler", files: map[string]string{"app.py": "def main(event, context):\n    return 'ok'\n", "function.yaml": "handler: app.main\n"},
			wantTmpl: protocol.TemplateLambda, wantFn: "main", wantMode: ModeHTTP, wantHdlr: "app.py", wantRT: RuntimePython3},
		{name: "lambda file.function handler in a subfolder, node", files: map[string]string{"src/app.js": "exports.go = async () => 'ok';\n", "function.yaml": "handler: src/app.go\n"},
			wantTmpl: protocol.TemplateLambda, wantFn: "go", wantHdlr: "src/app.js", wantRT: RuntimeNode},
		{name: "lambda form with mode exec", files: map[string]string{"app.py": "def main(event, context):\n    return 'ok'\n", "function.yaml": "handler: app.main\nmode: exec\n"},
			wantErr: "Lambda's file.function form, which runs in mode http"},
		{name: "lambda form with another template", files: map[string]string{"app.py": "def main(event, context):\n    return 'ok'\n", "function.yaml": "handler: app.main\ntemplate: python3-http\n"},
			wantErr: "is Lambda's file.function form, but template is python3-http"},
		{name: "explicit template python3-flask", files: map[string]string{"handler.py": "def handle(req):\n    return req\n", "function.yaml": "template: python3-flask\n"},
			wantTmpl: protocol.TemplateOpenFaaSHTTP, wantMode: ModeHTTP},
		{name: "explicit template node22", files: map[string]string{"handler.js": "module.exports = async (e, c) => 'x';\n", "function.yaml": "template: node22\n"},
			wantTmpl: protocol.TemplateOpenFaaSNode, wantMode: ModeHTTP},
		{name: "explicit template python3 classic", files: map[string]string{"handler.py": "def handle(req):\n    return req\nprint('x')\n", "function.yaml": "template: python3\n"},
			wantTmpl: protocol.TemplateOpenFaaSClassic, wantMode: ModeExec},
		{name: "explicit lambda template names the default function", files: map[string]string{"index.js": "module.exports.handler = async () => 1;\n", "function.yaml": "template: lambda\n"},
			wantTmpl: protocol.TemplateLambda, wantFn: "handler"},
		{name: "explicit faasvm turns detection off", contract: "py-http", files: map[string]string{"function.yaml": "template: faasvm\nmode: http\n"}, wantTmpl: protocol.TemplateFaasVM},
		{name: "unknown template", files: map[string]string{"handler.py": "", "function.yaml": "template: python2\n"}, wantErr: `template "python2": want one of faasvm, lambda, node, node18, node20, node22, python3, python3-flask, python3-http`},
		{name: "template against runtime", files: map[string]string{"handler.py": "", "function.yaml": "template: node20\nruntime: python3\n"}, wantErr: "template node20 runs in runtime node, not python3"},
		{name: "template against mode", files: map[string]string{"handler.py": "", "function.yaml": "template: python3-http\nmode: exec\n"}, wantErr: "template python3-http runs in mode http, not exec"},
		{name: "template against the handler's language", files: map[string]string{"handler.js": "module.exports = 1", "function.yaml": "template: python3-http\nhandler: handler.js\n"}, wantErr: "handler.js"},
		{name: "template as a number", files: map[string]string{"handler.py": "", "function.yaml": "template: 3\n"}, wantErr: "template: got the number 3, want a string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := map[string]string{}
			if tt.contract != "" {
				files = readContract(t, tt.contract)
			}
			for k, v := range tt.files {
				files[k] = v
			}
			s, err := Load(makeFunc(t, "fn", files), testDefaults(t), nil, EngineQEMU)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrInvalid) {
					t.Fatalf("Load: got error %v, want an invalid-function error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			t.Cleanup(func() { s.RemoveSnapshot() })
			check := func(what, got, want string) {
				if want != "" && got != want {
					t.Errorf("%s: got %q, want %q", what, got, want)
				}
			}
			check("template", s.Template, tt.wantTmpl)
			check("function", s.Function, tt.wantFn)
			check("mode", s.Mode, tt.wantMode)
			check("runtime", s.Runtime, tt.wantRT)
			check("handler", s.Handler, tt.wantHdlr)
			if tt.wantCmd != nil && strings.Join(s.Command, " ") != strings.Join(tt.wantCmd, " ") {
				t.Errorf("command: got %q, want %q", s.Command, tt.wantCmd)
			}
			if s.Mode == ModeHTTP && s.Command != nil {
				t.Errorf("http mode has a command: %q", s.Command)
			}
		})
	}
}
