// Package cli is the faasvm command-line tool: one file per subcommand and
// the static table below. cmd/faasvm only calls Run.
//
// Every subcommand reports failure as one line on stderr ("faasvm: ...")
// and a non-zero exit status: 2 for a usage mistake, 1 for anything else.
// Subcommands that talk to a running appliance (ls, status, invoke, logs)
// take its URL and API token from --url/--token or FAAS_URL/FAAS_API_TOKEN,
// and --json prints the appliance's JSON answer.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Env is what a subcommand may touch of the world.
type Env struct {
	// Stdin is what invoke -d @- reads (nil: os.Stdin).
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Getenv reads the environment (os.Getenv).
	Getenv func(string) string
}

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *Env, args []string) error
}

// commands is the table of subcommands, in the order help lists them.
func commands() []command {
	return []command{
		{name: "new", summary: "scaffold a function folder from a template", run: runNew},
		{name: "ls", summary: "list the appliance's functions", run: runLs},
		{name: "status", summary: "show one function's state, version, replicas and reason", run: runStatus},
		{name: "invoke", summary: "call a function and print its answer", run: runInvoke},
		{name: "logs", summary: "print (-f: follow) a function's own output", run: runLogs},
		{name: "export", summary: "turn function folders into OCI images and Knative or Kubernetes manifests", run: runExport},
		{name: "completion", summary: "print a bash completion script", run: runCompletion},
		{name: "deploy", summary: "upload a function folder to a running appliance and wait until it serves", run: runDeploy},
	}
}

// usageError is a mistake in the command line: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{msg: fmt.Sprintf(format, args...)} }

// Run runs the command line args (without the program name) and returns
// the exit status.
func Run(ctx context.Context, args []string, env *Env) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(env.Stdout, usage())
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, env, args[1:])
		switch {
		case err == nil:
			return 0
		case errors.Is(err, errHelp):
			return 0
		}
		fmt.Fprintf(env.Stderr, "faasvm %s: %s\n", c.name, oneLine(err.Error()))
		if ue := (*usageError)(nil); errors.As(err, &ue) {
			fmt.Fprintf(env.Stderr, "run 'faasvm %s --help' for its usage\n", c.name)
			return 2
		}
		return 1
	}
	fmt.Fprintf(env.Stderr, "faasvm: unknown command %q\n%s", args[0], usage())
	return 2
}

// errHelp ends a subcommand that printed its help.
var errHelp = errors.New("help shown")

func usage() string {
	var b strings.Builder
	b.WriteString("Usage: faasvm <command> [flags] [arguments]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(&b, "  %-11s %s\n", c.name, c.summary)
	}
	b.WriteString("\nRun 'faasvm <command> --help' for a command's flags.\n")
	return b.String()
}

// oneLine folds a multi-line error into one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
