package cli

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/faasvm/appliance/internal/controller"
)

const lsUsage = `Usage:
  faasvm ls [flags]

Lists the appliance's functions: name, state, runtime and mode, ready
replicas, invocations and the version.
`

func runLs(ctx context.Context, env *Env, args []string) error {
	var r remote
	fs := pflag.NewFlagSet("faasvm ls", pflag.ContinueOnError)
	addRemoteFlags(fs, &r)
	if err := parseFlags(fs, args, lsUsage, env.Stdout); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("ls takes no arguments, got %q", fs.Args())
	}
	if err := r.resolve(env); err != nil {
		return err
	}
	ctx, cancel := withTimeout(ctx, r.timeout)
	defer cancel()
	var list struct {
		Functions []controller.Status `json:"functions"`
	}
	raw, err := r.getJSON(ctx, "/api/functions", &list)
	if err != nil {
		return err
	}
	if r.jsonOut {
		_, err := env.Stdout.Write(raw)
		return err
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tRUNTIME\tMODE\tREADY\tINVOCATIONS\tVERSION")
	for _, s := range list.Functions {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%d\t%s\n", safeText(s.Name), s.State, or(s.Runtime, "-"), or(s.Mode, "-"),
			s.Replicas.Ready, s.Replicas.Desired, s.Invocations.Total, or(s.Version, "-"))
	}
	return tw.Flush()
}
