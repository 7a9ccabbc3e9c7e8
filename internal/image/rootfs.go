package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	dockerimage "github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"github.com/faasvm/appliance/guest/protocol"
)

// rootFSMargin is the free space a root filesystem image gets beyond its
// content (and the 30% added to it).
const rootFSMargin = 64 << 20

// RootFS is a runtime root filesystem: a read-only ext4 image (volume label
// protocol.RootFSLabel) of a Docker image's file system, shared by every VM
// that runs the image.
type RootFS struct {
	// Path is the image file, <cache>/rootfs/<image ID hex>.ext4, mode 0444.
	Path string
	// Image is the reference it was made from, e.g. "faasvm/runtime-python3:latest".
	Image string
	// ImageID is the Docker image ID, "sha256:<hex>".
	ImageID string
	// Bytes is the size of the image file.
	Bytes int64
}

// RuntimeImageTag is the tag a runtime's image is built under.
func RuntimeImageTag(runtime string) string {
	return "faasvm/runtime-" + runtime + ":latest"
}

// runtimeName is what a runtime may be called: it becomes part of a tag.
var runtimeName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// RuntimeRootFS builds the runtime's image from the Dockerfile in
// contextDir (tagged RuntimeImageTag(runtime)) and returns its root
// filesystem, exporting it unless the cache already holds one for the image
// ID the build produced. An unchanged Dockerfile rebuilds from the engine's
// layer cache in about a second.
func (c *Cache) RuntimeRootFS(ctx context.Context, runtime, contextDir string) (RootFS, error) {
	if !runtimeName.MatchString(runtime) {
		return RootFS{}, fmt.Errorf("runtime name %q: want lowercase letters, digits, '.', '_' or '-'", runtime)
	}
	tag := RuntimeImageTag(runtime)
	if c.docker == nil {
		return c.madeRuntimeRootFS(runtime, tag)
	}
	id, err := c.buildImage(ctx, tag, contextDir)
	if err != nil {
		return RootFS{}, fmt.Errorf("runtime %s: %w", runtime, err)
	}
	fs, err := c.rootFS(ctx, tag, id)
	if err != nil {
		return RootFS{}, fmt.Errorf("runtime %s: %w", runtime, err)
	}
	// Remembered, so that a later run without a Docker engine (the socket
	// not mounted) boots the same root filesystem.
	if err := os.WriteFile(c.runtimeRecord(runtime), []byte(fs.ImageID+"\n"), 0o600); err != nil {
		c.log.Warn("recording the runtime's root filesystem", "runtime", runtime, "err", err)
	}
	return fs, nil
}

// runtimeRecord is the file naming the image ID of a runtime's last root
// filesystem.
func (c *Cache) runtimeRecord(runtime string) string {
	return filepath.Join(c.dir, "rootfs", "runtime-"+runtime+".id")
}

// madeRuntimeRootFS is RuntimeRootFS without a Docker engine: the root
// filesystem an earlier run made for the runtime, if the cache holds it.
func (c *Cache) madeRuntimeRootFS(runtime, tag string) (RootFS, error) {
	b, err := os.ReadFile(c.runtimeRecord(runtime))
	if err != nil {
		return RootFS{}, fmt.Errorf("runtime %s: no docker engine to build its image, and no root filesystem made by an earlier run (%w): "+
			"run the appliance once with the engine, or give it one", runtime, err)
	}
	id := strings.TrimSpace(string(b))
	m := imageIDHex.FindStringSubmatch(id)
	if m == nil {
		return RootFS{}, fmt.Errorf("runtime %s: %s holds %q, not an image ID", runtime, c.runtimeRecord(runtime), id)
	}
	fs := RootFS{Path: filepath.Join(c.dir, "rootfs", m[2]+".ext4"), Image: tag, ImageID: "sha256:" + m[2]}
	defer c.lock(fs.Path)()
	ok, err := c.checkEntry(fs.Path)
	if err == nil && !ok {
		err = fmt.Errorf("%s is gone (missing, or corrupted and removed)", fs.Path)
	}
	if err != nil {
		return RootFS{}, fmt.Errorf("runtime %s: no docker engine to rebuild it, and the root filesystem made earlier is unusable: %w", runtime, err)
	}
	c.used(fs.Path)
	if fi, err := os.Stat(fs.Path); err == nil {
		fs.Bytes = fi.Size()
	}
	c.log.Info("root filesystem made by an earlier run (no docker engine)", "step", "rootfs", "image", tag, "image_id", fs.ImageID, "path", fs.Path)
	return fs, nil
}

// ImageRootFS returns the root filesystem of the image ref, pulling the
// image when the engine lacks it.
func (c *Cache) ImageRootFS(ctx context.Context, ref string) (RootFS, error) {
	if c.docker == nil {
		return RootFS{}, fmt.Errorf("image %s: there is no docker engine to read it from (only the shipped runtimes run without one)", ref)
	}
	info, err := c.docker.ImageInspect(ctx, ref)
	if cerrdefs.IsNotFound(err) {
		if err := c.pullImage(ctx, ref); err != nil {
			return RootFS{}, err
		}
		info, err = c.docker.ImageInspect(ctx, ref)
	}
	if err != nil {
		return RootFS{}, fmt.Errorf("inspecting image %s: %w", ref, err)
	}
	return c.rootFS(ctx, ref, info.ID)
}

// buildImage builds the Dockerfile in dir (the whole folder is the build
// context) as tag and returns the image ID.
func (c *Cache) buildImage(ctx context.Context, tag, dir string) (string, error) {
	return BuildDir(ctx, c.docker, c.log, tag, dir)
}

// BuildDir builds the Dockerfile in dir, with the whole folder as the
// build context, as tag and returns the image ID.
func BuildDir(ctx context.Context, docker ImageBuilder, log *slog.Logger, tag, dir string) (string, error) {
	if _, err := os.Stat(filepath.Join(dir, "Dockerfile")); err != nil {
		return "", fmt.Errorf("building image %s: %w", tag, err)
	}
	log.With("step", "build", "image", tag).Info("building image", "context", dir)
	pr, pw := io.Pipe()
	defer pr.Close() // stops the packing goroutine if the engine stops reading
	go func() { pw.CloseWithError(tarContext(pw, dir)) }()
	return BuildImage(ctx, docker, log, tag, pr, nil)
}

// pullImage pulls ref, logging the engine's progress.
func (c *Cache) pullImage(ctx context.Context, ref string) error {
	return PullImage(ctx, c.docker, c.log, ref)
}

// ImageBuilder is what BuildImage needs of the engine.
type ImageBuilder interface {
	ImageBuild(ctx context.Context, buildContext io.Reader, options build.ImageBuildOptions) (build.ImageBuildResponse, error)
	ImageInspect(ctx context.Context, imageID string, opts ...client.ImageInspectOption) (dockerimage.InspectResponse, error)
}

// BuildImage builds tag from buildContext (a tar stream holding a
// Dockerfile at its top), with labels, and returns the image ID. Build
// output is logged as progress; a failing step comes back as a *BuildError.
func BuildImage(ctx context.Context, docker ImageBuilder, log *slog.Logger, tag string, buildContext io.Reader, labels map[string]string) (string, error) {
	log = log.With("step", "build", "image", tag)
	start := time.Now()
	resp, err := docker.ImageBuild(ctx, buildContext, build.ImageBuildOptions{
		Tags:        []string{tag},
		Dockerfile:  "Dockerfile",
		Labels:      labels,
		Remove:      true,
		ForceRemove: true,
		Version:     build.BuilderV1,
	})
	if err != nil {
		return "", fmt.Errorf("building image %s: %w", tag, err)
	}
	defer resp.Body.Close()

	var (
		id, step string
		tail     []string
	)
	err = decodeProgress(resp.Body, func(m *progressMessage) error {
		if msg := m.err(); msg != "" {
			return &BuildError{Image: tag, Step: step, Message: strings.TrimSpace(msg), Output: slices.Clone(tail)}
		}
		if m.Aux != nil && m.Aux.ID != "" {
			id = m.Aux.ID
		}
		for line := range strings.Lines(m.Stream) {
			line = strings.TrimRight(line, "\r\n")
			if strings.TrimSpace(line) == "" {
				continue
			}
			if strings.HasPrefix(line, "Step ") {
				step = line
				tail = tail[:0]
				log.Info("build step", "detail", line)
				continue
			}
			log.Debug("build output", "detail", line)
			if tail = append(tail, line); len(tail) > 20 {
				tail = tail[1:]
			}
		}
		return nil
	})
	if err != nil {
		if be := (*BuildError)(nil); errors.As(err, &be) {
			return "", be
		}
		return "", fmt.Errorf("building image %s: %w", tag, err)
	}
	if id == "" {
		info, err := docker.ImageInspect(ctx, tag)
		if err != nil {
			return "", fmt.Errorf("inspecting built image %s: %w", tag, err)
		}
		id = info.ID
	}
	log.Info("image built", "image_id", id, "elapsed", time.Since(start).Round(time.Millisecond))
	return id, nil
}

// ImagePuller is what PullImage needs of the engine.
type ImagePuller interface {
	ImagePull(ctx context.Context, ref string, options dockerimage.PullOptions) (io.ReadCloser, error)
}

// PullImage pulls ref, logging the engine's progress.
func PullImage(ctx context.Context, docker ImagePuller, log *slog.Logger, ref string) error {
	log = log.With("step", "pull", "image", ref)
	log.Info("pulling image")
	start := time.Now()
	rc, err := docker.ImagePull(ctx, ref, dockerimage.PullOptions{})
	if err != nil {
		return fmt.Errorf("pulling image %s: %w", ref, err)
	}
	defer rc.Close()
	layers := map[string][2]int64{}
	lastReport := time.Now()
	err = decodeProgress(rc, func(m *progressMessage) error {
		if msg := m.err(); msg != "" {
			return fmt.Errorf("pulling image %s: %s", ref, msg)
		}
		if m.Progress != nil && m.Progress.Total > 0 {
			layers[m.ID] = [2]int64{m.Progress.Current, m.Progress.Total}
			if time.Since(lastReport) >= 3*time.Second {
				lastReport = time.Now()
				var cur, total int64
				for _, l := range layers {
					cur, total = cur+l[0], total+l[1]
				}
				log.Info("pulling image", "layers", len(layers), "bytes", cur, "of", total, "elapsed", time.Since(start).Round(time.Second))
			}
			return nil
		}
		if m.Status != "" {
			log.Debug("pull status", "layer", m.ID, "detail", m.Status)
		}
		return nil
	})
	if err != nil {
		return err
	}
	log.Info("image pulled", "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}

// imageIDHex is the hex digest of an image ID such as "sha256:<hex>".
var imageIDHex = regexp.MustCompile(`^(sha256:)?([0-9a-f]{64})$`)

// rootFS returns the cached root filesystem of image id, exporting it when
// the cache lacks it.
func (c *Cache) rootFS(ctx context.Context, ref, id string) (RootFS, error) {
	m := imageIDHex.FindStringSubmatch(id)
	if m == nil {
		return RootFS{}, fmt.Errorf("image %s has an unexpected ID %q", ref, id)
	}
	fs := RootFS{Path: filepath.Join(c.dir, "rootfs", m[2]+".ext4"), Image: ref, ImageID: "sha256:" + m[2]}
	log := c.log.With("step", "rootfs", "image", ref, "image_id", fs.ImageID)

	defer c.lock(fs.Path)()
	if ok, err := c.checkEntry(fs.Path); err != nil {
		return RootFS{}, fmt.Errorf("root filesystem of %s: %w", ref, err)
	} else if ok {
		c.used(fs.Path)
		if fi, err := os.Stat(fs.Path); err == nil {
			fs.Bytes = fi.Size()
		}
		log.Info("root filesystem cached", "path", fs.Path, "bytes", fs.Bytes)
		return fs, nil
	}
	if err := c.exportRootFS(ctx, log, fs); err != nil {
		return RootFS{}, fmt.Errorf("making root filesystem of %s: %w", ref, err)
	}
	fi, err := os.Stat(fs.Path)
	if err != nil {
		return RootFS{}, fmt.Errorf("root filesystem of %s: %w", ref, err)
	}
	fs.Bytes = fi.Size()
	return fs, nil
}

// exportRootFS exports image fs.ImageID through a created (never started)
// container and makes fs.Path from it.
func (c *Cache) exportRootFS(ctx context.Context, log *slog.Logger, fs RootFS) error {
	start := time.Now()
	created, err := c.docker.ContainerCreate(ctx, &container.Config{
		Image: fs.ImageID,
		// Never run: set so images without a command can be created too.
		Entrypoint:      []string{"/faasvm-export-only"},
		NetworkDisabled: true,
		Labels:          map[string]string{"org.faasvm.export": fs.Image},
	}, &container.HostConfig{}, nil, nil, "")
	if err != nil {
		return fmt.Errorf("creating container: %w", err)
	}
	defer func() {
		rmCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := c.docker.ContainerRemove(rmCtx, created.ID, container.RemoveOptions{Force: true}); err != nil {
			log.Warn("removing export container", "container", created.ID, "err", err)
		}
	}()
	rc, err := c.docker.ContainerExport(ctx, created.ID)
	if err != nil {
		return fmt.Errorf("exporting container %s: %w", created.ID, err)
	}
	defer rc.Close()
	stream := &progressReader{r: rc, log: log, start: start, every: 64 << 20}

	var (
		source string
		stats  tarStats
	)
	if c.mkfs.takesTar(ctx, filepath.Join(c.dir, "tmp")) {
		source, stats, err = c.exportToTarFile(stream)
	} else {
		source, stats, err = c.exportToDir(ctx, stream)
	}
	if source != "" {
		defer os.RemoveAll(source)
	}
	if err != nil {
		return err
	}
	exported := time.Since(start)
	log.Info("image exported", "bytes", stream.n, "files", stats.entries, "content_bytes", stats.bytes,
		"elapsed", exported.Round(time.Millisecond))

	out, err := c.tempFile("rootfs-*.ext4")
	if err != nil {
		return err
	}
	defer os.Remove(out) // no-op once published
	img := ext4Image{
		Out:    out,
		Label:  protocol.RootFSLabel,
		Source: source,
		Bytes:  imageSize(stats.bytes, rootFSMargin),
		Inodes: inodeCount(stats.entries),
	}
	if err := c.mkfs.make(ctx, img); err != nil {
		return err
	}
	if err := c.publish(out, fs.Path); err != nil {
		return err
	}
	log.Info("root filesystem made", "path", fs.Path, "bytes", img.Bytes,
		"export_elapsed", exported.Round(time.Millisecond), "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}

// exportToTarFile saves the export stream to a tar file for mke2fs -d.
func (c *Cache) exportToTarFile(stream io.Reader) (string, tarStats, error) {
	path, err := c.tempFile("export-*.tar")
	if err != nil {
		return "", tarStats{}, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return path, tarStats{}, fmt.Errorf("saving export: %w", err)
	}
	stats, err := scanTar(io.TeeReader(stream, f))
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("saving export: %w", cerr)
	}
	return path, stats, err
}

// exportToDir unpacks the export stream into a directory for mke2fs -d,
// with GNU tar as root so owners, modes, device nodes and extended
// attributes (file capabilities) survive.
func (c *Cache) exportToDir(ctx context.Context, stream io.Reader) (string, tarStats, error) {
	if os.Geteuid() != 0 {
		return "", tarStats{}, errors.New("this mke2fs cannot read a tarball (e2fsprogs < 1.47.1), and unpacking an image with its owners needs root")
	}
	dir, err := c.tempDir("export-*")
	if err != nil {
		return "", tarStats{}, err
	}
	if err := os.Chmod(dir, 0o755); err != nil { // becomes the image's root
		return dir, tarStats{}, fmt.Errorf("unpacking export: %w", err)
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "tar", "-x", "-f", "-", "-C", dir,
		"--numeric-owner", "--same-owner", "--same-permissions", "--xattrs", "--xattrs-include=*")
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return dir, tarStats{}, fmt.Errorf("unpacking export: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return dir, tarStats{}, fmt.Errorf("unpacking export: %w", err)
	}
	stats, scanErr := scanTar(io.TeeReader(stream, stdin))
	stdin.Close()
	waitErr := cmd.Wait()
	switch {
	case waitErr != nil:
		return dir, stats, fmt.Errorf("unpacking export with tar: %w: %s", waitErr, strings.TrimSpace(stderr.String()))
	case scanErr != nil:
		return dir, stats, scanErr
	}
	return dir, stats, nil
}

// tarStats sums up a tar stream for sizing the image made from it.
type tarStats struct {
	entries int64 // inodes needed
	bytes   int64 // content in 4 KiB blocks
}

// scanTar reads a whole tar stream and sums it up.
func scanTar(r io.Reader) (tarStats, error) {
	var s tarStats
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return s, fmt.Errorf("reading export: %w", err)
		}
		if hdr.Typeflag == tar.TypeLink {
			continue // another name for an inode counted already
		}
		s.entries++
		if hdr.Typeflag == tar.TypeReg {
			s.bytes += blockBytes(hdr.Size)
		} else {
			s.bytes += blockBytes(0)
		}
	}
	// The end-of-archive blocks and any padding after them.
	if _, err := io.Copy(io.Discard, r); err != nil {
		return s, fmt.Errorf("reading export: %w", err)
	}
	return s, nil
}

// progressReader counts the bytes read through it and logs every `every`
// bytes.
type progressReader struct {
	r     io.Reader
	log   *slog.Logger
	start time.Time
	every int64
	n     int64
	next  int64
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	if p.every > 0 && p.n >= p.next+p.every {
		p.next = p.n / p.every * p.every
		p.log.Info("exporting image", "bytes", p.n, "elapsed", time.Since(p.start).Round(time.Millisecond))
	}
	return n, err
}
