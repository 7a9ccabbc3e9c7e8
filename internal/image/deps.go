package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	dockerimage "github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/faasvm/appliance/guest/protocol"
)

// Dependency disks: a function folder's requirements.txt (python3) or
// package.json (+ package-lock.json, node) is installed through the Docker
// API on top of the function's runtime image, in a container of a builder
// image (the runtime image plus pip or npm), and the result becomes a
// read-only ext4 disk (label protocol.DepsLabel):
//
//	/python/        pip install --target (PYTHONPATH in the guest)
//	/node_modules/  npm ci (with a lockfile) or npm install --omit=dev (NODE_PATH)
//
// The disk is cached as <cache>/deps/<key>.ext4, the key being a digest of
// the runtime image ID, the manifests' content and the package index
// settings: a change to the code alone finds the disk made before.

// DefaultDepsTimeout bounds one dependency install.
const DefaultDepsTimeout = 10 * time.Minute

// depsMargin is the free space a dependency disk gets beyond its content
// (and the 30% added to it).
const depsMargin = 16 << 20

// depsTail is how many of the installer's last lines a failure carries.
const depsTail = 15

// Paths inside the install container.
const (
	depsBuildDir = "/tmp/faas-build" // the manifests (and a copied file:// index)
	depsOutDir   = "/tmp/faas-deps"  // what becomes the disk
	depsCAFile   = "/tmp/faas-ca.crt"
	depsIndexDir = "/tmp/faas-index" // a file:// pip index, copied
	depsUser     = "65534:65534"     // nobody: the install runs unprivileged
)

// ErrDepsTooLarge is wrapped by the error for installed dependencies over
// the function size limit.
var ErrDepsTooLarge = errors.New("installed dependencies are over the function size limit")

// maxPipIndexBytes bounds the file:// pip index copied into an install.
const maxPipIndexBytes = 4 << 30

// DepsConfig is how dependencies are installed: the operator's settings.
type DepsConfig struct {
	// PipIndexURL is pip's --index-url ("": PyPI). A file:// URL names a
	// directory on the appliance's host: a PEP 503 "simple" index, or a
	// folder of wheels and sdists (then --no-index --find-links). It is
	// copied into the install container.
	PipIndexURL string
	// NpmRegistry is npm's registry ("": registry.npmjs.org).
	NpmRegistry string
	// Timeout bounds one install, the builder image included
	// (DefaultDepsTimeout when zero).
	Timeout time.Duration
	// CABundle is a PEM file of the CAs the install trusts besides the
	// image's own ("": none), for TLS-intercepting proxies.
	CABundle string
}

// DepsDocker is what dependency installs need of the engine.
// *client.Client implements it.
type DepsDocker interface {
	ImageBuild(ctx context.Context, buildContext io.Reader, options build.ImageBuildOptions) (build.ImageBuildResponse, error)
	ImageInspect(ctx context.Context, imageID string, opts ...client.ImageInspectOption) (dockerimage.InspectResponse, error)
	ContainerCreate(ctx context.Context, config *container.Config, hostConfig *container.HostConfig, networkingConfig *network.NetworkingConfig, platform *ocispec.Platform, containerName string) (container.CreateResponse, error)
	CopyToContainer(ctx context.Context, containerID, dstPath string, content io.Reader, options container.CopyToContainerOptions) error
	ContainerStart(ctx context.Context, containerID string, options container.StartOptions) error
	ContainerWait(ctx context.Context, containerID string, condition container.WaitCondition) (<-chan container.WaitResponse, <-chan error)
	ContainerLogs(ctx context.Context, containerID string, options container.LogsOptions) (io.ReadCloser, error)
	CopyFromContainer(ctx context.Context, containerID, srcPath string) (io.ReadCloser, container.PathStat, error)
	ContainerRemove(ctx context.Context, containerID string, options container.RemoveOptions) error
}

var _ DepsDocker = (*client.Client)(nil)

// depsCounters count what DepsDisk did, for logs, tests and metrics.
type depsCounters struct {
	installs, cached, failed atomic.Int64
}

// DepsStats is what DepsDisk has done since the cache was made.
type DepsStats struct {
	Installs int64 // disks made by an install
	Cached   int64 // disks found in the cache (no install)
	Failed   int64 // installs that failed
}

// DepsStats reports the dependency installs made and avoided.
func (c *Cache) DepsStats() DepsStats {
	return DepsStats{Installs: c.deps.installs.Load(), Cached: c.deps.cached.Load(), Failed: c.deps.failed.Load()}
}

// depsManifest is one manifest file of a folder.
type depsManifest struct {
	name string
	data []byte
}

// manifestsFor returns the dependency manifests of the folder dir for the
// runtime, nil when it has none. Only regular files at the top count.
func manifestsFor(dir, runtime string) ([]depsManifest, error) {
	var names []string
	switch runtime {
	case "python3":
		names = []string{"requirements.txt"}
	case "node":
		names = []string{"package.json", "package-lock.json"}
	default:
		return nil, nil
	}
	var out []depsManifest
	for i, n := range names {
		fi, err := os.Lstat(filepath.Join(dir, n))
		if errors.Is(err, fs.ErrNotExist) {
			if i == 0 {
				return nil, nil // no main manifest: no dependencies
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", n, err)
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("%s is not a regular file", n)
		}
		if fi.Size() > 16<<20 {
			return nil, fmt.Errorf("%s is larger than 16 MiB", n)
		}
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", n, err)
		}
		out = append(out, depsManifest{name: n, data: b})
	}
	return out, nil
}

// depsKey is the cache key of a dependency disk.
func depsKey(runtime, imageID string, ms []depsManifest, cfg DepsConfig) string {
	h := sha256.New()
	field(h, "faasvm-deps-v1")
	field(h, runtime)
	field(h, imageID)
	for _, m := range ms {
		field(h, m.name)
		sum := sha256.Sum256(m.data)
		field(h, hex.EncodeToString(sum[:]))
	}
	field(h, cfg.PipIndexURL)
	field(h, cfg.NpmRegistry)
	return hex.EncodeToString(h.Sum(nil))
}

// DepsDisk returns the dependency disk of the folder dir (a version's
// snapshot) for runtime, installed on top of the image imageID
// ("sha256:<hex>"), or "" when the folder has no manifest for its runtime.
// A disk made before for the same image, manifests and index settings is
// reused without an install. A failed install's error carries the
// installer's last lines.
func (c *Cache) DepsDisk(ctx context.Context, runtime, imageID, dir string) (string, error) {
	ms, err := manifestsFor(dir, runtime)
	if err != nil || len(ms) == 0 {
		return "", err
	}
	m := imageIDHex.FindStringSubmatch(imageID)
	if m == nil {
		return "", fmt.Errorf("dependencies: runtime image ID %q is not sha256:<hex>", imageID)
	}
	imageID = "sha256:" + m[2]
	key := depsKey(runtime, imageID, ms, c.depsCfg)
	out := filepath.Join(c.dir, "deps", key+".ext4")
	log := c.log.With("step", "deps", "runtime", runtime, "manifest", ms[0].name, "key", key[:12])

	defer c.lock(out)()
	if ok, err := c.checkEntry(out); err != nil {
		return "", fmt.Errorf("dependency disk: %w", err)
	} else if ok {
		c.used(out)
		c.deps.cached.Add(1)
		log.Info("dependency disk cached: no install", "path", out)
		return out, nil
	}
	if c.depsDocker == nil {
		return "", fmt.Errorf("installing dependencies from %s needs a docker engine, and none answers", ms[0].name)
	}
	timeout := cmp0(c.depsCfg.Timeout, DefaultDepsTimeout)
	ictx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	log.Info("installing dependencies", "image_id", imageID, "timeout", timeout)
	if err := c.installDeps(ictx, log, runtime, imageID, ms, out); err != nil {
		c.deps.failed.Add(1)
		if ctx.Err() == nil && errors.Is(ictx.Err(), context.DeadlineExceeded) {
			return "", fmt.Errorf("installing dependencies from %s did not finish within %s (FAAS_DEPS_TIMEOUT): %w", ms[0].name, timeout, err)
		}
		return "", fmt.Errorf("installing dependencies from %s: %w", ms[0].name, err)
	}
	c.deps.installs.Add(1)
	log.Info("dependency disk made", "path", out, "elapsed", time.Since(start).Round(time.Millisecond))
	return out, nil
}

func cmp0(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// builderDockerfile installs the package tool a runtime's installs need
// when the runtime image lacks it (Debian's packages; an image with pip or
// npm already skips the apt step).
func builderDockerfile(runtime, imageID string) (string, error) {
	var tool, pkg string
	switch runtime {
	case "python3":
		tool, pkg = "python3 -m pip --version", "python3-pip"
	case "node":
		tool, pkg = "npm --version", "npm"
	default:
		return "", fmt.Errorf("runtime %s has no dependency installer", runtime)
	}
	// The bare hex ID: the classic builder reads "sha256:<hex>" as a
	// repository named sha256.
	return "FROM " + strings.TrimPrefix(imageID, "sha256:") + "\n" +
		"LABEL org.faasvm.deps-builder=\"" + runtime + "\"\n" +
		"RUN " + tool + " >/dev/null 2>&1 || (apt-get update" +
		" && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends " + pkg +
		" && rm -rf /var/lib/apt/lists/*)\n", nil
}

// builderImage builds (or finds in the engine's layer cache) the image
// installs of runtime run in.
func (c *Cache) builderImage(ctx context.Context, log *slog.Logger, runtime, imageID string) (string, error) {
	df, err := builderDockerfile(runtime, imageID)
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "Dockerfile", Mode: 0o644, Size: int64(len(df)), Typeflag: tar.TypeReg}); err != nil {
		return "", err
	}
	if _, err := io.WriteString(tw, df); err != nil {
		return "", err
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	tag := "faasvm/deps-builder-" + runtime + ":" + strings.TrimPrefix(imageID, "sha256:")[:12]
	log.Info("preparing the dependency builder image", "image", tag)
	return BuildImage(ctx, c.depsDocker, log, tag, &buf, nil)
}

// installScript is the install container's command for runtime.
func installScript(runtime string, ms []depsManifest, cfg DepsConfig) []string {
	var sh string
	switch runtime {
	case "python3":
		idx := ""
		if u := cfg.PipIndexURL; u != "" {
			if dir, ok := fileURLDir(u); ok && isWheelhouse(dir) {
				idx = " --no-index --find-links " + depsIndexDir
			} else if ok {
				idx = " --index-url file://" + depsIndexDir
			} else {
				idx = " --index-url " + shellQuote(u)
			}
		}
		sh = "set -e; mkdir -p " + depsOutDir + "/python; cd " + depsBuildDir + "; " +
			"python3 -m pip install --no-input --disable-pip-version-check --no-cache-dir --progress-bar off" + idx +
			" --target " + depsOutDir + "/python -r requirements.txt"
	case "node":
		reg := ""
		if cfg.NpmRegistry != "" {
			reg = " --registry " + shellQuote(cfg.NpmRegistry)
		}
		install := "npm install --omit=dev"
		for _, m := range ms {
			if m.name == "package-lock.json" {
				install = "npm ci --omit=dev"
			}
		}
		sh = "set -e; mkdir -p " + depsOutDir + "; cp " + depsBuildDir + "/package*.json " + depsOutDir + "/; cd " + depsOutDir + "; " +
			install + " --no-audit --no-fund --no-update-notifier" + reg
	}
	return []string{"/bin/sh", "-c", sh}
}

// shellQuote quotes s for /bin/sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// fileURLDir returns the directory a file:// URL names.
func fileURLDir(raw string) (string, bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "file" || u.Path == "" {
		return "", false
	}
	return path.Clean(u.Path), true
}

// isWheelhouse reports whether dir holds distributions at its top (a
// --find-links folder) rather than a PEP 503 index.
func isWheelhouse(dir string) bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		n := e.Name()
		if strings.HasSuffix(n, ".whl") || strings.HasSuffix(n, ".tar.gz") || strings.HasSuffix(n, ".zip") {
			return true
		}
	}
	return false
}

// installDeps runs the install in a container and makes the disk out.
func (c *Cache) installDeps(ctx context.Context, log *slog.Logger, runtime, imageID string, ms []depsManifest, out string) error {
	builder, err := c.builderImage(ctx, log, runtime, imageID)
	if err != nil {
		return fmt.Errorf("preparing the builder image: %w", err)
	}
	env := []string{"HOME=/tmp", "PIP_BREAK_SYSTEM_PACKAGES=1", "PYTHONDONTWRITEBYTECODE=1", "npm_config_cache=/tmp/.npm", "npm_config_update_notifier=false"}
	ca, err := c.caBundle()
	if err != nil {
		return err
	}
	if ca != nil {
		env = append(env, "PIP_CERT="+depsCAFile, "NODE_EXTRA_CA_CERTS="+depsCAFile)
	}
	created, err := c.depsDocker.ContainerCreate(ctx, &container.Config{
		Image:      builder,
		Cmd:        installScript(runtime, ms, c.depsCfg),
		Env:        env,
		User:       depsUser,
		WorkingDir: "/tmp",
		Labels:     map[string]string{"org.faasvm.deps": runtime},
	}, &container.HostConfig{
		CapDrop:     []string{"ALL"},
		SecurityOpt: []string{"no-new-privileges"},
		Resources:   container.Resources{PidsLimit: ptr(int64(1024)), Memory: 2 << 30},
	}, nil, nil, "")
	if err != nil {
		return fmt.Errorf("creating the install container: %w", err)
	}
	defer func() {
		rmCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := c.depsDocker.ContainerRemove(rmCtx, created.ID, container.RemoveOptions{Force: true}); err != nil {
			log.Warn("removing the install container", "container", created.ID, "err", err)
		}
	}()
	input, err := c.installInput(ms, ca)
	if err != nil {
		return err
	}
	if err := c.depsDocker.CopyToContainer(ctx, created.ID, "/", input, container.CopyToContainerOptions{}); err != nil {
		return fmt.Errorf("copying the manifests into the install container: %w", err)
	}
	if err := c.depsDocker.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		return fmt.Errorf("starting the install container: %w", err)
	}
	tail := &lineTail{max: depsTail, log: log}
	logsDone := make(chan struct{})
	if rc, err := c.depsDocker.ContainerLogs(ctx, created.ID, container.LogsOptions{ShowStdout: true, ShowStderr: true, Follow: true}); err == nil {
		go func() {
			defer close(logsDone)
			defer rc.Close()
			pr, pw := io.Pipe()
			go func() { _, err := stdcopy.StdCopy(pw, pw, rc); pw.CloseWithError(err) }()
			tail.read(pr)
		}()
	} else {
		close(logsDone)
		log.Warn("reading the installer's output", "err", err)
	}
	waitC, errC := c.depsDocker.ContainerWait(ctx, created.ID, container.WaitConditionNotRunning)
	var code int64
	select {
	case w := <-waitC:
		code = w.StatusCode
		if w.Error != nil && w.Error.Message != "" {
			return fmt.Errorf("waiting for the installer: %s", w.Error.Message)
		}
	case err := <-errC:
		return fmt.Errorf("waiting for the installer: %w", err)
	case <-ctx.Done():
		return fmt.Errorf("waiting for the installer: %w%s", ctx.Err(), tail.text())
	}
	select {
	case <-logsDone:
	case <-time.After(5 * time.Second):
	}
	if code != 0 {
		return fmt.Errorf("the installer exited with status %d:%s", code, tail.text())
	}
	rc, _, err := c.depsDocker.CopyFromContainer(ctx, created.ID, depsOutDir)
	if err != nil {
		return fmt.Errorf("copying the installed dependencies out: %w", err)
	}
	defer rc.Close()
	return c.depsImage(ctx, log, rc, out)
}

func ptr[T any](v T) *T { return &v }

// caBundle reads the configured CA bundle (nil: none).
func (c *Cache) caBundle() ([]byte, error) {
	if c.depsCfg.CABundle == "" {
		return nil, nil
	}
	b, err := os.ReadFile(c.depsCfg.CABundle)
	if err != nil {
		return nil, fmt.Errorf("reading the CA bundle for installs (FAAS_BUILD_CA_BUNDLE): %w", err)
	}
	return b, nil
}

// installInput is the tar copied into the install container at /: the
// manifests, the CA bundle and a file:// pip index, owned by the user the
// install runs as.
func (c *Cache) installInput(ms []depsManifest, ca []byte) (io.Reader, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(name string) error {
		return tw.WriteHeader(&tar.Header{Name: name + "/", Mode: 0o755, Typeflag: tar.TypeDir, Uid: 65534, Gid: 65534})
	}
	file := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg, Uid: 65534, Gid: 65534}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := dir(strings.TrimPrefix(depsBuildDir, "/")); err != nil {
		return nil, err
	}
	for _, m := range ms {
		if err := file(strings.TrimPrefix(depsBuildDir, "/")+"/"+m.name, m.data); err != nil {
			return nil, err
		}
	}
	if ca != nil {
		if err := file(strings.TrimPrefix(depsCAFile, "/"), ca); err != nil {
			return nil, err
		}
	}
	if d, ok := fileURLDir(c.depsCfg.PipIndexURL); ok {
		// The index is the operator's, not the function's: the function size
		// limit bounds what the install produces, this only bounds the copy.
		if err := addTree(tw, d, strings.TrimPrefix(depsIndexDir, "/"), maxPipIndexBytes); err != nil {
			return nil, fmt.Errorf("copying the pip index %s (FAAS_PIP_INDEX_URL): %w", d, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return &buf, nil
}

// addTree adds the directory root to tw as the directory prefix:
// directories and regular files, at most limit bytes of content.
func addTree(tw *tar.Writer, root, prefix string, limit int64) error {
	var total int64
	if err := tw.WriteHeader(&tar.Header{Name: prefix + "/", Mode: 0o755, Typeflag: tar.TypeDir}); err != nil {
		return err
	}
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		name := prefix + "/" + filepath.ToSlash(rel)
		switch {
		case d.IsDir():
			return tw.WriteHeader(&tar.Header{Name: name + "/", Mode: 0o755, Typeflag: tar.TypeDir})
		case d.Type().IsRegular():
			fi, err := d.Info()
			if err != nil {
				return err
			}
			if total += fi.Size(); total > limit {
				return fmt.Errorf("more than %d bytes", limit)
			}
			if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: fi.Size(), Typeflag: tar.TypeReg}); err != nil {
				return err
			}
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.CopyN(tw, f, fi.Size())
			return err
		}
		return nil // symlinks and special files are left out
	})
}

// depsImage makes the disk out from the tar CopyFromContainer gives (its
// entries under "faas-deps/"), with the top directory stripped and at most
// the function size limit of content.
func (c *Cache) depsImage(ctx context.Context, log *slog.Logger, rc io.Reader, out string) error {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(rebaseTar(pw, rc, path.Base(depsOutDir), c.codeLimit)) }()
	defer pr.Close()
	var (
		source string
		stats  tarStats
		err    error
	)
	if c.mkfs.takesTar(ctx, filepath.Join(c.dir, "tmp")) {
		source, stats, err = c.exportToTarFile(pr)
	} else {
		source, stats, err = c.exportToDir(ctx, pr)
	}
	if source != "" {
		defer os.RemoveAll(source)
	}
	if err != nil {
		if errors.Is(err, ErrDepsTooLarge) {
			return err
		}
		return fmt.Errorf("unpacking the installed dependencies: %w", err)
	}
	tmp, err := c.tempFile("deps-*.ext4")
	if err != nil {
		return err
	}
	defer os.Remove(tmp) // no-op once published
	img := ext4Image{Out: tmp, Label: protocol.DepsLabel, Source: source, Bytes: imageSize(stats.bytes, depsMargin), Inodes: inodeCount(stats.entries)}
	if err := c.mkfs.make(ctx, img); err != nil {
		return err
	}
	log.Info("dependency disk written", "files", stats.entries, "content_bytes", stats.bytes, "bytes", img.Bytes)
	return c.publish(tmp, out)
}

// rebaseTar copies the tar r to w with the leading directory top removed
// from every name (top itself dropped), refusing more than limit bytes of
// content (ErrDepsTooLarge) and links that leave the tree.
func rebaseTar(w io.Writer, r io.Reader, top string, limit int64) error {
	tr := tar.NewReader(r)
	tw := tar.NewWriter(w)
	var total int64
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading the installed dependencies: %w", err)
		}
		name, ok := underTop(hdr.Name, top)
		if !ok {
			return fmt.Errorf("installed dependencies: entry %q leaves the tree", hdr.Name)
		}
		if name == "" {
			continue // top itself
		}
		hdr.Name = name
		if hdr.Typeflag == tar.TypeDir {
			hdr.Name += "/"
		}
		if hdr.Typeflag == tar.TypeLink {
			if hdr.Linkname, ok = underTop(hdr.Linkname, top); !ok || hdr.Linkname == "" {
				return fmt.Errorf("installed dependencies: hard link %q -> %q leaves the tree", hdr.Name, hdr.Linkname)
			}
		}
		if hdr.Typeflag == tar.TypeReg {
			if total += hdr.Size; total > limit {
				return fmt.Errorf("%w (%d bytes; the limit is %d)", ErrDepsTooLarge, total, limit)
			}
		}
		// Root-owned and world-readable in the disk, whoever installed.
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		hdr.Mode |= 0o444
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := io.CopyN(tw, tr, hdr.Size); err != nil {
				return fmt.Errorf("reading the installed dependencies: %w", err)
			}
		}
	}
	return tw.Close()
}

// underTop returns the tar name n relative to the directory top it must be
// in ("" for top itself), and false when n is elsewhere or leaves it.
func underTop(n, top string) (string, bool) {
	if strings.ContainsRune(n, 0) {
		return "", false
	}
	clean := strings.TrimPrefix(path.Clean("/"+n), "/")
	if strings.Contains("/"+n+"/", "/../") {
		return "", false // a name climbing anywhere is refused, even if it lands inside
	}
	switch {
	case clean == top:
		return "", true
	case strings.HasPrefix(clean, top+"/"):
		return strings.TrimPrefix(clean, top+"/"), true
	}
	return "", false
}

// lineTail logs every line it reads as progress and keeps the last max.
type lineTail struct {
	max   int
	log   *slog.Logger
	mu    sync.Mutex
	lines []string
}

func (t *lineTail) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		t.log.Info("install output", "detail", line)
		t.mu.Lock()
		if t.lines = append(t.lines, line); len(t.lines) > t.max {
			t.lines = t.lines[1:]
		}
		t.mu.Unlock()
	}
}

// text is the kept lines, each on a line of its own after a newline.
func (t *lineTail) text() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == 0 {
		return " (no output)"
	}
	return "\n" + strings.Join(t.lines, "\n")
}
