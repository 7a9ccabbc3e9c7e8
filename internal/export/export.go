// Package export turns a function folder into what a Kubernetes cluster
// runs: an OCI image and a Knative Service (or a Deployment, Service and
// HorizontalPodAutoscaler), from the same validated function.Spec the
// appliance deploys.
//
// The image is built through the Docker Engine API from the function's
// runtime image (or the image its function.yaml names), with the code at
// /function and the guest agent as entrypoint in container mode: the same
// exec and http modes and request/response contract as in a VM, data on
// port 8080, health and metrics on 8081, which the data path cannot reach.
// It is tagged <repo>/<name>:<version> and pushed only when asked.
//
// The manifests run the pod under a Kata Containers runtime class (one VM
// per pod; kata-fc by default) and carry the function's mode, scale
// settings, timeout, memory and CPUs, env and secrets (by name).
package export

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"

	api "github.com/weaveworks/ignite/pkg/apis/ignite"

	"github.com/faasvm/appliance/internal/function"
	"github.com/faasvm/appliance/internal/image"
	"github.com/faasvm/appliance/internal/watch"
)

// DefaultRepo is the repository an image is tagged in when no --repo is
// given: local to the engine, not pushable.
const DefaultRepo = "faasvm-local"

// Options are what every export of one run shares.
type Options struct {
	// Manifest shapes the manifests.
	Manifest ManifestOptions
	// Repo is the image repository (registry host and path), e.g.
	// registry.example.com/team; "" means DefaultRepo.
	Repo string
	// Push pushes the image to Repo after the build; needs Repo.
	Push bool
	// SkipImage writes the manifests without building an image.
	SkipImage bool
	// AgentBin is the static guest agent (the image's entrypoint).
	AgentBin string
	// RuntimesDir holds the runtime Dockerfiles, one folder per runtime.
	RuntimesDir string
	// MaxBody bounds request bodies in the container (the appliance's
	// max_body); 0: the agent's own limit only.
	MaxBody int64
	// Defaults and Template are the appliance's, so the spec is the one
	// the appliance would deploy.
	Defaults function.Defaults
	Template *api.VM
	// WorkDir holds temporary build contexts; "" means the system's.
	WorkDir string
}

// repoPattern is what a repository may look like: a registry host (with a
// port) and lowercase path components.
var repoPattern = regexp.MustCompile(`^[a-z0-9]+([._-][a-z0-9]+)*(\.[a-z0-9-]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*$`)

// Validate reports the first problem with o.
func (o *Options) Validate() error {
	if err := o.Manifest.Validate(); err != nil {
		return err
	}
	if o.Repo != "" && !repoPattern.MatchString(o.Repo) {
		return fmt.Errorf("repository %q: want a registry host and path such as registry.example.com/team or 127.0.0.1:5000/fn (lowercase, no tag)", o.Repo)
	}
	if o.Push && o.Repo == "" {
		return errors.New("pushing needs a repository (--repo): where would the image go?")
	}
	if o.Push && o.SkipImage {
		return errors.New("pushing needs an image: drop --skip-image")
	}
	if !o.SkipImage && o.AgentBin == "" {
		return errors.New("no guest agent binary (FAAS_AGENT_BIN / agent_bin)")
	}
	return nil
}

// Result is one exported function.
type Result struct {
	Name    string `json:"name"`
	Dir     string `json:"dir"`
	Version string `json:"version"`
	Digest  string `json:"digest"`
	Mode    string `json:"mode"`
	Runtime string `json:"runtime"`
	// Tag is <repo>/<name>:<version>.
	Tag string `json:"tag"`
	// ImageID is the engine's ID of the built image ("" with SkipImage).
	ImageID string `json:"imageID,omitempty"`
	// Pushed is <repo>/<name>@sha256:... once pushed.
	Pushed string `json:"pushed,omitempty"`
	// Image is what the manifests run: Pushed when known, else Tag.
	Image string `json:"image"`
	// Manifest is the YAML written for the function.
	Manifest []byte `json:"-"`
	// Warnings: the spec's own, and settings that did not carry over
	// exactly.
	Warnings []string `json:"warnings,omitempty"`
}

// Exporter exports functions with one set of options.
type Exporter struct {
	docker Docker // nil with SkipImage
	opts   Options
	log    *slog.Logger
}

// New returns an exporter; docker may be nil when opts.SkipImage is set.
func New(opts Options, docker Docker, log *slog.Logger) (*Exporter, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if docker == nil && !opts.SkipImage {
		return nil, errors.New("building the image needs a Docker engine")
	}
	if opts.Repo == "" {
		opts.Repo = DefaultRepo
	}
	if log == nil {
		log = slog.Default()
	}
	return &Exporter{docker: docker, opts: opts, log: log}, nil
}

// Export exports the function folder dir. Errors from an invalid folder
// match function.ErrInvalid and carry the appliance's reason.
func (e *Exporter) Export(ctx context.Context, dir string) (*Result, error) {
	work, err := os.MkdirTemp(e.opts.WorkDir, "faasvm-export-")
	if err != nil {
		return nil, fmt.Errorf("creating a work directory: %w", err)
	}
	defer os.RemoveAll(work)
	src, err := loadSource(ctx, dir, work, e.opts.Defaults, e.opts.Template)
	if err != nil {
		return nil, err
	}
	s := src.spec
	log := e.log.With("function", s.Name, "version", s.Version())
	r := &Result{
		Name: s.Name, Dir: dir, Version: s.Version(), Digest: s.Digest, Mode: s.Mode, Runtime: s.Runtime,
		Tag: e.opts.Repo + "/" + s.Name + ":" + s.Version(), Warnings: append([]string(nil), s.Warnings...),
	}
	r.Image = r.Tag
	// The manifest first: a name the cluster refuses fails before a build.
	if _, _, err := Manifest(s, r.Image, e.opts.Manifest); err != nil {
		return nil, err
	}
	if !e.opts.SkipImage {
		if err := e.buildImage(ctx, log, src, r); err != nil {
			return nil, fmt.Errorf("function %s: %w", s.Name, err)
		}
	}
	manifest, warnings, err := Manifest(s, r.Image, e.opts.Manifest)
	if err != nil {
		return nil, err
	}
	r.Manifest, r.Warnings = manifest, append(r.Warnings, warnings...)
	return r, nil
}

func (e *Exporter) buildImage(ctx context.Context, log *slog.Logger, src *source, r *Result) error {
	base, err := baseImage(ctx, e.docker, log, src.spec, e.opts.RuntimesDir)
	if err != nil {
		return err
	}
	config, err := json.MarshalIndent(agentConfig(src.spec), "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the agent config: %w", err)
	}
	pr, pw := io.Pipe()
	defer pr.Close() // stops the packing goroutine if the engine stops reading
	go func() {
		pw.CloseWithError(writeContext(pw, []byte(dockerfile(base, e.opts.MaxBody)), append(config, '\n'), e.opts.AgentBin, src.code))
	}()
	log.Info("building image", "image", r.Tag, "base", base)
	id, err := image.BuildImage(ctx, e.docker, log, r.Tag, pr, imageLabels(src.spec))
	if err != nil {
		return err
	}
	r.ImageID = id
	if !e.opts.Push {
		return nil
	}
	digest, err := push(ctx, e.docker, log, r.Tag)
	if err != nil {
		return err
	}
	r.Pushed = e.opts.Repo + "/" + src.spec.Name + "@" + digest
	r.Image = r.Pushed
	return nil
}

// Skipped is a folder ExportAll did not export, and why.
type Skipped struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
	// Invalid says the appliance would report the folder invalid (the
	// reason is the appliance's); otherwise the export itself failed.
	Invalid bool `json:"invalid"`
}

// ExportAll exports every function folder of functionsDir (the folders the
// appliance would deploy), in name order. Invalid folders are skipped with
// the reason the appliance gives them, as are folders the cluster cannot
// take; other failures (a build that fails) are skipped too and counted in
// the error.
func (e *Exporter) ExportAll(ctx context.Context, functionsDir string) ([]*Result, []Skipped, error) {
	names, err := watch.Scan(functionsDir)
	if err != nil {
		return nil, nil, err
	}
	sort.Strings(names)
	var (
		results []*Result
		skipped []Skipped
		failed  int
	)
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return results, skipped, err
		}
		r, err := e.Export(ctx, filepath.Join(functionsDir, name))
		switch {
		case err == nil:
			results = append(results, r)
		case errors.Is(err, function.ErrInvalid):
			skipped = append(skipped, Skipped{Name: name, Reason: InvalidReason(err), Invalid: true})
		case errors.Is(err, ErrUnexportable):
			skipped = append(skipped, Skipped{Name: name, Reason: err.Error()})
		default:
			failed++
			skipped = append(skipped, Skipped{Name: name, Reason: err.Error()})
		}
	}
	if failed > 0 {
		return results, skipped, fmt.Errorf("%d function(s) failed to export", failed)
	}
	return results, skipped, nil
}

// InvalidReason is how the appliance states an invalid folder's error (its
// status's lastError).
func InvalidReason(err error) string {
	return "invalid function: " + err.Error()
}
