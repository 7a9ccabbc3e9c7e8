package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// defaultURL is the appliance's address when neither --url nor FAAS_URL
// says otherwise (inside the container too: the gateway listens there).
const defaultURL = "http://127.0.0.1:8080"

// remote is how a subcommand reaches a running appliance.
type remote struct {
	url, token string
	jsonOut    bool
	timeout    time.Duration
	http       *http.Client
}

// addRemoteFlags declares --url, --token, --json and --timeout on fs.
func addRemoteFlags(fs *pflag.FlagSet, r *remote) {
	fs.StringVar(&r.url, "url", "", "the appliance's gateway (default FAAS_URL, else "+defaultURL+")")
	fs.StringVar(&r.token, "token", "", "API token for /api/* (default FAAS_API_TOKEN)")
	fs.BoolVar(&r.jsonOut, "json", false, "print the appliance's JSON answer")
	fs.DurationVar(&r.timeout, "timeout", 60*time.Second, "bound on the request (0: none)")
}

// resolve fills what the flags left empty from the environment and checks
// the URL.
func (r *remote) resolve(env *Env) error {
	if r.url == "" {
		r.url = env.Getenv("FAAS_URL")
	}
	if r.url == "" {
		r.url = defaultURL
	}
	if r.token == "" {
		r.token = env.Getenv("FAAS_API_TOKEN")
	}
	u, err := url.Parse(r.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usagef("--url / FAAS_URL %q is not an http(s) URL such as %s", r.url, defaultURL)
	}
	r.url = strings.TrimRight(r.url, "/")
	r.http = &http.Client{}
	return nil
}

// do sends a request to path (already escaped) and returns the response;
// the caller closes its body. A status of 400 or more becomes an error
// carrying the appliance's own message.
func (r *remote) do(ctx context.Context, method, path string, body io.Reader, header http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, r.url+path, body)
	if err != nil {
		return nil, fmt.Errorf("building the request: %w", err)
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if r.token != "" && strings.HasPrefix(path, "/api/") {
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	res, err := r.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reaching the appliance at %s (set --url or FAAS_URL): %w", r.url, err)
	}
	return res, nil
}

// apiError turns an error answer into an error with the appliance's reason.
func apiError(res *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	var e struct {
		Error string `json:"error"`
	}
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	hint := ""
	switch res.StatusCode {
	case http.StatusUnauthorized:
		hint = " (set --token or FAAS_API_TOKEN)"
	case http.StatusServiceUnavailable, http.StatusTooManyRequests:
		if ra := res.Header.Get("Retry-After"); ra != "" {
			hint = " (retry after " + ra + "s)"
		}
	}
	return fmt.Errorf("%s: %s%s", res.Status, msg, hint)
}

// getJSON GETs an /api path and decodes its JSON into v, returning the raw
// body too.
func (r *remote) getJSON(ctx context.Context, path string, v any) ([]byte, error) {
	res, err := r.do(ctx, http.MethodGet, path, nil, nil)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode >= 400 {
		return nil, apiError(res)
	}
	b, err := io.ReadAll(io.LimitReader(res.Body, 32<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return nil, fmt.Errorf("the appliance's answer is not the JSON expected: %w", err)
	}
	return b, nil
}

// withTimeout bounds ctx by d when d > 0.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d > 0 {
		return context.WithTimeout(ctx, d)
	}
	return context.WithCancel(ctx)
}

// parseFlags parses args with fs, printing usage for --help.
func parseFlags(fs *pflag.FlagSet, args []string, usage string, stdout io.Writer) error {
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	if err := fs.Parse(args); err != nil {
		if err == pflag.ErrHelp {
			fmt.Fprint(stdout, usage+"\nFlags:\n"+fs.FlagUsages())
			return errHelp
		}
		return usagef("%v", err)
	}
	return nil
}

// safeText replaces control characters (terminal escapes a function could
// print) so that output from the appliance cannot rewrite the terminal.
func safeText(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\t' || r == '\n' {
			return r
		}
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
}
