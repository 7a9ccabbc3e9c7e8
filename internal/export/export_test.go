package export

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dockerimage "github.com/docker/docker/api/types/image"

	"github.com/faasvm/appliance/internal/function"
)

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{name: "manifests only", opts: Options{SkipImage: true}},
		{name: "image", opts: Options{AgentBin: "/agent", Repo: "registry.example.com:5000/team/fn"}},
		{name: "push without a repository", opts: Options{AgentBin: "/agent", Push: true}, wantErr: "pushing needs a repository"},
		{name: "push without an image", opts: Options{Repo: "r.example.com/x", Push: true, SkipImage: true}, wantErr: "pushing needs an image"},
		{name: "repository with a tag", opts: Options{AgentBin: "/agent", Repo: "r.example.com/x:v1"}, wantErr: `repository "r.example.com/x:v1"`},
		{name: "repository in capitals", opts: Options{AgentBin: "/agent", Repo: "Registry/X"}, wantErr: `repository "Registry/X"`},
		{name: "no agent", opts: Options{}, wantErr: "no guest agent binary"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.opts.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestExportManifestsOnly exports without an engine: the spec is the
// appliance's, an invalid folder fails with its reason, and a folder the
// cluster cannot take is told apart.
func TestExportManifestsOnly(t *testing.T) {
	d, template := applianceSettings(t)
	ex, err := New(Options{SkipImage: true, Manifest: ManifestOptions{RuntimeClass: DefaultRuntimeClass}, Defaults: d, Template: template}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	r, err := ex.Export(context.Background(), filepath.Join(repoRoot, "functions", "echo"))
	if err != nil {
		t.Fatal(err)
	}
	s := loadSpec(t, filepath.Join(repoRoot, "functions", "echo"))
	want, _, err := Manifest(s, DefaultRepo+"/echo:"+s.Version(), ManifestOptions{RuntimeClass: DefaultRuntimeClass})
	if err != nil {
		t.Fatal(err)
	}
	if string(r.Manifest) != string(want) || r.Image != DefaultRepo+"/echo:"+s.Version() || r.ImageID != "" || r.Pushed != "" {
		t.Errorf("got image %q id %q pushed %q, manifest\n%s\nwant the appliance spec's manifest naming %s/echo:%s", r.Image, r.ImageID, r.Pushed, r.Manifest, DefaultRepo, s.Version())
	}

	bad := writeFolder(t, "bad", map[string]string{"handler.py": "", "function.yaml": "timeout: 30\n"})
	_, err = ex.Export(context.Background(), bad)
	_, loadErr := function.Load(bad, d, template, function.EngineQEMU)
	if !errors.Is(err, function.ErrInvalid) || err.Error() != loadErr.Error() {
		t.Errorf("invalid folder: got %v, want the appliance's %v", err, loadErr)
	}
	digit := writeFolder(t, "9lives", map[string]string{"handler.py": ""})
	if _, err := ex.Export(context.Background(), digit); !errors.Is(err, ErrUnexportable) {
		t.Errorf("name starting with a digit: got %v, want ErrUnexportable", err)
	}
}

// countingDocker counts pushes made through a real engine.
type countingDocker struct {
	Docker
	pushes atomic.Int32
}

func (d *countingDocker) ImagePush(ctx context.Context, ref string, o dockerimage.PushOptions) (io.ReadCloser, error) {
	d.pushes.Add(1)
	return d.Docker.ImagePush(ctx, ref, o)
}

// startRegistry runs build/exportcheck's in-memory registry on loopback and
// returns its host:port.
func startRegistry(t *testing.T) string {
	t.Helper()
	cmd := exec.Command(toolBin(t, "FAAS_REGISTRY_BIN", "registry"))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	if err != nil || !ok || !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("registry: got %q (%v), want \"listening 127.0.0.1:PORT\"", line, err)
	}
	return addr
}

// TestExportImageAndPush builds a real image, checks its labels and
// entrypoint, shows that nothing is pushed without Push, then pushes to a
// registry on loopback and checks the manifest names the pushed digest.
func TestExportImageAndPush(t *testing.T) {
	cli := dialDocker(t)
	registry := startRegistry(t)
	d, template := applianceSettings(t)
	docker := &countingDocker{Docker: cli}
	opts := Options{
		Repo: registry + "/fn", Manifest: ManifestOptions{RuntimeClass: DefaultRuntimeClass},
		AgentBin: agentBin(t), RuntimesDir: filepath.Join(repoRoot, "guest", "runtimes"), MaxBody: 1 << 20,
		Defaults: d, Template: template,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := filepath.Join(repoRoot, "functions", "bash-hello")

	ex, err := New(opts, docker, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	r, err := ex.Export(ctx, dir)
	if err != nil {
		t.Fatalf("Export: %v", err)
	}
	removeImage(t, cli, r.Tag)
	if got := docker.pushes.Load(); got != 0 {
		t.Errorf("without Push: %d push(es) attempted, want none", got)
	}
	if code := registryStatus(t, registry, "/v2/fn/bash-hello/manifests/"+r.Version); code != http.StatusNotFound {
		t.Errorf("without Push: the registry answers %d for the tag, want 404", code)
	}
	s := loadSpec(t, dir)
	if r.Tag != registry+"/fn/bash-hello:"+s.Version() || r.Image != r.Tag || r.Pushed != "" {
		t.Errorf("without Push: tag %q image %q pushed %q, want the tag <repo>/bash-hello:%s everywhere", r.Tag, r.Image, r.Pushed, s.Version())
	}

	info, err := cli.ImageInspect(ctx, r.Tag)
	if err != nil {
		t.Fatal(err)
	}
	wantLabels := map[string]string{
		LabelFunction: "bash-hello", LabelVersion: s.Version(), LabelDigest: s.Digest, LabelMode: "exec",
		LabelRuntime: "bash", LabelPort: "8080", LabelHealthPort: "8081", LabelHealthPath: "/health",
	}
	for k, v := range wantLabels {
		if got := info.Config.Labels[k]; got != v {
			t.Errorf("label %s: got %q, want %q", k, got, v)
		}
	}
	if got, want := strings.Join(info.Config.Entrypoint, " "), AgentPath+" container -config "+ConfigPath+" -max-body 1048576"; got != want {
		t.Errorf("entrypoint: got %q, want %q", got, want)
	}
	if info.Config.User != strconv.Itoa(User)+":"+strconv.Itoa(User) || len(info.Config.Cmd) != 0 || info.Config.WorkingDir != CodeDir {
		t.Errorf("user %q cmd %q workdir %q: want %d:%d, no command, %s", info.Config.User, info.Config.Cmd, info.Config.WorkingDir, User, User, CodeDir)
	}

	opts.Push = true
	ex, err = New(opts, docker, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	pushed, err := ex.Export(ctx, dir)
	if err != nil {
		t.Fatalf("Export with Push: %v", err)
	}
	if got := docker.pushes.Load(); got != 1 {
		t.Errorf("with Push: %d push(es), want 1", got)
	}
	digest, ok := strings.CutPrefix(pushed.Pushed, registry+"/fn/bash-hello@")
	if !ok || !strings.HasPrefix(digest, "sha256:") || pushed.Image != pushed.Pushed {
		t.Fatalf("with Push: pushed %q image %q, want <repo>/bash-hello@sha256:... in both", pushed.Pushed, pushed.Image)
	}
	if !strings.Contains(string(pushed.Manifest), "image: "+pushed.Pushed+"\n") {
		t.Errorf("the manifest does not run the pushed digest %s:\n%s", pushed.Pushed, pushed.Manifest)
	}
	req, _ := http.NewRequest("HEAD", "http://"+registry+"/v2/fn/bash-hello/manifests/"+pushed.Version, nil)
	req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Content-Digest") != digest {
		t.Errorf("registry: %d, digest %q for the tag, want 200 and %s", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), digest)
	}
}

func registryStatus(t *testing.T, registry, path string) int {
	t.Helper()
	resp, err := http.Get("http://" + registry + path)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// agentBin is the guest agent `make test` builds (FAAS_AGENT_BIN).
func agentBin(t *testing.T) string {
	t.Helper()
	return toolBin(t, "FAAS_AGENT_BIN", "agent")
}
