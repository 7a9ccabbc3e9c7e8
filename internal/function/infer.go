package function

import (
	"path"
	"regexp"
	"sort"
	"strings"

	"github.com/faasvm/appliance/guest/protocol"
)

// Runtimes a function can name.
const (
	RuntimePython3 = "python3"
	RuntimeNode    = "node"
	RuntimeBash    = "bash"
)

// Modes a function can run in.
const (
	ModeExec = protocol.ModeExec // a process per request (OpenFaaS classic watchdog)
	ModeHTTP = protocol.ModeHTTP // a long-running handler behind a per-language bootstrap
)

// handlerCandidates are the file names tried, in order, when nothing names
// the handler. localfunction.sh is the seed demo's.
var handlerCandidates = [...]string{
	"handler.py", "main.py", "lambda_function.py",
	"index.js", "handler.js", "main.js", "index.mjs",
	"handler.sh", "main.sh", "localfunction.sh",
}

// runtimeOfExt maps a handler's extension to the runtime that runs it.
var runtimeOfExt = map[string]string{".py": RuntimePython3, ".js": RuntimeNode, ".mjs": RuntimeNode, ".cjs": RuntimeNode, ".sh": RuntimeBash}

var (
	mentionsPython3 = regexp.MustCompile(`\bpython3\b`)
	mentionsNode    = regexp.MustCompile(`(^|[\s;&|(/])node(js)?(\s|$)`)
)

// compatible reports whether a handler with extension ext can run in the
// runtime (empty: not decided yet) and mode. Exec mode runs .sh handlers
// with bash in any runtime (every runtime image has bash); http mode needs
// the runtime's own language.
func compatible(ext, runtime, mode string) bool {
	switch {
	case mode == ModeHTTP && runtime == "":
		return ext == ".py" || ext == ".js" || ext == ".mjs" || ext == ".cjs"
	case mode == ModeHTTP:
		return runtimeOfExt[ext] == runtime && runtime != RuntimeBash
	case runtime == "":
		return runtimeOfExt[ext] != ""
	default:
		return ext == ".sh" || runtimeOfExt[ext] == runtime
	}
}

// inferHandler picks the handler when function.yaml names none: the first
// handlerCandidates entry present in the folder's top level, else the only
// top-level *.py, *.js or *.sh file (hidden files excluded). Only files the runtime (when already
// known) and the mode can run are considered.
func inferHandler(t *tree, runtime, mode string) (string, error) {
	for _, c := range handlerCandidates {
		if t.files[c] && compatible(path.Ext(c), runtime, mode) {
			return c, nil
		}
	}
	var found []string
	for name := range t.files {
		if strings.HasPrefix(name, ".") {
			continue // editors' and tools' files
		}
		ext := path.Ext(name)
		if runtimeOfExt[ext] != "" && compatible(ext, runtime, mode) {
			found = append(found, name)
		}
	}
	sort.Strings(found)
	what := "*.py, *.js or *.sh"
	switch {
	case mode == ModeHTTP && runtime == RuntimePython3:
		what = "*.py"
	case mode == ModeHTTP && runtime == RuntimeNode:
		what = "*.js"
	case mode == ModeHTTP:
		what = "*.py or *.js"
	case runtime == RuntimeBash:
		what = "*.sh"
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return "", invalidf("no handler found: add a %s file (tried %s), or set handler in %s",
			what, strings.Join(handlerCandidates[:], ", "), ManifestFile)
	default:
		return "", invalidf("cannot tell which file is the handler among %s: set handler in %s, or name it one of %s",
			strings.Join(found, ", "), ManifestFile, strings.Join(handlerCandidates[:], ", "))
	}
}

// inferRuntime picks the runtime from the handler's extension. A shell
// handler that mentions python3 in a folder holding .py files runs in the
// python3 runtime (its image has bash and python3); one that runs node in
// a folder holding .js files runs in the node runtime. Otherwise .sh means
// bash.
// script is the handler's content (nil when too large to look at).
func inferRuntime(t *tree, handler string, script []byte) (string, error) {
	ext := path.Ext(handler)
	rt := runtimeOfExt[ext]
	if rt == "" {
		return "", invalidf("cannot tell the runtime of handler %s from its extension: set runtime (%s, %s or %s) in %s",
			handler, RuntimePython3, RuntimeNode, RuntimeBash, ManifestFile)
	}
	if ext != ".sh" {
		return rt, nil
	}
	switch {
	case t.exts[".py"] && mentionsPython3.Match(script):
		return RuntimePython3, nil
	case t.exts[".js"] && mentionsNode.Match(script):
		return RuntimeNode, nil
	}
	return RuntimeBash, nil
}

// command is the argv that runs an exec-mode handler, relative to the
// code directory.
func command(runtime, handler string) []string {
	if path.Ext(handler) == ".sh" {
		return []string{"bash", handler}
	}
	switch runtime {
	case RuntimePython3:
		return []string{"python3", handler}
	case RuntimeNode:
		return []string{"node", handler}
	default:
		return []string{"bash", handler}
	}
}
