package export

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	dcontainer "github.com/docker/docker/api/types/container"
	dockerimage "github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/docker/go-connections/nat"

	"github.com/faasvm/appliance/internal/image"
)

// These tests use the real Docker engine that `make test` starts
// (scripts/docker-engine.sh); without one they fail, except under -short.

func dialDocker(t testing.TB) *client.Client {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: needs the Docker engine (make test runs it)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli, err := image.DialDocker(ctx)
	if err != nil {
		t.Fatalf("%v\nrun `make test`, which starts the engine (scripts/docker-engine.sh) and makes the base image", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// running is one exported image running as a container.
type running struct {
	id            string
	data, control string // http://127.0.0.1:port
}

// runImage starts ref the way a cluster would, without privileges: every
// capability dropped, no privilege escalation, the image's own unprivileged
// user; both ports published on 127.0.0.1 only. The container is removed
// at the end of the test.
func runImage(t testing.TB, cli *client.Client, ref string) *running {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dataPort := nat.Port(strconv.Itoa(DataPort) + "/tcp")
	controlPort := nat.Port(strconv.Itoa(ControlPort) + "/tcp")
	loopback := []nat.PortBinding{{HostIP: "127.0.0.1", HostPort: ""}}
	created, err := cli.ContainerCreate(ctx,
		&dcontainer.Config{Image: ref, ExposedPorts: nat.PortSet{dataPort: {}, controlPort: {}}},
		&dcontainer.HostConfig{
			PortBindings: nat.PortMap{dataPort: loopback, controlPort: loopback},
			CapDrop:      []string{"ALL"},
			SecurityOpt:  []string{"no-new-privileges"},
		}, nil, nil, "")
	if err != nil {
		t.Fatalf("creating a container of %s: %v", ref, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if t.Failed() {
			if rc, err := cli.ContainerLogs(ctx, created.ID, dcontainer.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: "30"}); err == nil {
				b, _ := io.ReadAll(rc)
				rc.Close()
				t.Logf("container %s (%s) log:\n%s", created.ID[:12], ref, b)
			}
		}
		if err := cli.ContainerRemove(ctx, created.ID, dcontainer.RemoveOptions{Force: true}); err != nil {
			t.Errorf("removing container %s: %v", created.ID[:12], err)
		}
	})
	if err := cli.ContainerStart(ctx, created.ID, dcontainer.StartOptions{}); err != nil {
		t.Fatalf("starting a container of %s: %v", ref, err)
	}
	info, err := cli.ContainerInspect(ctx, created.ID)
	if err != nil {
		t.Fatal(err)
	}
	r := &running{id: created.ID}
	for port, dst := range map[nat.Port]*string{dataPort: &r.data, controlPort: &r.control} {
		b := info.NetworkSettings.Ports[port]
		if len(b) == 0 || b[0].HostIP != "127.0.0.1" {
			t.Fatalf("port %s of %s: published as %v, want on 127.0.0.1", port, ref, b)
		}
		*dst = "http://127.0.0.1:" + b[0].HostPort
	}
	return r
}

// waitHealthy polls the container's health endpoint until it answers 200.
func waitHealthy(t testing.TB, r *running, bound time.Duration) {
	t.Helper()
	deadline := time.Now().Add(bound)
	last := ""
	for {
		resp, err := http.Get(r.control + HealthPath)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = strconv.Itoa(resp.StatusCode) + " " + string(b)
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s not healthy within %s: %s", r.id[:12], bound, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// removeImage removes ref at the end of the test.
func removeImage(t testing.TB, cli *client.Client, ref string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := cli.ImageRemove(ctx, ref, dockerimage.RemoveOptions{Force: true, PruneChildren: true}); err != nil && !isNotFound(err) {
			t.Errorf("removing image %s: %v", ref, err)
		}
	})
}

func isNotFound(err error) bool { return cerrdefs.IsNotFound(err) }
