package cli

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/spf13/pflag"

	"github.com/faasvm/appliance/internal/controller"
)

const statusUsage = `Usage:
  faasvm status [flags] <name>

Shows one function: its state (and why it cannot serve, when it cannot),
version, replicas, invocations, latency and warnings.
`

func runStatus(ctx context.Context, env *Env, args []string) error {
	var r remote
	fs := pflag.NewFlagSet("faasvm status", pflag.ContinueOnError)
	addRemoteFlags(fs, &r)
	if err := parseFlags(fs, args, statusUsage, env.Stdout); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want one function name, got %d arguments", fs.NArg())
	}
	if err := r.resolve(env); err != nil {
		return err
	}
	ctx, cancel := withTimeout(ctx, r.timeout)
	defer cancel()
	var s controller.Status
	raw, err := r.getJSON(ctx, "/api/functions/"+url.PathEscape(fs.Arg(0)), &s)
	if err != nil {
		return err
	}
	if r.jsonOut {
		_, err := env.Stdout.Write(raw)
		return err
	}
	w := env.Stdout
	fmt.Fprintf(w, "name:        %s\n", safeText(s.Name))
	fmt.Fprintf(w, "state:       %s\n", s.State)
	if s.LastError != "" {
		fmt.Fprintf(w, "reason:      %s\n", safeText(oneLine(s.LastError)))
	}
	if s.Runtime != "" {
		fmt.Fprintf(w, "runtime:     %s (%s mode, handler %s)\n", s.Runtime, s.Mode, safeText(s.Handler))
	}
	if s.Version != "" {
		fmt.Fprintf(w, "version:     %s\n", s.Version)
	}
	if s.Engine != "" {
		fmt.Fprintf(w, "engine:      %s\n", s.Engine)
	}
	fmt.Fprintf(w, "replicas:    %d ready, %d booting, %d draining, %d desired\n", s.Replicas.Ready, s.Replicas.Booting, s.Replicas.Draining, s.Replicas.Desired)
	fmt.Fprintf(w, "invocations: %d (%d errors, %d cold starts, %d rejected); %d in flight, %d queued\n",
		s.Invocations.Total, s.Invocations.Errors, s.Invocations.ColdStarts, s.Invocations.Rejected, s.InFlight, s.Queued)
	if s.Latency.Samples > 0 {
		fmt.Fprintf(w, "latency:     p50 %.1f ms, p99 %.1f ms over %d\n", s.Latency.P50Ms, s.Latency.P99Ms, s.Latency.Samples)
	}
	for _, warn := range s.Warnings {
		fmt.Fprintf(w, "warning:     %s\n", safeText(oneLine(warn)))
	}
	if s.State == controller.StateInvalid || s.State == controller.StateFailed {
		return fmt.Errorf("function %s is %s: %s", s.Name, s.State, strings.TrimSpace(oneLine(s.LastError)))
	}
	return nil
}
