package cli

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/faasvm/appliance/internal/fstree"
)

const deployUsage = `Usage:
  faasvm deploy [flags] <function-folder>

Packs the folder as a .tar.gz (files, folders and symlinks, as they are; .git
is left out) and uploads it with PUT /api/functions/<name> to a running
appliance, which checks it by the same rules as a mounted folder and deploys
it. The name is the folder's unless --name is given. Then it waits until the
uploaded version serves (or fails, with the reason), printing each state.

The appliance's URL and API token come from --url/--token or FAAS_URL and
FAAS_API_TOKEN (default URL http://127.0.0.1:8080).

Flags:
`

type deployFlags struct {
	name, url, token string
	wait             time.Duration
	noWait           bool
}

func parseDeployFlags(args []string, env *Env) (*deployFlags, string, error) {
	f := &deployFlags{}
	fs := pflag.NewFlagSet("faasvm deploy", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	fs.StringVar(&f.name, "name", "", "function name (default: the folder's name)")
	fs.StringVar(&f.url, "url", "", "appliance URL (default FAAS_URL, else http://127.0.0.1:8080)")
	fs.StringVar(&f.token, "token", "", "API token (default FAAS_API_TOKEN)")
	fs.DurationVar(&f.wait, "timeout", 5*time.Minute, "how long to wait for the new version to serve")
	fs.BoolVar(&f.noWait, "no-wait", false, "return once the upload is accepted")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(env.Stdout, deployUsage+fs.FlagUsages())
			return nil, "", errHelp
		}
		return nil, "", usagef("%v", err)
	}
	if fs.NArg() != 1 {
		return nil, "", usagef("want one function folder, got %d arguments", fs.NArg())
	}
	f.url = strings.TrimRight(or(f.url, or(env.Getenv("FAAS_URL"), "http://127.0.0.1:8080")), "/")
	f.token = or(f.token, env.Getenv("FAAS_API_TOKEN"))
	dir := fs.Arg(0)
	if f.name == "" {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return nil, "", fmt.Errorf("reading %s: %w", dir, err)
		}
		f.name = filepath.Base(abs)
	}
	return f, dir, nil
}

func runDeploy(ctx context.Context, env *Env, args []string) error {
	f, dir, err := parseDeployFlags(args, env)
	if err != nil {
		return err
	}
	var archive bytes.Buffer
	files, err := packFolder(dir, &archive)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stderr, "uploading %s as %s (%d entries, %d bytes packed) to %s\n", dir, f.name, files, archive.Len(), f.url)
	var res struct {
		Name    string `json:"name"`
		Created bool   `json:"created"`
		Version string `json:"version"`
	}
	if err := f.call(ctx, http.MethodPut, "/api/functions/"+url.PathEscape(f.name), "application/gzip", &archive, &res); err != nil {
		return err
	}
	verb := "replaced"
	if res.Created {
		verb = "created"
	}
	fmt.Fprintf(env.Stdout, "%s %s, version %s\n", verb, res.Name, res.Version)
	if f.noWait {
		return nil
	}
	return f.waitServing(ctx, env, res.Name, res.Version)
}

// waitServing polls the function's status until version serves, or the
// function fails, printing each state it passes.
func (f *deployFlags) waitServing(ctx context.Context, env *Env, name, version string) error {
	ctx, cancel := context.WithTimeout(ctx, f.wait)
	defer cancel()
	last := ""
	for {
		var st struct {
			State     string `json:"state"`
			Version   string `json:"version"`
			LastError string `json:"lastError"`
		}
		err := f.call(ctx, http.MethodGet, "/api/functions/"+url.PathEscape(name), "", nil, &st)
		var se *statusError
		switch {
		case errors.As(err, &se) && se.code == http.StatusNotFound:
			st.State = "waiting for the appliance to see it"
		case err != nil:
			return err
		}
		if now := st.State + " " + st.Version; now != last {
			fmt.Fprintf(env.Stderr, "%s: %s (version %s)\n", name, st.State, or(st.Version, "-"))
			last = now
		}
		switch {
		case (st.State == "ready" || st.State == "idle") && (version == "" || st.Version == version):
			fmt.Fprintf(env.Stdout, "%s serves at %s/invoke/%s\n", name, f.url, name)
			return nil
		case st.State == "failed" || st.State == "invalid":
			return fmt.Errorf("%s is %s: %s", name, st.State, or(st.LastError, "no reason given"))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not serve version %s within %s (last state %s): see GET /api/functions/%s", name, version, f.wait, st.State, name)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

type statusError struct {
	code int
	msg  string
}

func (e *statusError) Error() string { return fmt.Sprintf("appliance answered %d: %s", e.code, e.msg) }

// call sends one API request and decodes the JSON answer into out.
func (f *deployFlags) call(ctx context.Context, method, path, contentType string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, f.url+path, body)
	if err != nil {
		return usagef("bad --url %q: %v", f.url, err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if f.token != "" {
		req.Header.Set("Authorization", "Bearer "+f.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("calling the appliance at %s (is it running? set --url or FAAS_URL): %w", f.url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("reading the appliance's answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		if resp.StatusCode == http.StatusUnauthorized {
			msg += " (set --token or FAAS_API_TOKEN)"
		}
		return &statusError{code: resp.StatusCode, msg: msg}
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("reading the appliance's answer: %w", err)
	}
	return nil
}

// packFolder writes dir as a .tar.gz to w: its contents at the archive's
// root, files, folders and symlinks as they are, without .git. It returns
// the number of entries.
func packFolder(dir string, w io.Writer) (int, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return 0, fmt.Errorf("reading the function folder: %w", err)
	}
	if !fi.IsDir() {
		return 0, fmt.Errorf("%s is not a folder", dir)
	}
	zw := gzip.NewWriter(w)
	tw := tar.NewWriter(zw)
	n, err := fstree.WriteTar(tw, dir, func(_ string, d fs.DirEntry) bool {
		return d.IsDir() && d.Name() == ".git"
	})
	if err != nil {
		return 0, fmt.Errorf("packing %s: %w", dir, err)
	}
	if err := tw.Close(); err != nil {
		return 0, fmt.Errorf("packing %s: %w", dir, err)
	}
	if err := zw.Close(); err != nil {
		return 0, fmt.Errorf("packing %s: %w", dir, err)
	}
	return n, nil
}
