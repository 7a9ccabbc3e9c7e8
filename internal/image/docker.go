package image

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	dockerimage "github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/faasvm/appliance/internal/fstree"
)

// Docker is the part of the Docker Engine API client the cache uses.
// *client.Client implements it.
type Docker interface {
	ImageBuild(ctx context.Context, buildContext io.Reader, options build.ImageBuildOptions) (build.ImageBuildResponse, error)
	ImageInspect(ctx context.Context, imageID string, opts ...client.ImageInspectOption) (dockerimage.InspectResponse, error)
	ImagePull(ctx context.Context, ref string, options dockerimage.PullOptions) (io.ReadCloser, error)
	ContainerCreate(ctx context.Context, config *container.Config, hostConfig *container.HostConfig, networkingConfig *network.NetworkingConfig, platform *ocispec.Platform, containerName string) (container.CreateResponse, error)
	ContainerExport(ctx context.Context, containerID string) (io.ReadCloser, error)
	ContainerRemove(ctx context.Context, containerID string, options container.RemoveOptions) error
}

var _ Docker = (*client.Client)(nil)

// DialDocker connects to the Docker engine named by the environment
// (DOCKER_HOST, else the local socket) and checks that it answers; the
// ping also settles the API version (the Debian engine speaks 1.41).
func DialDocker(ctx context.Context) (*client.Client, error) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("creating docker client: %w", err)
	}
	if _, err := cli.Ping(ctx); err != nil {
		cli.Close()
		return nil, fmt.Errorf("no docker engine answers at %s: %w", cli.DaemonHost(), err)
	}
	return cli, nil
}

// BuildError is a failed image build: the step that failed, the engine's
// message, and the last lines the build printed.
type BuildError struct {
	// Image is the tag being built.
	Image string
	// Step is the last step the build started, e.g. "Step 2/3 : RUN apt-get ...".
	Step string
	// Message is the engine's error message.
	Message string
	// Output holds the last lines of build output before the error.
	Output []string
}

func (e *BuildError) Error() string {
	msg := fmt.Sprintf("building image %s", e.Image)
	if e.Step != "" {
		msg += " failed at " + e.Step
	}
	msg += ": " + e.Message
	if len(e.Output) > 0 {
		msg += "\n" + strings.Join(e.Output, "\n")
	}
	return msg
}

// progressMessage is one JSON message of the engine's build and pull streams.
type progressMessage struct {
	Stream   string `json:"stream"`
	Status   string `json:"status"`
	ID       string `json:"id"`
	Progress *struct {
		Current int64 `json:"current"`
		Total   int64 `json:"total"`
	} `json:"progressDetail"`
	ErrorDetail *struct {
		Message string `json:"message"`
	} `json:"errorDetail"`
	Error string `json:"error"`
	Aux   *struct {
		ID string `json:"ID"`
	} `json:"aux"`
}

func (m *progressMessage) err() string {
	if m.ErrorDetail != nil && m.ErrorDetail.Message != "" {
		return m.ErrorDetail.Message
	}
	return m.Error
}

// decodeProgress calls fn for every message of an engine progress stream.
func decodeProgress(r io.Reader, fn func(*progressMessage) error) error {
	dec := json.NewDecoder(r)
	for {
		var m progressMessage
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("reading engine progress: %w", err)
		}
		if err := fn(&m); err != nil {
			return err
		}
	}
}

// tarContext writes dir as a build context: every file, directory and
// symlink under it, owned by root, with its permissions.
func tarContext(w io.Writer, dir string) error {
	tw := tar.NewWriter(w)
	if _, err := fstree.WriteTar(tw, dir, nil); err != nil {
		return fmt.Errorf("packing build context %s: %w", dir, err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("packing build context %s: %w", dir, err)
	}
	return nil
}
