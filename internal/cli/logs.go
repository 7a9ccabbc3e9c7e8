package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/spf13/pflag"

	"github.com/faasvm/appliance/internal/logs"
)

const logsUsage = `Usage:
  faasvm logs [flags] <name>

Prints the function's own output (its handler's stdout and stderr; exec
mode: stderr), one line each: time, instance, stream, [request id], text.
With -f it keeps printing new lines until interrupted. --console prints the
VM console instead (kernel, agent and handler output together).
`

func runLogs(ctx context.Context, env *Env, args []string) error {
	var (
		r        remote
		follow   bool
		lines    int
		since    string
		instance string
		console  bool
	)
	fs := pflag.NewFlagSet("faasvm logs", pflag.ContinueOnError)
	fs.BoolVarP(&follow, "follow", "f", false, "keep printing new lines")
	fs.IntVarP(&lines, "lines", "n", 200, "how many of the last lines to print first (1-5000)")
	fs.StringVar(&since, "since", "", "only lines from then on: an RFC 3339 time or a duration back (10m)")
	fs.StringVar(&instance, "instance", "", "only this VM's lines")
	fs.BoolVar(&console, "console", false, "print the VM console instead")
	addRemoteFlags(fs, &r)
	if err := parseFlags(fs, args, logsUsage, env.Stdout); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want one function name, got %d arguments", fs.NArg())
	}
	if err := r.resolve(env); err != nil {
		return err
	}
	if follow {
		r.timeout = 0 // until interrupted
	}
	ctx, cancel := withTimeout(ctx, r.timeout)
	defer cancel()
	q := url.Values{}
	q.Set("lines", strconv.Itoa(lines))
	base := "/api/functions/" + url.PathEscape(fs.Arg(0))
	if console {
		if follow {
			return usagef("--console cannot follow")
		}
		res, err := r.do(ctx, http.MethodGet, base+"/console?"+q.Encode(), nil, nil)
		if err != nil {
			return err
		}
		defer res.Body.Close()
		if res.StatusCode >= 400 {
			return apiError(res)
		}
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			fmt.Fprintln(env.Stdout, safeText(sc.Text()))
		}
		return sc.Err()
	}
	q.Set("format", "json")
	if since != "" {
		q.Set("since", since)
	}
	if instance != "" {
		q.Set("instance", instance)
	}
	if follow {
		q.Set("follow", "1")
	}
	res, err := r.do(ctx, http.MethodGet, base+"/logs?"+q.Encode(), nil, nil)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode >= 400 {
		return apiError(res)
	}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if r.jsonOut {
			fmt.Fprintln(env.Stdout, sc.Text())
			continue
		}
		var e logs.Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return fmt.Errorf("the appliance sent a log line that is not JSON: %w", err)
		}
		id := ""
		if e.RequestID != "" {
			id = " [" + e.RequestID + "]"
		}
		fmt.Fprintf(env.Stdout, "%s %s %s%s %s\n", e.Time.UTC().Format(time.RFC3339Nano), safeText(e.Instance), e.Stream, safeText(id), safeText(e.Line))
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("reading the logs: %w", err)
	}
	return nil
}
