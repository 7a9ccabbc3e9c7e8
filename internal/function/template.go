package function

import (
	"path"
	"regexp"
	"sort"
	"strings"

	"github.com/faasvm/appliance/guest/protocol"
)

// Handler contracts: functions written for OpenFaaS's templates and AWS
// Lambda run unchanged. function.yaml's template names one; without it
// the handler's source decides (see detectTemplate).

// templateNames maps function.yaml's template values to what they mean.
var templateNames = map[string]struct {
	contract string // protocol.Template*
	runtime  string // "" for any
	mode     string
}{
	"faasvm":        {protocol.TemplateFaasVM, "", ""},
	"python3-http":  {protocol.TemplateOpenFaaSHTTP, RuntimePython3, ModeHTTP},
	"python3-flask": {protocol.TemplateOpenFaaSHTTP, RuntimePython3, ModeHTTP},
	"node18":        {protocol.TemplateOpenFaaSNode, RuntimeNode, ModeHTTP},
	"node20":        {protocol.TemplateOpenFaaSNode, RuntimeNode, ModeHTTP},
	"node22":        {protocol.TemplateOpenFaaSNode, RuntimeNode, ModeHTTP},
	"python3":       {protocol.TemplateOpenFaaSClassic, RuntimePython3, ModeExec},
	"node":          {protocol.TemplateOpenFaaSClassic, RuntimeNode, ModeExec},
	"lambda":        {protocol.TemplateLambda, "", ModeHTTP},
}

func templateList() string {
	names := make([]string, 0, len(templateNames))
	for n := range templateNames {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func checkTemplate(mfile, tmpl, runtime, mode string) error {
	if tmpl == "" {
		return nil
	}
	t, ok := templateNames[tmpl]
	if !ok {
		return invalidf("%s: template %q: want one of %s", mfile, tmpl, templateList())
	}
	if t.runtime != "" && runtime != "" && runtime != t.runtime {
		return invalidf("%s: template %s runs in runtime %s, not %s", mfile, tmpl, t.runtime, runtime)
	}
	if t.mode != "" && mode != "" && mode != t.mode {
		return invalidf("%s: template %s runs in mode %s, not %s: remove mode or set it to %s", mfile, tmpl, t.mode, mode, t.mode)
	}
	return nil
}

// lambdaHandler matches Lambda's handler setting, file.function.
var lambdaHandler = regexp.MustCompile(`^([A-Za-z0-9_][A-Za-z0-9_./-]*)\.([A-Za-z_$][A-Za-z0-9_$]*)$`)

// splitLambdaHandler reads a handler setting of the form file.function
// (Lambda's: app.lambda_handler names lambda_handler in app.py) when the
// setting is not itself a file of the folder: it returns the file and the
// function, or false.
func splitLambdaHandler(t *tree, dir, handler, runtime string) (string, string, bool) {
	m := lambdaHandler.FindStringSubmatch(handler)
	if m == nil || t.isFile(dir, path.Clean(handler)) {
		return "", "", false
	}
	exts := []string{".py", ".js", ".mjs", ".cjs"}
	switch runtime {
	case RuntimePython3:
		exts = []string{".py"}
	case RuntimeNode:
		exts = []string{".js", ".mjs", ".cjs"}
	}
	for _, ext := range exts {
		f := path.Clean(m[1] + ext)
		if !strings.HasPrefix(f, "../") && t.isFile(dir, f) {
			return f, m[2], true
		}
	}
	return "", "", false
}

var (
	pyLambda     = regexp.MustCompile(`(?m)^(async\s+)?def\s+lambda_handler\s*\(`)
	pyHandleTwo  = regexp.MustCompile(`(?m)^(async\s+)?def\s+handle\s*\(\s*\w+\s*(:[^,)]*)?,\s*\w+\s*(:[^,)]*)?\)`)
	pyHandleOne  = regexp.MustCompile(`(?m)^def\s+handle\s*\(\s*\w+\s*(:[^,)]*)?\)`)
	pyTopCall    = regexp.MustCompile(`(?m)^[A-Za-z_][\w.]*\s*\(`)
	jsLambda     = regexp.MustCompile(`\b(module\.)?exports\.handler\s*=|\bexport\s+(const|let|var)\s+handler\b|\bexport\s+(async\s+)?function\s+handler\b`)
	jsEventCtx   = regexp.MustCompile(`module\.exports\s*=\s*(async\s+)?(function\s*\w*\s*)?\(\s*event\s*,\s*context\s*[,)]|\bcontext\s*\.\s*status\s*\(\s*\d+\s*\)\s*(\.\s*headers\s*\([^)]*\)\s*)?\.\s*(succeed|fail)\s*\(`)
	jsExportsFn  = regexp.MustCompile(`module\.exports\s*=\s*(async\s+)?(function\b|\(|\w+\s*=>)`)
	jsSelfDriven = regexp.MustCompile(`\bprocess\.stdin\b|\brequire\.main\b|\bprocess\.argv\b`)
)

// detectTemplate tells a handler's contract from its source when
// function.yaml names none. modeSet says function.yaml set mode (then an
// exec-mode folder keeps our own contract, and http mode never picks a
// classic template). It returns the contract, the function to call ("":
// the contract's default) and the mode the contract needs ("": any).
//
// Python: a top-level def lambda_handler( → Lambda (lambda_handler);
// def handle(a, b) → python3-http; in exec mode (not set), def handle(a)
// with no top-level call and no __main__ check → classic python3.
// Node: exports.handler = / export const|function handler → Lambda
// (handler); module.exports = (event, context ...) or a
// context.status(n).succeed(/fail( chain → node20; in exec mode (not set),
// module.exports = a function, with no use of process.stdin, process.argv
// or require.main → classic node. Anything else: our own.
func detectTemplate(runtime, handler string, src []byte, mode string, modeSet bool) (contract, function, needMode string) {
	if src == nil {
		return protocol.TemplateFaasVM, "", ""
	}
	execUnset := !modeSet
	switch {
	case runtime == RuntimePython3 && path.Ext(handler) == ".py":
		switch {
		case modeSet && mode == ModeExec:
		case pyLambda.Match(src):
			return protocol.TemplateLambda, "lambda_handler", ModeHTTP
		case pyHandleTwo.Match(src):
			return protocol.TemplateOpenFaaSHTTP, "", ModeHTTP
		case execUnset && pyHandleOne.Match(src) && !pyTopCall.Match(src) && !strings.Contains(string(src), "__main__"):
			return protocol.TemplateOpenFaaSClassic, "", ModeExec
		}
	case runtime == RuntimeNode && isJS(handler):
		switch {
		case modeSet && mode == ModeExec:
		case jsLambda.Match(src):
			return protocol.TemplateLambda, "handler", ModeHTTP
		case jsEventCtx.Match(src):
			return protocol.TemplateOpenFaaSNode, "", ModeHTTP
		case execUnset && path.Ext(handler) == ".js" && jsExportsFn.Match(src) && !jsSelfDriven.Match(src):
			return protocol.TemplateOpenFaaSClassic, "", ModeExec
		}
	}
	return protocol.TemplateFaasVM, "", ""
}

func isJS(handler string) bool {
	switch path.Ext(handler) {
	case ".js", ".mjs", ".cjs":
		return true
	}
	return false
}

// resolveTemplate settles the handler's contract after the handler and
// runtime are known: function.yaml's template, Lambda's file.function
// handler form, else detectTemplate. It may switch an unset mode to the
// one the contract needs.
func resolveTemplate(s *Spec, mfile, tmpl string, lambdaForm, modeSet bool, src []byte) error {
	switch {
	case tmpl != "":
		t := templateNames[tmpl]
		if t.runtime != "" && s.Runtime != t.runtime {
			return invalidf("%s: template %s runs %s handlers, got %s (runtime %s)", mfile, tmpl, t.runtime, s.Handler, s.Runtime)
		}
		if lambdaForm && t.contract != protocol.TemplateLambda {
			return invalidf("%s: handler %s.%s is Lambda's file.function form, but template is %s", mfile, strings.TrimSuffix(s.Handler, path.Ext(s.Handler)), s.Function, tmpl)
		}
		s.Template = t.contract
	case lambdaForm:
		if modeSet && s.Mode != ModeHTTP {
			return invalidf("%s: handler %s.%s is Lambda's file.function form, which runs in mode %s: remove mode or set it to %s", mfile,
				strings.TrimSuffix(s.Handler, path.Ext(s.Handler)), s.Function, ModeHTTP, ModeHTTP)
		}
		s.Template, s.Mode = protocol.TemplateLambda, ModeHTTP
	default:
		c, f, need := detectTemplate(s.Runtime, s.Handler, src, s.Mode, modeSet)
		if need != "" && !modeSet {
			s.Mode = need
		}
		if need == "" || need == s.Mode {
			s.Template, s.Function = c, f
		} else {
			s.Template = protocol.TemplateFaasVM
		}
	}
	if s.Template == protocol.TemplateLambda && s.Function == "" {
		s.Function = "handler"
		if s.Runtime == RuntimePython3 {
			s.Function = "lambda_handler"
		}
	}
	if s.Template == protocol.TemplateOpenFaaSClassic {
		if ext := path.Ext(s.Handler); ext != ".py" && ext != ".js" {
			return invalidf("the classic OpenFaaS template runs a .py or .js handler defining handle(req), got %s", s.Handler)
		}
	}
	return nil
}
