// Package function reads one function folder into a validated Spec. It
// never writes into the folder.
//
// # Folder
//
// The folder's name is the function's name (see ValidateName); hidden
// folders are not functions (see IsCandidate). An optional function.yaml
// (or function.yml, not both) holds settings; everything else is inferred.
//
// # Inference rules
//
// Handler, when function.yaml names none:
//  1. the first of handler.py, main.py, index.js, handler.js, main.js,
//     handler.sh, main.sh, localfunction.sh present in the folder's top level;
//  2. else the only top-level *.py, *.js or *.sh file (several: an error
//     asking to name one; none: an error listing what was tried).
//
// Both steps skip files the runtime (if function.yaml sets one) or the mode
// cannot run: in exec mode python3 runs .py and .sh, node .js and .sh, bash
// .sh; in http mode python3 runs .py and node .js.
//
// Runtime, when function.yaml names none, from the handler's extension:
// .py → python3, .js → node, .sh → bash, except that a .sh handler runs in
// python3 when it mentions python3 (the word) and the folder holds .py
// files, and in node when it runs node (or nodejs) as a command and the
// folder holds .js files (checked in that order). The python3 and node
// images have bash too. Other extensions need an explicit runtime.
//
// Mode is exec unless function.yaml says http. Exec mode's command: a .sh
// handler runs as [bash handler]; otherwise python3 → [python3 handler],
// node → [node handler], bash → [bash handler]. Http mode needs python3 (a
// .py file defining handle(req)) or node (a .js file exporting a function).
//
// The seed demo's folder (hello-world.py, localfunction.sh running
// "python3 hello-world.py", server.py, func-handler.yml) therefore runs
// [bash localfunction.sh] in the python3 runtime; server.py is never run,
// the guest agent serves HTTP instead.
//
// # VM config
//
// A top-level func-handler.yml, vm.yaml or vm.yml, or any other top-level
// *.yml / *.yaml whose kind is VM and apiVersion ignite.weave.works/...,
// is an Ignite VM config, decoded with Ignite's own scheme (v1alpha2,
// v1alpha3 and v1alpha4). The function's VM is the template, then the
// appliance's default memory and CPUs (when set), then every field the
// folder's VM config sets, then function.yaml's memory and cpus. Fields the
// engine ignores are kept in the VM and reported in Spec.Warnings. The VM
// config's metadata.name is informational: the VM is named after the
// function.
package function

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/containers/image/docker/reference"
	api "github.com/weaveworks/ignite/pkg/apis/ignite"
	meta "github.com/weaveworks/ignite/pkg/apis/meta/v1alpha1"

	"github.com/faasvm/appliance/guest/protocol"
)

// Defaults are the appliance's settings for what function.yaml leaves out.
type Defaults struct {
	// Timeout bounds one invocation. Must be positive.
	Timeout time.Duration
	// Memory and CPUs, when set ("" / 0: keep the template's), override the
	// VM template; a folder's VM config and function.yaml override them.
	Memory string
	CPUs   int
	// Egress applies unless function.yaml sets egress.
	Egress bool
	// Scale settings, validated like function.yaml's.
	MinReplicas       int
	MaxReplicas       int
	Concurrency       int
	IdleTimeout       time.Duration
	TargetUtilization float64
	// MaxSize bounds the bytes of file content in a folder (<= 0: no limit).
	MaxSize int64
	// SnapshotDir is where Load makes each version's private copy of the
	// folder ("": the system's temporary directory). It should be on a
	// disk only the appliance writes.
	SnapshotDir string
	// Policy is what the operator lets a folder ask for.
	Policy Policy
}

// Scale is how many instances of a function may run and when to add some.
// The controller uses it; this package only parses and validates it.
type Scale struct {
	MinReplicas       int           // instances kept running even when idle (0: scale to zero)
	MaxReplicas       int           // at most this many instances
	Concurrency       int           // requests one instance serves at a time
	IdleTimeout       time.Duration // an idle instance above MinReplicas stops after this
	TargetUtilization float64       // scale up when busy slots / all slots exceed it (0 < t <= 1)
	// ConcurrencySet says function.yaml set Concurrency (else it is the
	// appliance's default); an export keeps exec mode at one request per
	// container unless it was set.
	ConcurrencySet bool
}

// Spec is one validated function folder.
type Spec struct {
	Name string // the folder's name
	Dir  string // the folder, as passed to Load (for messages: never read again)
	// Snapshot is the version's private, read-only copy of the folder,
	// taken once at the start of Load: the manifest, the handler, the
	// digest and the code disk all come from it. The caller removes it
	// with RemoveSnapshot once nothing reads it any more.
	Snapshot string
	Runtime  string // RuntimePython3, RuntimeNode or RuntimeBash
	// Image replaces the runtime's image as the root filesystem when set.
	Image   string
	Handler string // slash-separated path relative to Dir
	// Template is the handler's contract (protocol.Template*): from
	// function.yaml's template, Lambda's file.function handler form or the
	// handler's source (see detectTemplate).
	Template string
	// Function is what the handler file defines or exports that is called
	// ("": the contract's default).
	Function string
	Mode     string   // ModeExec or ModeHTTP
	Command  []string // exec mode's argv (cwd: the code directory); nil in http mode
	Timeout  time.Duration
	Env      map[string]string
	// Secrets are the names of the secrets the function reads, in
	// function.yaml's order (never their values).
	Secrets []string
	Egress  bool // whether the guest may open outside connections
	// VM is the merged Ignite VM object: Name is the function's, Spec.CPUs
	// and Spec.Memory are resolved, UID is empty (each instance gets its
	// own; DeepCopy it first). Spec.Image.OCI is the template's or VM
	// config's: the caller sets the image it really boots.
	VM     *api.VM
	Scale  Scale
	Digest string // hex sha256 of the folder's content, see Version
	Size   int64  // bytes of file content in the folder
	// Warnings are things the user should know that do not stop the
	// function, such as VM config fields the engine ignores.
	Warnings []string
}

// RemoveSnapshot deletes the snapshot; it is safe to call twice.
func (s *Spec) RemoveSnapshot() error {
	if s.Snapshot == "" {
		return nil
	}
	err := os.RemoveAll(s.Snapshot)
	if err == nil {
		s.Snapshot = ""
	}
	return err
}

// Version is the short form of Digest shown to users (12 hex digits).
func (s *Spec) Version() string {
	if len(s.Digest) < 12 {
		return s.Digest
	}
	return s.Digest[:12]
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Load reads and validates the function folder dir. template is the
// appliance's VM template (nil: Ignite's defaults); engine (EngineQEMU or
// EngineIgnite) decides which VM config fields are reported as ignored.
//
// Load first copies the folder into a private snapshot (see Spec.Snapshot
// and snapshotTree) and reads only the copy from then on, so a folder that
// changes, or is swapped for a symlink, while a version is made cannot
// give that version content from elsewhere. On success the caller owns the
// snapshot (Spec.RemoveSnapshot); on failure there is none.
//
// Errors name the function. Those that say the folder is invalid match
// ErrInvalid (those outside the operator's policy too); a folder that does
// not exist gives an error matching fs.ErrNotExist.
func Load(dir string, d Defaults, template *api.VM, engine string) (*Spec, error) {
	name := filepath.Base(filepath.Clean(dir))
	if err := ValidateName(name); err != nil {
		return nil, fmt.Errorf("function %q: %w", name, err)
	}
	if _, ok := ignoredFields[engine]; !ok {
		return nil, fmt.Errorf("function %s: unknown engine %q (want %s or %s)", name, engine, EngineQEMU, EngineIgnite)
	}
	if err := d.validate(); err != nil {
		return nil, fmt.Errorf("function %s: %w", name, err)
	}
	snap, err := os.MkdirTemp(d.SnapshotDir, "snapshot-"+name+"-")
	if err != nil {
		return nil, fmt.Errorf("function %s: making its snapshot: %w", name, err)
	}
	s, err := load(context.Background(), dir, snap, name, d, template, engine)
	if err != nil {
		os.RemoveAll(snap)
		return nil, fmt.Errorf("function %s: %w", name, err)
	}
	return s, nil
}

func load(ctx context.Context, src, snap, name string, d Defaults, template *api.VM, engine string) (*Spec, error) {
	t, err := snapshotTree(ctx, src, snap, d.MaxSize)
	if err != nil {
		return nil, err
	}
	dir := t.dir // the snapshot: from here on, nothing reads src
	mfile, m, err := readManifest(t)
	if err != nil {
		return nil, err
	}
	s := &Spec{Name: name, Dir: src, Snapshot: snap, Digest: t.digest, Size: t.size}

	modeSet := m.Mode != ""
	if err := checkTemplate(mfile, m.Template, m.Runtime, m.Mode); err != nil {
		return nil, err
	}
	mode, runtime := m.Mode, m.Runtime
	if t, ok := templateNames[m.Template]; ok {
		mode, runtime = cmp.Or(mode, t.mode), cmp.Or(runtime, t.runtime)
	}
	if s.Mode, err = resolveMode(mfile, mode); err != nil {
		return nil, err
	}
	if err := checkRuntime(mfile, runtime); err != nil {
		return nil, err
	}
	if s.Mode == ModeHTTP && runtime != "" {
		if err := checkCombination(runtime, "", s.Mode); err != nil {
			return nil, err
		}
	}
	lambdaForm := false
	if file, fn, ok := splitLambdaHandler(t, dir, m.Handler, runtime); ok {
		s.Handler, s.Function, lambdaForm = file, fn, true
	} else if s.Handler, err = resolveHandler(t, dir, mfile, m.Handler, runtime, s.Mode); err != nil {
		return nil, err
	}
	s.Runtime = runtime
	if s.Runtime == "" {
		if s.Runtime, err = inferRuntime(t, s.Handler, t.content(dir, s.Handler)); err != nil {
			return nil, err
		}
	}
	if err := resolveTemplate(s, mfile, m.Template, lambdaForm, modeSet, t.content(dir, s.Handler)); err != nil {
		return nil, err
	}
	if err := checkCombination(s.Runtime, s.Handler, s.Mode); err != nil {
		return nil, err
	}
	if s.Mode == ModeExec {
		s.Command = command(s.Runtime, s.Handler)
	} else if s.Template == protocol.TemplateFaasVM {
		s.Warnings = append(s.Warnings, httpHandlerWarnings(s.Runtime, s.Handler, t.content(dir, s.Handler))...)
	}

	if s.Image = m.Image; s.Image != "" {
		if _, err := reference.ParseDockerRef(s.Image); err != nil {
			return nil, invalidf("%s: image %q: %v", mfile, s.Image, err)
		}
		if err := d.Policy.checkImage(mfile, s.Image); err != nil {
			return nil, err
		}
	}
	s.Timeout = d.Timeout
	if m.Timeout != "" {
		if s.Timeout, err = parsePositiveDuration(mfile, "timeout", m.Timeout); err != nil {
			return nil, err
		}
	}
	if s.Env, err = resolveEnv(mfile, m.Env); err != nil {
		return nil, err
	}
	// The values come from the operator's secrets directory when the
	// controller deploys the version, never from the folder.
	s.Secrets = m.Secrets
	s.Egress = d.Egress
	if m.Egress != nil {
		s.Egress = *m.Egress
	}
	if s.Egress {
		if err := d.Policy.checkEgress(mfile, d); err != nil {
			return nil, err
		}
	}
	if s.Scale, err = resolveScale(mfile, m, d); err != nil {
		return nil, err
	}

	var memory *meta.Size
	if m.Memory != "" {
		size, err := meta.NewSizeFromString(m.Memory)
		if err != nil {
			return nil, invalidf("%s: memory %q: %v", mfile, m.Memory, err)
		}
		if size.MBytes() < minMemoryMB {
			return nil, invalidf("%s: memory %q: below the %dMB a guest needs", mfile, m.Memory, minMemoryMB)
		}
		memory = &size
	}
	cpus := 0
	if m.CPUs != nil {
		if cpus = *m.CPUs; cpus < 1 {
			return nil, invalidf("%s: cpus %d: must be at least 1", mfile, cpus)
		}
	}
	vc, err := findVMConfig(t)
	if err != nil {
		return nil, err
	}
	if s.VM, err = mergeVM(name, template, d, vc, memory, cpus); err != nil {
		return nil, err
	}
	if err := d.Policy.checkLimits(s, mfile, origin(memory != nil, mfile, vc, "memory"), origin(cpus > 0, mfile, vc, "cpus")); err != nil {
		return nil, err
	}
	s.Warnings = append(s.Warnings, vmWarnings(vc, engine)...)
	return s, nil
}

// readManifest returns function.yaml's file name and content (an empty
// manifest when the folder has none).
func readManifest(t *tree) (string, *manifest, error) {
	file := ManifestFile
	switch {
	case t.files[ManifestFile] && t.files[manifestAltFile]:
		return "", nil, invalidf("both %s and %s exist; keep one", ManifestFile, manifestAltFile)
	case t.files[manifestAltFile]:
		file = manifestAltFile
	case !t.files[ManifestFile]:
		return file, &manifest{}, nil
	}
	data, ok := t.top[file]
	if !ok {
		return "", nil, invalidf("%s is larger than %d bytes", file, maxParsedFile)
	}
	m, err := parseManifest(file, data)
	return file, m, err
}

func resolveMode(mfile, mode string) (string, error) {
	switch mode {
	case "":
		return ModeExec, nil
	case ModeExec, ModeHTTP:
		return mode, nil
	}
	return "", invalidf("%s: mode %q: want %s (a process per request, OpenFaaS classic watchdog style) or %s (a long-running handler)",
		mfile, mode, ModeExec, ModeHTTP)
}

func checkRuntime(mfile, runtime string) error {
	switch runtime {
	case "", RuntimePython3, RuntimeNode, RuntimeBash:
		return nil
	}
	return invalidf("%s: runtime %q: want %s, %s or %s", mfile, runtime, RuntimePython3, RuntimeNode, RuntimeBash)
}

// resolveHandler checks function.yaml's handler, or infers one.
func resolveHandler(t *tree, dir, mfile, handler, runtime, mode string) (string, error) {
	if handler == "" {
		return inferHandler(t, runtime, mode)
	}
	slashed := filepath.ToSlash(handler)
	if path.IsAbs(slashed) {
		return "", invalidf("%s: handler %q: must be a path relative to the folder", mfile, handler)
	}
	clean := path.Clean(slashed)
	if clean == ".." || strings.HasPrefix(clean, "../") || clean == "." {
		return "", invalidf("%s: handler %q: must name a file inside the folder", mfile, handler)
	}
	if !t.isFile(dir, clean) {
		return "", invalidf("%s: handler %q: no such file in the folder", mfile, handler)
	}
	return clean, nil
}

// checkCombination refuses a handler the runtime and mode cannot run.
func checkCombination(runtime, handler, mode string) error {
	ext := path.Ext(handler)
	if mode == ModeHTTP {
		switch runtime {
		case RuntimePython3, RuntimeNode:
		default:
			return invalidf("mode %s needs a runtime with an HTTP bootstrap: %s (a .py file defining handle(req)) or %s (a .js file exporting a function); runtime %s supports exec mode only",
				ModeHTTP, RuntimePython3, RuntimeNode, runtime)
		}
		if handler != "" && runtimeOfExt[ext] != runtime {
			return invalidf("mode %s in runtime %s needs a %s handler, got %s", ModeHTTP, runtime, extOf(runtime), handler)
		}
		return nil
	}
	if want := runtimeOfExt[ext]; want != "" && ext != ".sh" && want != runtime {
		return invalidf("handler %s is a %s file but the runtime is %s: set runtime: %s, or pick another handler", handler, ext, runtime, want)
	}
	return nil
}

func extOf(runtime string) string {
	for ext, rt := range runtimeOfExt {
		if rt == runtime {
			return ext
		}
	}
	return ""
}

var (
	pyDefinesHandle = regexp.MustCompile(`(?m)^\s*(async\s+)?def\s+handle\s*\(|\bimport\b.*\bhandle\b|^handle\s*=`)
	jsExports       = regexp.MustCompile(`\bmodule\.exports\b|\bexports\.|\bexport\s+(default\b|(async\s+)?function\s+handle\b|(const|let|var)\s+handle\b)`)
)

// httpHandlerWarnings notes an http-mode handler that does not look like
// one; the agent reports the real failure when it loads it.
func httpHandlerWarnings(runtime, handler string, src []byte) []string {
	if src == nil {
		return nil
	}
	switch {
	case runtime == RuntimePython3 && !pyDefinesHandle.Match(src):
		return []string{fmt.Sprintf("%s does not seem to define handle(req), which http mode calls", handler)}
	case runtime == RuntimeNode && !jsExports.Match(src):
		return []string{fmt.Sprintf("%s does not seem to export a function (module.exports = ...), which http mode calls", handler)}
	}
	return nil
}

func parsePositiveDuration(mfile, field, v string) (time.Duration, error) {
	dur, err := time.ParseDuration(v)
	if err != nil {
		return 0, invalidf("%s: %s %q: %v", mfile, field, v, err)
	}
	if dur <= 0 {
		return 0, invalidf("%s: %s %q: must be positive", mfile, field, v)
	}
	return dur, nil
}

func resolveEnv(mfile string, env map[string]string) (map[string]string, error) {
	if len(env) == 0 {
		return nil, nil
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch {
		case !envName.MatchString(k):
			return nil, invalidf("%s: env %q: not a valid variable name (letters, digits and _, not starting with a digit)", mfile, k)
		case strings.HasPrefix(k, "Http_"):
			return nil, invalidf("%s: env %q: names starting with Http_ carry the request (Http_Method, Http_Path, ...)", mfile, k)
		case strings.HasPrefix(k, "FAAS_"):
			return nil, invalidf("%s: env %q: names starting with FAAS_ are reserved for the appliance", mfile, k)
		}
	}
	return env, nil
}

// resolveScale applies function.yaml's scale settings over the defaults
// and validates the result.
func resolveScale(mfile string, m *manifest, d Defaults) (Scale, error) {
	s := d.scale()
	var err error
	set := map[string]bool{}
	if m.MinReplicas != nil {
		s.MinReplicas, set["minReplicas"] = *m.MinReplicas, true
	}
	if m.MaxReplicas != nil {
		s.MaxReplicas, set["maxReplicas"] = *m.MaxReplicas, true
	}
	if m.Concurrency != nil {
		s.Concurrency, set["concurrency"] = *m.Concurrency, true
		s.ConcurrencySet = true
	}
	if m.TargetUtilization != nil {
		s.TargetUtilization, set["targetUtilization"] = *m.TargetUtilization, true
	}
	if m.IdleTimeout != "" {
		if s.IdleTimeout, err = parsePositiveDuration(mfile, "idleTimeout", m.IdleTimeout); err != nil {
			return Scale{}, err
		}
	}
	if err := s.validate(func(field string) string {
		if set[field] {
			return ""
		}
		return " (the appliance default)"
	}); err != nil {
		return Scale{}, invalidf("%s: %v", mfile, err)
	}
	return s, nil
}

// validate checks s; origin annotates a field's value with where it came
// from.
func (s Scale) validate(origin func(field string) string) error {
	switch {
	case s.MinReplicas < 0:
		return fmt.Errorf("minReplicas %d%s: must be 0 or more", s.MinReplicas, origin("minReplicas"))
	case s.MaxReplicas < 1:
		return fmt.Errorf("maxReplicas %d%s: must be at least 1", s.MaxReplicas, origin("maxReplicas"))
	case s.MaxReplicas < s.MinReplicas:
		return fmt.Errorf("maxReplicas %d%s is below minReplicas %d%s", s.MaxReplicas, origin("maxReplicas"), s.MinReplicas, origin("minReplicas"))
	case s.Concurrency < 1:
		return fmt.Errorf("concurrency %d%s: must be at least 1", s.Concurrency, origin("concurrency"))
	case !(s.TargetUtilization > 0 && s.TargetUtilization <= 1):
		return fmt.Errorf("targetUtilization %v%s: must be above 0 and at most 1", s.TargetUtilization, origin("targetUtilization"))
	case s.IdleTimeout <= 0:
		return fmt.Errorf("idleTimeout %s%s: must be positive", s.IdleTimeout, origin("idleTimeout"))
	}
	return nil
}

func (d Defaults) scale() Scale {
	return Scale{
		MinReplicas:       d.MinReplicas,
		MaxReplicas:       d.MaxReplicas,
		Concurrency:       d.Concurrency,
		IdleTimeout:       d.IdleTimeout,
		TargetUtilization: d.TargetUtilization,
	}
}

// validate reports a mistake in the appliance's defaults (not the user's).
func (d Defaults) validate() error {
	if d.Timeout <= 0 {
		return fmt.Errorf("defaults: timeout %s: must be positive", d.Timeout)
	}
	if d.Memory != "" {
		size, err := meta.NewSizeFromString(d.Memory)
		if err != nil {
			return fmt.Errorf("defaults: memory %q: %w", d.Memory, err)
		}
		if size.MBytes() < minMemoryMB {
			return fmt.Errorf("defaults: memory %q: below the %dMB a guest needs", d.Memory, minMemoryMB)
		}
	}
	if d.CPUs < 0 {
		return fmt.Errorf("defaults: cpus %d: must not be negative", d.CPUs)
	}
	if err := d.scale().validate(func(string) string { return "" }); err != nil {
		return fmt.Errorf("defaults: %w", err)
	}
	return nil
}
