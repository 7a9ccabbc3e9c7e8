package export

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/build"
	dockerimage "github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"github.com/faasvm/appliance/guest/protocol"
	"github.com/faasvm/appliance/internal/function"
	"github.com/faasvm/appliance/internal/image"
)

// Docker is the part of the Docker Engine API an export uses.
// *client.Client implements it.
type Docker interface {
	ImageBuild(ctx context.Context, buildContext io.Reader, options build.ImageBuildOptions) (build.ImageBuildResponse, error)
	ImageInspect(ctx context.Context, imageID string, opts ...client.ImageInspectOption) (dockerimage.InspectResponse, error)
	ImagePull(ctx context.Context, ref string, options dockerimage.PullOptions) (io.ReadCloser, error)
	ImagePush(ctx context.Context, ref string, options dockerimage.PushOptions) (io.ReadCloser, error)
}

var _ Docker = (*client.Client)(nil)

// Image labels, read by people (docker inspect) and tools alike.
const (
	LabelFunction   = "org.faasvm.function"
	LabelVersion    = "org.faasvm.version"
	LabelDigest     = "org.faasvm.digest"
	LabelMode       = "org.faasvm.mode"
	LabelRuntime    = "org.faasvm.runtime"
	LabelPort       = "org.faasvm.port"
	LabelHealthPort = "org.faasvm.health-port"
	LabelHealthPath = "org.faasvm.health-path"
)

// imageLabels are the labels of the function's image.
func imageLabels(s *function.Spec) map[string]string {
	return map[string]string{
		LabelFunction:                      s.Name,
		LabelVersion:                       s.Version(),
		LabelDigest:                        s.Digest,
		LabelMode:                          s.Mode,
		LabelRuntime:                       s.Runtime,
		LabelPort:                          strconv.Itoa(DataPort),
		LabelHealthPort:                    strconv.Itoa(ControlPort),
		LabelHealthPath:                    HealthPath,
		"org.opencontainers.image.title":   s.Name,
		"org.opencontainers.image.version": s.Version(),
	}
}

// agentConfig is what the agent reads in the image: the VM's config
// without secrets or network (container mode makes its own secret for the
// in-process hop; the network is the platform's).
func agentConfig(s *function.Spec) protocol.Config {
	return protocol.Config{
		Name:     s.Name,
		Mode:     s.Mode,
		Runtime:  s.Runtime,
		Handler:  s.Handler,
		Command:  s.Command,
		Env:      s.Env,
		Timeout:  protocol.Duration(s.Timeout),
		Template: s.Template,
		Function: s.Function,
	}
}

// dockerfile is the function image's build: the base image, the agent as
// entrypoint, its config and the code; an unprivileged user; the base's
// own command cleared (it would become the agent's arguments).
func dockerfile(base string, maxBody int64) string {
	entry, _ := json.Marshal([]string{AgentPath, "container", "-config", ConfigPath, "-max-body", strconv.FormatInt(maxBody, 10)})
	health, _ := json.Marshal([]string{AgentPath, "health"})
	uid := strconv.Itoa(User)
	return strings.Join([]string{
		"FROM " + base,
		"COPY agent " + AgentPath,
		"COPY function.json " + ConfigPath,
		"COPY code/ " + CodeDir + "/",
		"USER " + uid + ":" + uid,
		"WORKDIR " + CodeDir,
		"EXPOSE " + strconv.Itoa(DataPort) + "/tcp",
		"HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3 CMD " + string(health),
		"ENTRYPOINT " + string(entry),
		"CMD []",
		"",
	}, "\n")
}

// baseImage returns the image the function's image is built from, by ID:
// the runtime's image built from its folder as the appliance builds it, or
// the image function.yaml names (pulled when the engine lacks it).
func baseImage(ctx context.Context, d Docker, log *slog.Logger, s *function.Spec, runtimesDir string) (string, error) {
	if s.Image != "" {
		info, err := d.ImageInspect(ctx, s.Image)
		if cerrdefs.IsNotFound(err) {
			if err := image.PullImage(ctx, d, log, s.Image); err != nil {
				return "", err
			}
			info, err = d.ImageInspect(ctx, s.Image)
		}
		if err != nil {
			return "", fmt.Errorf("inspecting image %s: %w", s.Image, err)
		}
		return info.ID, nil
	}
	dir := filepath.Join(runtimesDir, s.Runtime)
	if _, err := os.Stat(filepath.Join(dir, "Dockerfile")); err != nil {
		return "", fmt.Errorf("runtime %q has no Dockerfile in %s (check FAAS_RUNTIMES_DIR): %w", s.Runtime, runtimesDir, err)
	}
	id, err := image.BuildDir(ctx, d, log, image.RuntimeImageTag(s.Runtime), dir)
	if err != nil {
		return "", fmt.Errorf("runtime %s: %w", s.Runtime, err)
	}
	return id, nil
}

// writeContext writes the image's build context as a tar stream: the
// Dockerfile, the agent, its config, and the code under code/, every entry
// owned by root with the mode a VM's code disk gives it (folders 0755,
// files 0755 when executable, else 0644; symlinks as they are). codeDir is
// a private copy nothing else writes.
func writeContext(w io.Writer, dockerfile, config []byte, agentBin, codeDir string) error {
	tw := tar.NewWriter(w)
	file := func(name string, mode int64, size int64, body io.Reader) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: size, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := io.CopyN(tw, body, size)
		return err
	}
	if err := file("Dockerfile", 0o644, int64(len(dockerfile)), bytes.NewReader(dockerfile)); err != nil {
		return err
	}
	if err := file("function.json", 0o644, int64(len(config)), bytes.NewReader(config)); err != nil {
		return err
	}
	agent, err := os.Open(agentBin)
	if err != nil {
		return fmt.Errorf("guest agent (FAAS_AGENT_BIN): %w", err)
	}
	defer agent.Close()
	fi, err := agent.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("guest agent (FAAS_AGENT_BIN) %s: not a regular file (%v)", agentBin, err)
	}
	if err := file("agent", 0o755, fi.Size(), agent); err != nil {
		return err
	}
	err = filepath.WalkDir(codeDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(codeDir, p)
		if err != nil {
			return err
		}
		name := path.Join("code", filepath.ToSlash(rel))
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case info.IsDir():
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o755, Format: tar.FormatPAX})
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, Format: tar.FormatPAX})
		case info.Mode().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			return file(name, int64(codeMode(info.Mode())), info.Size(), f)
		}
		return fmt.Errorf("%s: not a file, folder or symlink", rel)
	})
	if err != nil {
		return fmt.Errorf("packing the code: %w", err)
	}
	return tw.Close()
}

// push pushes ref and returns the digest the registry gave the manifest
// ("sha256:...").
func push(ctx context.Context, d Docker, log *slog.Logger, ref string) (string, error) {
	auth, err := registryAuth(ref)
	if err != nil {
		return "", err
	}
	log = log.With("step", "push", "image", ref)
	log.Info("pushing image")
	rc, err := d.ImagePush(ctx, ref, dockerimage.PushOptions{RegistryAuth: auth})
	if err != nil {
		return "", fmt.Errorf("pushing image %s: %w", ref, err)
	}
	defer rc.Close()
	dec := json.NewDecoder(rc)
	digest := ""
	for {
		var m struct {
			Status      string `json:"status"`
			Error       string `json:"error"`
			ErrorDetail *struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
			Aux *struct {
				Digest string `json:"Digest"`
			} `json:"aux"`
		}
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return "", fmt.Errorf("pushing image %s: reading progress: %w", ref, err)
		}
		if m.ErrorDetail != nil && m.ErrorDetail.Message != "" {
			return "", fmt.Errorf("pushing image %s: %s", ref, m.ErrorDetail.Message)
		}
		if m.Error != "" {
			return "", fmt.Errorf("pushing image %s: %s", ref, m.Error)
		}
		if m.Aux != nil && m.Aux.Digest != "" {
			digest = m.Aux.Digest
		}
		if m.Status != "" {
			log.Debug("push status", "detail", m.Status)
		}
	}
	if !strings.HasPrefix(digest, "sha256:") {
		return "", fmt.Errorf("pushing image %s: the engine reported no digest", ref)
	}
	log.Info("image pushed", "digest", digest)
	return digest, nil
}
