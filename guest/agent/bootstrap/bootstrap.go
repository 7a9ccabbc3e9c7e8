// Package bootstrap holds the per-language programs that serve an http-mode
// handler: each imports the user's handler once and calls it for every
// request it receives on 127.0.0.1:$FAAS_BOOTSTRAP_PORT. The sources are
// embedded in the agent and written to disk when it starts.
//
// The bootstraps read these environment variables:
//
//	FAAS_BOOTSTRAP_PORT  the port to listen on (127.0.0.1 only)
//	FAAS_HANDLER         the handler file, relative to FAAS_CODE_DIR
//	FAAS_CODE_DIR        the function's code directory
//	FAAS_TEMPLATE        the handler contract (protocol.Template*)
//	FAAS_FUNCTION        the function the handler file exports ("": the default)
//	FAAS_FUNCTION_NAME   the function's name (Lambda context)
//	FAAS_MEMORY_MB       the VM's memory (Lambda context)
//	FAAS_TIMEOUT_MS      the invocation timeout (Lambda context)
//
// classic.py and classic.cjs run OpenFaaS's classic stdin/stdout
// templates in exec mode, one process per request.
//
// They load the handler before they listen, so a port that accepts
// connections means a handler that imported.
package bootstrap

import (
	"embed"
	"fmt"
)

//go:embed bootstrap.py bootstrap.cjs classic.py classic.cjs
var sources embed.FS

// Classic runner files, written next to the bootstraps.
const (
	ClassicPython = "classic.py"
	ClassicNode   = "classic.cjs"
)

// ClassicSource returns the text of a classic runner (ClassicPython or
// ClassicNode).
func ClassicSource(file string) ([]byte, error) {
	if file != ClassicPython && file != ClassicNode {
		return nil, fmt.Errorf("no classic runner %q", file)
	}
	src, err := sources.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading embedded %s: %w", file, err)
	}
	return src, nil
}

// Bootstrap is one language's bootstrap program.
type Bootstrap struct {
	// Runtime is the runtime name in protocol.Config.Runtime.
	Runtime string
	// Interpreter is the program that runs the bootstrap, found through PATH.
	Interpreter string
	// Flags go to the interpreter before the bootstrap's path.
	Flags []string
	// File is the bootstrap's file name.
	File string
	// Env is added to the bootstrap's environment.
	Env []string
	// RestartOnRestore says a VM restored from a snapshot must run a fresh
	// bootstrap rather than the snapshot's: the language keeps random state
	// it cannot reseed (Node: V8's Math.random and OpenSSL's DRBG behind
	// node:crypto, seeded once at start-up), which every clone would
	// otherwise share.
	RestartOnRestore bool
}

// Runtimes lists the runtimes that have a bootstrap.
func Runtimes() []string { return []string{"python3", "node"} }

// For returns the bootstrap of runtime.
func For(runtime string) (Bootstrap, error) {
	switch runtime {
	case "python3":
		return Bootstrap{
			Runtime:     runtime,
			Interpreter: "python3",
			Flags:       []string{"-u"},
			File:        "bootstrap.py",
			// The code directory is read-only: no .pyc files next to it.
			Env: []string{"PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1"},
		}, nil
	case "node":
		return Bootstrap{
			Runtime:     runtime,
			Interpreter: "node",
			File:        "bootstrap.cjs",
			// Measured: two clones of a warmed Node bootstrap drew the same
			// crypto.randomBytes.
			RestartOnRestore: true,
		}, nil
	}
	return Bootstrap{}, fmt.Errorf("runtime %q has no http-mode bootstrap (have %v)", runtime, Runtimes())
}

// Source returns the bootstrap's program text.
func (b Bootstrap) Source() ([]byte, error) {
	src, err := sources.ReadFile(b.File)
	if err != nil {
		return nil, fmt.Errorf("reading embedded %s bootstrap: %w", b.Runtime, err)
	}
	return src, nil
}
