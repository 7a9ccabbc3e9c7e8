package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

const invokeUsage = `Usage:
  faasvm invoke [flags] <name>[/<path>]

Calls the function (POST /invoke/<name>[/<path>] with a body, GET without)
and prints its answer on stdout. The request id goes to stderr. Exits 1
when the answer is an error (4xx or 5xx), after printing it.

  faasvm invoke echo -d 'hello'
  faasvm invoke echo -d @payload.json -H Content-Type:application/json
  echo hi | faasvm invoke echo -d @-
`

// maxInvokeBody bounds a body read from a file or stdin.
const maxInvokeBody = 64 << 20

func runInvoke(ctx context.Context, env *Env, args []string) error {
	var (
		r       remote
		data    string
		headers []string
		method  string
		stdin   io.Reader = os.Stdin
	)
	if env.Stdin != nil {
		stdin = env.Stdin
	}
	fs := pflag.NewFlagSet("faasvm invoke", pflag.ContinueOnError)
	fs.StringVarP(&data, "data", "d", "", "request body: text, @file, or @- for stdin")
	fs.StringArrayVarP(&headers, "header", "H", nil, "request header as Name:value (repeatable)")
	fs.StringVarP(&method, "method", "X", "", "HTTP method (default POST with a body, GET without)")
	addRemoteFlags(fs, &r)
	if err := parseFlags(fs, args, invokeUsage, env.Stdout); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want one function name, got %d arguments", fs.NArg())
	}
	name, sub, _ := strings.Cut(fs.Arg(0), "/")
	if name == "" {
		return usagef("want a function name, got %q", fs.Arg(0))
	}
	h := http.Header{}
	for _, kv := range headers {
		k, v, ok := strings.Cut(kv, ":")
		k = strings.TrimSpace(k)
		if !ok || k == "" || strings.ContainsAny(k, " \t\r\n") || strings.ContainsAny(v, "\r\n") {
			return usagef("header %q: want Name:value", kv)
		}
		h.Add(k, strings.TrimSpace(v))
	}
	var body []byte
	hasBody := fs.Changed("data")
	if hasBody {
		var err error
		if body, err = readData(data, stdin); err != nil {
			return err
		}
	}
	if method == "" {
		method = http.MethodGet
		if hasBody {
			method = http.MethodPost
		}
	}
	if err := r.resolve(env); err != nil {
		return err
	}
	ctx, cancel := withTimeout(ctx, r.timeout)
	defer cancel()
	path := "/invoke/" + url.PathEscape(name)
	if sub != "" {
		path += "/" + sub
	}
	var rd io.Reader
	if hasBody {
		rd = bytes.NewReader(body)
	}
	res, err := r.do(ctx, strings.ToUpper(method), path, rd, h)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if id := res.Header.Get("X-Request-Id"); id != "" {
		fmt.Fprintf(env.Stderr, "request id: %s\n", safeText(id))
	}
	if res.StatusCode >= 400 {
		return apiError(res)
	}
	if _, err := io.Copy(env.Stdout, res.Body); err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	return nil
}

// readData is -d's body: text as it is, @file read whole, @- stdin.
func readData(data string, stdin io.Reader) ([]byte, error) {
	file, ok := strings.CutPrefix(data, "@")
	if !ok {
		return []byte(data), nil
	}
	var rd io.Reader
	if file == "-" {
		rd = stdin
	} else {
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("reading -d @%s: %w", file, err)
		}
		defer f.Close()
		rd = f
	}
	b, err := io.ReadAll(io.LimitReader(rd, maxInvokeBody+1))
	if err != nil {
		return nil, fmt.Errorf("reading -d %s: %w", data, err)
	}
	if len(b) > maxInvokeBody {
		return nil, fmt.Errorf("-d %s: larger than %d MiB", data, maxInvokeBody>>20)
	}
	return b, nil
}
