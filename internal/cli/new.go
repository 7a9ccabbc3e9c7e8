package cli

import (
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/pflag"

	"github.com/faasvm/appliance/internal/function"
)

const newUsage = `Usage:
  faasvm new [flags] <name> --runtime python3|node|bash [--http]

Writes a working function folder <dir>/<name> (default ./<name>) from a
template: the handler and a function.yaml. Exec mode (the default) runs the
handler once per request (body on stdin, answer on stdout, stderr to
'faasvm logs'); --http keeps one process alive behind the runtime's
bootstrap (python3 and node). It never overwrites: an existing <name>
folder is an error. Copy the folder into the appliance's functions
directory to deploy it.
`

// templates are the files of each runtime and mode; {{name}} is replaced.
var templates = map[string]map[string]string{
	"python3/exec": {
		"function.yaml": "# {{name}}: exec mode, one python3 process per request (OpenFaaS classic\n# watchdog contract). Secrets named here appear in /var/openfaas/secrets/.\nruntime: python3\nmode: exec\nhandler: handler.py\ntimeout: 10s\n# secrets: [db-password]\n",
		"handler.py": `"""{{name}}: the request body is on stdin, request headers in Http_*
variables; what this prints on stdout is the answer. stderr goes to
'faasvm logs {{name}}', tagged with the request id."""
import os
import sys

body = sys.stdin.read()
print("handling request", os.environ.get("Http_X_Request_Id", ""), file=sys.stderr)
print("Hello from {{name}}! You sent: " + (body or "nothing"))
`,
	},
	"python3/http": {
		"function.yaml": "# {{name}}: http mode, one long-running python3 process; handle(req) per request.\nruntime: python3\nmode: http\nhandler: handler.py\ntimeout: 10s\n# secrets: [db-password]\n",
		"handler.py": `"""{{name}}: handle(req) is called for every request. req has method,
path, query, headers, body (bytes) and text. Return a str, a dict (JSON),
or {"statusCode": ..., "headers": {...}, "body": ...}. Anything printed goes
to 'faasvm logs {{name}}'."""


def handle(req):
    print("handling", req.get("method"), req.get("path"))
    return {"hello": "from {{name}}", "youSent": req.get("text", "")}
`,
	},
	"node/exec": {
		"function.yaml": "# {{name}}: exec mode, one node process per request.\nruntime: node\nmode: exec\nhandler: index.js\ntimeout: 10s\n# secrets: [db-password]\n",
		"index.js": `// {{name}}: the request body is on stdin, request headers in Http_*
// variables; what this prints on stdout is the answer. stderr goes to
// 'faasvm logs {{name}}', tagged with the request id.
'use strict';
let body = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => { body += chunk; });
process.stdin.on('end', () => {
  console.error('handling request', process.env.Http_X_Request_Id || '');
  process.stdout.write('Hello from {{name}}! You sent: ' + (body || 'nothing') + '\n');
});
`,
	},
	"node/http": {
		"function.yaml": "# {{name}}: http mode, one long-running node process; the exported function per request.\nruntime: node\nmode: http\nhandler: index.js\ntimeout: 10s\n# secrets: [db-password]\n",
		"index.js": `// {{name}}: called for every request with {method, path, query, headers,
// body, text}; return a string, an object (JSON) or {statusCode, headers,
// body}. console output goes to 'faasvm logs {{name}}'.
'use strict';
module.exports = async (req) => {
  console.log('handling', req.method, req.path);
  return { hello: 'from {{name}}', youSent: req.text || '' };
};
`,
	},
	"bash/exec": {
		"function.yaml": "# {{name}}: exec mode, one bash process per request.\nruntime: bash\nmode: exec\nhandler: handler.sh\ntimeout: 10s\n# secrets: [db-password]\n",
		"handler.sh": `#!/bin/bash
# {{name}}: the request body is on stdin, request headers in Http_*
# variables; what this prints on stdout is the answer. stderr goes to
# 'faasvm logs {{name}}', tagged with the request id.
body=$(cat)
echo "handling request ${Http_X_Request_Id:-}" >&2
echo "Hello from {{name}}! You sent: ${body:-nothing}"
`,
	},
}

func runNew(_ context.Context, env *Env, args []string) error {
	var (
		runtime string
		http    bool
		dir     string
	)
	fs := pflag.NewFlagSet("faasvm new", pflag.ContinueOnError)
	fs.StringVarP(&runtime, "runtime", "r", "", "python3, node or bash (required)")
	fs.BoolVar(&http, "http", false, "http mode: one long-running process (python3, node)")
	fs.StringVar(&dir, "dir", ".", "where to create the <name> folder")
	if err := parseFlags(fs, args, newUsage, env.Stdout); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want one function name, got %d arguments", fs.NArg())
	}
	name := fs.Arg(0)
	if err := function.ValidateName(name); err != nil {
		return usagef("%v", err)
	}
	mode := "exec"
	if http {
		mode = "http"
	}
	files, ok := templates[runtime+"/"+mode]
	switch {
	case runtime == "":
		return usagef("--runtime is required: python3, node or bash")
	case !ok && runtime == "bash":
		return usagef("bash functions run in exec mode only (drop --http)")
	case !ok:
		return usagef("--runtime %q: want python3, node or bash", runtime)
	}
	target := filepath.Join(dir, name)
	if err := os.Mkdir(target, 0o755); err != nil {
		if errors.Is(err, iofs.ErrExist) {
			return fmt.Errorf("%s already exists: refusing to overwrite it (choose another name or --dir)", target)
		}
		return fmt.Errorf("creating %s: %w", target, err)
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		perm := os.FileMode(0o644)
		if strings.HasSuffix(n, ".sh") {
			perm = 0o755
		}
		content := strings.ReplaceAll(files[n], "{{name}}", name)
		f, err := os.OpenFile(filepath.Join(target, n), os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
		if err != nil {
			return fmt.Errorf("writing %s: %w", filepath.Join(target, n), err)
		}
		_, werr := f.WriteString(content)
		if err := f.Close(); werr == nil {
			werr = err
		}
		if werr != nil {
			return fmt.Errorf("writing %s: %w", filepath.Join(target, n), werr)
		}
	}
	fmt.Fprintf(env.Stdout, "created %s (%s, %s mode): %s\n", target, runtime, mode, strings.Join(names, ", "))
	fmt.Fprintf(env.Stdout, "deploy it by copying the folder into the appliance's functions directory, then: faasvm invoke %s -d hello\n", name)
	return nil
}
