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
		Name:    s.Name,
		Mode:    s.Mode,
		Runtime: s.Runtime,
		Handler: s.Handler,
		Command: s.Command,
		Env:     s.Env,
		Timeout: protocol.Duration(s.Timeout),
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
	id, err := image.BuildImage(ctx, d, log, image.RuntimeImageTag(s.Runtime), dir, nil)
	if err != nil {
		return "", fmt.Errorf("runtime %s: %w", s.Runtime, err)
	}
	return id, nil
}

// buildContext fills dir with the image's build context.
func buildContext(dir string, src *source, base, agentBin string, maxBody int64) error {
	if err := copyFile(agentBin, filepath.Join(dir, "agent"), 0o755); err != nil {
		return fmt.Errorf("guest agent (FAAS_AGENT_BIN): %w", err)
	}
	cfg, err := json.MarshalIndent(agentConfig(src.spec), "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the agent config: %w", err)
	}
	if err := writeFile(filepath.Join(dir, "function.json"), append(cfg, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.Rename(src.code, filepath.Join(dir, "code")); err != nil {
		return fmt.Errorf("placing the code: %w", err)
	}
	src.code = filepath.Join(dir, "code")
	return writeFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile(base, maxBody)), 0o644)
}

func writeFile(path string, b []byte, mode os.FileMode) error {
	if err := os.WriteFile(path, b, mode); err != nil {
		return err
	}
	return os.Chmod(path, mode)
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Chmod(mode); err != nil {
		out.Close()
		return err
	}
	return out.Close()
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
