package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"

	"github.com/faasvm/appliance/internal/appliance"
	"github.com/faasvm/appliance/internal/config"
	"github.com/faasvm/appliance/internal/export"
	"github.com/faasvm/appliance/internal/function"
	"github.com/faasvm/appliance/internal/image"
)

const exportUsage = `Usage:
  faasvm export [flags] <function-folder>
  faasvm export --all [flags] [<functions-dir>]

Builds the function's OCI image through the Docker engine (its runtime image,
the code at /function, the guest agent as entrypoint in container mode) and
writes a Knative Service for it (--plain: a Deployment, a Service and a
HorizontalPodAutoscaler) that runs it under a Kata Containers runtime class.

The folder is read with the appliance's own rules and settings (the
appliance config: --config, FAAS_CONFIG or config/appliance.yaml, and the
FAAS_* variables), so an invalid folder fails with the reason the appliance
gives. --all exports every folder of the functions directory (default: the
config's functions_dir), skipping invalid ones with their reasons; it exits
non-zero only when a valid function fails to export.

Manifests go to stdout (documents separated by ---), or with --out to
<dir>/<name>.yaml; progress and warnings go to stderr.

Flags:
`

// exportFlags is the export command line.
type exportFlags struct {
	all          bool
	repo         string
	push         bool
	runtimeClass string
	plain        bool
	namespace    string
	out          string
	skipImage    bool
	jsonOut      bool
	quiet        bool
	configFile   string
	agent        string
	runtimes     string
}

func parseExportFlags(args []string, stdout io.Writer) (*exportFlags, []string, error) {
	f := &exportFlags{}
	fs := pflag.NewFlagSet("faasvm export", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	fs.BoolVar(&f.all, "all", false, "export every function folder of the functions directory")
	fs.StringVar(&f.repo, "repo", "", "image repository: tag the image <repo>/<name>:<version> (default "+export.DefaultRepo+", local only)")
	fs.BoolVar(&f.push, "push", false, "push the image to --repo; the manifests then name it by digest")
	fs.StringVar(&f.runtimeClass, "runtime-class", export.DefaultRuntimeClass, `pod runtimeClassName (Kata: kata-fc, kata-qemu, kata-clh, ...); "" or none omits it`)
	fs.BoolVar(&f.plain, "plain", false, "write a Deployment, Service and HorizontalPodAutoscaler instead of a Knative Service")
	fs.StringVar(&f.namespace, "namespace", "", "namespace written into the manifests (default: none, kubectl's)")
	fs.StringVarP(&f.out, "out", "o", "", "write <dir>/<name>.yaml for each function instead of printing")
	fs.BoolVar(&f.skipImage, "skip-image", false, "write the manifests only, without building an image")
	fs.BoolVar(&f.jsonOut, "json", false, "print a JSON report (with each manifest unless --out is given)")
	fs.BoolVarP(&f.quiet, "quiet", "q", false, "log warnings and errors only")
	fs.StringVar(&f.configFile, "config", "", "appliance config file (default FAAS_CONFIG, else "+config.DefaultFile+")")
	fs.StringVar(&f.agent, "agent", "", "guest agent binary (default: the config's agent_bin, FAAS_AGENT_BIN)")
	fs.StringVar(&f.runtimes, "runtimes", "", "runtime Dockerfiles (default: the config's runtimes_dir, FAAS_RUNTIMES_DIR)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(stdout, exportUsage+fs.FlagUsages())
			return nil, nil, errHelp
		}
		return nil, nil, usagef("%v", err)
	}
	if f.runtimeClass == "none" {
		f.runtimeClass = ""
	}
	rest := fs.Args()
	switch {
	case f.all && len(rest) > 1:
		return nil, nil, usagef("--all takes at most one functions directory, got %d arguments", len(rest))
	case !f.all && len(rest) != 1:
		return nil, nil, usagef("want one function folder (or --all), got %d arguments", len(rest))
	}
	return f, rest, nil
}

func runExport(ctx context.Context, env *Env, args []string) error {
	f, rest, err := parseExportFlags(args, env.Stdout)
	if err != nil {
		return err
	}
	var cfgArgs []string
	if f.configFile != "" {
		cfgArgs = []string{"--config", f.configFile}
	}
	cfg, err := config.Load(cfgArgs, env.Getenv)
	if err != nil {
		return fmt.Errorf("appliance config: %w", err)
	}
	template, err := function.LoadTemplate(cfg.VMTemplate)
	if err != nil {
		return fmt.Errorf("VM template (vm_template, FAAS_VM_TEMPLATE): %w", err)
	}
	level := slog.LevelInfo
	if f.quiet {
		level = slog.LevelWarn
	}
	log := slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: level}))
	opts := export.Options{
		Manifest:    export.ManifestOptions{Plain: f.plain, RuntimeClass: f.runtimeClass, Namespace: f.namespace},
		Repo:        f.repo,
		Push:        f.push,
		SkipImage:   f.skipImage,
		AgentBin:    or(f.agent, cfg.AgentBin),
		RuntimesDir: or(f.runtimes, cfg.RuntimesDir),
		MaxBody:     int64(cfg.MaxBody),
		Defaults:    appliance.FunctionDefaults(cfg),
		Template:    template,
	}
	if err := opts.Validate(); err != nil {
		return usagef("%v", err)
	}
	if !f.skipImage {
		if _, err := os.Stat(opts.AgentBin); err != nil {
			return fmt.Errorf("guest agent (--agent, FAAS_AGENT_BIN; make agent builds it): %w", err)
		}
	}
	var docker export.Docker
	if !f.skipImage {
		cli, err := image.DialDocker(ctx)
		if err != nil {
			return fmt.Errorf("docker engine (the image is built through it; --skip-image writes manifests only): %w", err)
		}
		defer cli.Close()
		docker = cli
	}
	ex, err := export.New(opts, docker, log)
	if err != nil {
		return err
	}
	if f.out != "" {
		if err := os.MkdirAll(f.out, 0o755); err != nil {
			return fmt.Errorf("creating --out: %w", err)
		}
	}

	var (
		results []*export.Result
		skipped []export.Skipped
		runErr  error
	)
	if f.all {
		dir := cfg.FunctionsDir
		if len(rest) == 1 {
			dir = rest[0]
		}
		results, skipped, runErr = ex.ExportAll(ctx, dir)
	} else {
		r, err := ex.Export(ctx, rest[0])
		if err != nil {
			if errors.Is(err, function.ErrInvalid) {
				return errors.New(export.InvalidReason(err))
			}
			return err
		}
		results = []*export.Result{r}
	}
	if err := report(env, f, results, skipped); err != nil {
		return err
	}
	return runErr
}

// report writes the manifests and tells what was done.
func report(env *Env, f *exportFlags, results []*export.Result, skipped []export.Skipped) error {
	type jsonResult struct {
		*export.Result
		File     string `json:"file,omitempty"`
		Manifest string `json:"manifest,omitempty"`
	}
	var (
		docs []byte
		rep  = struct {
			Exported []jsonResult     `json:"exported"`
			Skipped  []export.Skipped `json:"skipped"`
		}{Exported: []jsonResult{}, Skipped: skipped}
	)
	if rep.Skipped == nil {
		rep.Skipped = []export.Skipped{}
	}
	for _, r := range results {
		jr := jsonResult{Result: r}
		if f.out != "" {
			jr.File = filepath.Join(f.out, r.Name+".yaml")
			if err := os.WriteFile(jr.File, r.Manifest, 0o644); err != nil {
				return fmt.Errorf("writing %s: %w", jr.File, err)
			}
		} else {
			jr.Manifest = string(r.Manifest)
			if len(docs) > 0 {
				docs = append(docs, "---\n"...)
			}
			docs = append(docs, r.Manifest...)
		}
		rep.Exported = append(rep.Exported, jr)
		for _, w := range r.Warnings {
			fmt.Fprintf(env.Stderr, "warning: %s: %s\n", r.Name, w)
		}
		where := "printed"
		if jr.File != "" {
			where = "written to " + jr.File
		}
		fmt.Fprintf(env.Stderr, "exported %s version %s: image %s, manifest %s\n", r.Name, r.Version, r.Image, where)
	}
	for _, s := range skipped {
		fmt.Fprintf(env.Stderr, "skipped %s: %s\n", s.Name, oneLine(s.Reason))
	}
	if f.jsonOut {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
		_, err := env.Stdout.Write(buf.Bytes())
		return err
	}
	if len(docs) > 0 {
		if _, err := env.Stdout.Write(docs); err != nil {
			return err
		}
	}
	return nil
}

func or(a, b string) string {
	if strings.TrimSpace(a) != "" {
		return a
	}
	return b
}
