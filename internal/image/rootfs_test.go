package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	dockerimage "github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/faasvm/appliance/guest/protocol"
)

// fakeDocker is an engine that builds, pulls and exports canned results.
type fakeDocker struct {
	mu sync.Mutex

	images       map[string]string // reference -> image ID
	buildStream  string            // JSON messages ImageBuild answers with
	buildErr     error
	buildTag     string            // image ID the build gives its tag
	buildContext map[string]string // last build context: name -> content
	pullStream   string
	pullAdds     string // image ID a pull gives the reference ("" = none)
	export       []byte
	exportErr    error

	calls   map[string]int
	created []string
	removed []string
}

var _ Docker = (*fakeDocker)(nil)

func newFakeDocker() *fakeDocker {
	return &fakeDocker{images: map[string]string{}, calls: map[string]int{}}
}

func (f *fakeDocker) count(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[name]
}

func (f *fakeDocker) ImageBuild(_ context.Context, buildContext io.Reader, opts build.ImageBuildOptions) (build.ImageBuildResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["ImageBuild"]++
	f.buildContext = map[string]string{}
	tr := tar.NewReader(buildContext)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return build.ImageBuildResponse{}, fmt.Errorf("reading build context: %w", err)
		}
		b, _ := io.ReadAll(tr)
		f.buildContext[hdr.Name] = string(b)
	}
	if f.buildErr != nil {
		return build.ImageBuildResponse{}, f.buildErr
	}
	if f.buildTag != "" {
		for _, tag := range opts.Tags {
			f.images[tag] = f.buildTag
		}
	}
	return build.ImageBuildResponse{Body: io.NopCloser(strings.NewReader(f.buildStream))}, nil
}

func (f *fakeDocker) ImageInspect(_ context.Context, ref string, _ ...client.ImageInspectOption) (dockerimage.InspectResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["ImageInspect"]++
	id, ok := f.images[ref]
	if !ok {
		return dockerimage.InspectResponse{}, fmt.Errorf("no such image: %s: %w", ref, cerrdefs.ErrNotFound)
	}
	return dockerimage.InspectResponse{ID: id}, nil
}

func (f *fakeDocker) ImagePull(_ context.Context, ref string, _ dockerimage.PullOptions) (io.ReadCloser, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["ImagePull"]++
	if f.pullAdds != "" {
		f.images[ref] = f.pullAdds
	}
	return io.NopCloser(strings.NewReader(f.pullStream)), nil
}

func (f *fakeDocker) ContainerCreate(_ context.Context, cfg *container.Config, _ *container.HostConfig, _ *network.NetworkingConfig, _ *ocispec.Platform, _ string) (container.CreateResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["ContainerCreate"]++
	found := false
	for _, id := range f.images {
		found = found || id == cfg.Image
	}
	if !found {
		return container.CreateResponse{}, fmt.Errorf("no such image %s: %w", cfg.Image, cerrdefs.ErrNotFound)
	}
	id := fmt.Sprintf("c%d", len(f.created)+1)
	f.created = append(f.created, id)
	return container.CreateResponse{ID: id}, nil
}

func (f *fakeDocker) ContainerExport(_ context.Context, id string) (io.ReadCloser, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["ContainerExport"]++
	if f.exportErr != nil {
		return nil, f.exportErr
	}
	return io.NopCloser(bytes.NewReader(f.export)), nil
}

func (f *fakeDocker) ContainerRemove(_ context.Context, id string, opts container.RemoveOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["ContainerRemove"]++
	if !opts.Force {
		return errors.New("remove without force")
	}
	f.removed = append(f.removed, id)
	return nil
}

const (
	fakeID1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	fakeID2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

// jsonLines joins engine progress messages.
func jsonLines(msgs ...string) string { return strings.Join(msgs, "\r\n") + "\r\n" }

func buildOK(id string) string {
	return jsonLines(
		`{"stream":"Step 1/2 : FROM debian:bookworm-slim\n"}`,
		`{"stream":" ---\u003e b0ca12964084\n"}`,
		`{"stream":"Step 2/2 : LABEL org.faasvm.runtime=bash\n"}`,
		`{"stream":" ---\u003e Running in 0123\n"}`,
		`{"aux":{"ID":"`+id+`"}}`,
		`{"stream":"Successfully built 1111\n"}`,
	)
}

// exportTar is what an engine exports: a small Debian-like tree with the
// kinds of entries real images hold.
func exportTar(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h *tar.Header, content string) {
		h.Size = int64(len(content))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, content); err != nil {
			t.Fatal(err)
		}
	}
	add(&tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755}, "")
	add(&tar.Header{Name: "usr/", Typeflag: tar.TypeDir, Mode: 0o755}, "")
	add(&tar.Header{Name: "usr/bin/", Typeflag: tar.TypeDir, Mode: 0o755}, "")
	add(&tar.Header{Name: "usr/bin/bash", Typeflag: tar.TypeReg, Mode: 0o755}, "#!fake bash\n")
	add(&tar.Header{Name: "usr/bin/rbash", Typeflag: tar.TypeLink, Linkname: "usr/bin/bash"}, "")
	add(&tar.Header{Name: "bin", Typeflag: tar.TypeSymlink, Linkname: "usr/bin", Mode: 0o777}, "")
	add(&tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755}, "")
	add(&tar.Header{Name: "etc/shadow", Typeflag: tar.TypeReg, Mode: 0o640, Gid: 42}, "root:*:1::::::\n")
	add(&tar.Header{Name: "home/", Typeflag: tar.TypeDir, Mode: 0o755}, "")
	add(&tar.Header{Name: "home/app/", Typeflag: tar.TypeDir, Mode: 0o700, Uid: 1000, Gid: 1000}, "")
	add(&tar.Header{Name: "dev/", Typeflag: tar.TypeDir, Mode: 0o755}, "")
	add(&tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3}, "")
	add(&tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777}, "")
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func writeRuntimeDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "Dockerfile"), "FROM debian:bookworm-slim\nLABEL org.faasvm.runtime=bash\n", 0o644)
	mustWrite(t, filepath.Join(dir, "files", "bootstrap.sh"), "#!/bin/sh\n", 0o755)
	return dir
}

func TestRuntimeRootFS(t *testing.T) {
	ctx := context.Background()
	fd := newFakeDocker()
	fd.buildStream, fd.buildTag, fd.export = buildOK(fakeID1), fakeID1, exportTar(t)
	c := newTestCache(t, "", fd)
	dir := writeRuntimeDir(t)

	fs, err := c.RuntimeRootFS(ctx, "bash", dir)
	if err != nil {
		t.Fatalf("RuntimeRootFS: %v", err)
	}
	wantPath := filepath.Join(c.Dir(), "rootfs", strings.TrimPrefix(fakeID1, "sha256:")+".ext4")
	if fs.Path != wantPath || fs.ImageID != fakeID1 || fs.Image != "faasvm/runtime-bash:latest" {
		t.Errorf("got %+v, want path %s, image faasvm/runtime-bash:latest, ID %s", fs, wantPath, fakeID1)
	}
	if got := fd.buildContext["Dockerfile"]; !strings.HasPrefix(got, "FROM debian:bookworm-slim") {
		t.Errorf("build context Dockerfile: got %q", got)
	}
	if got := fd.buildContext["files/bootstrap.sh"]; got != "#!/bin/sh\n" {
		t.Errorf("build context files/bootstrap.sh: got %q, want %q", got, "#!/bin/sh\n")
	}
	fi, err := os.Stat(fs.Path)
	if err != nil || fi.Mode().Perm() != 0o444 || fi.Size() != fs.Bytes {
		t.Errorf("file: got %v (%v), want mode 0444 and size %d", fi, err, fs.Bytes)
	}
	if fs.Bytes < rootFSMargin {
		t.Errorf("size: got %d, want at least the %d margin", fs.Bytes, rootFSMargin)
	}
	if label, err := ext4Label(fs.Path); err != nil || label != protocol.RootFSLabel {
		t.Errorf("label: got %q (%v), want %q", label, err, protocol.RootFSLabel)
	}
	checks := []struct{ request, want string }{
		{"cat /usr/bin/bash", "#!fake bash\n"},
		{"cat /bin/bash", "#!fake bash\n"},
		{"stat /usr/bin/rbash", "Links: 2"},
		{"stat /bin", `Fast link dest: "usr/bin"`},
		{"stat /home/app", "User:  1000   Group:  1000"},
		{"stat /home/app", "Mode:  0700"},
		{"stat /etc/shadow", "Group:    42"},
		{"stat /dev/null", "Type: character special"},
		{"stat /tmp", "Mode:  01777"},
	}
	for _, ck := range checks {
		t.Run(ck.request, func(t *testing.T) {
			if out, errOut := debugfs(t, fs.Path, ck.request); !strings.Contains(out, ck.want) {
				t.Errorf("got\n%s%s\nwant it to contain %q", out, errOut, ck.want)
			}
		})
	}
	if len(fd.created) != 1 || len(fd.removed) != 1 || fd.removed[0] != fd.created[0] {
		t.Errorf("containers: created %v, removed %v, want the one created removed", fd.created, fd.removed)
	}

	again, err := c.RuntimeRootFS(ctx, "bash", dir)
	if err != nil || again != fs {
		t.Errorf("second call: got %+v, %v, want %+v", again, err, fs)
	}
	if n := fd.count("ContainerExport"); n != 1 {
		t.Errorf("exports after the second call: got %d, want 1 (cache hit)", n)
	}
	if n := fd.count("ImageBuild"); n != 2 {
		t.Errorf("builds: got %d, want 2 (each call asks the engine)", n)
	}

	fd.buildStream, fd.buildTag = buildOK(fakeID2), fakeID2
	changed, err := c.RuntimeRootFS(ctx, "bash", dir)
	if err != nil || changed.ImageID != fakeID2 || changed.Path == fs.Path {
		t.Errorf("after the image changed: got %+v, %v, want a new file for %s", changed, err, fakeID2)
	}
	if left, _ := os.ReadDir(filepath.Join(c.Dir(), "tmp")); len(left) != 0 {
		t.Errorf("tmp: got %d leftovers, want 0", len(left))
	}
}

// TestRuntimeRootFSWithoutDocker: a cache with no engine (the socket not
// mounted) boots the root filesystem an earlier run made for the runtime,
// and says what to do when there is none; images named by image: need the
// engine.
func TestRuntimeRootFSWithoutDocker(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	noEngine := newTestCache(t, dir, nil)
	if _, err := noEngine.RuntimeRootFS(ctx, "bash", writeRuntimeDir(t)); err == nil || !strings.Contains(err.Error(), "no root filesystem made by an earlier run") {
		t.Fatalf("before any build: got %v, want the reason", err)
	}
	fd := newFakeDocker()
	fd.buildStream, fd.buildTag, fd.export = buildOK(fakeID1), fakeID1, exportTar(t)
	made, err := newTestCache(t, dir, fd).RuntimeRootFS(ctx, "bash", writeRuntimeDir(t))
	if err != nil {
		t.Fatal(err)
	}
	got, err := noEngine.RuntimeRootFS(ctx, "bash", writeRuntimeDir(t))
	if err != nil || got != made {
		t.Errorf("without the engine: got %+v, %v, want the earlier %+v", got, err, made)
	}
	if _, err := noEngine.RuntimeRootFS(ctx, "node", writeRuntimeDir(t)); err == nil {
		t.Error("a runtime never made: got no error")
	}
	if _, err := noEngine.ImageRootFS(ctx, "python:3.12-slim"); err == nil || !strings.Contains(err.Error(), "no docker engine") {
		t.Errorf("an image: got %v, want it refused for want of an engine", err)
	}
	if err := os.Remove(made.Path); err != nil {
		t.Fatal(err)
	}
	if _, err := noEngine.RuntimeRootFS(ctx, "bash", writeRuntimeDir(t)); err == nil || !strings.Contains(err.Error(), "is gone") {
		t.Errorf("its file removed: got %v, want the reason", err)
	}
}

func TestRuntimeRootFSErrors(t *testing.T) {
	failing := jsonLines(
		`{"stream":"Step 1/2 : FROM debian:bookworm-slim\n"}`,
		`{"stream":" ---\u003e b0ca12964084\n"}`,
		`{"stream":"Step 2/2 : RUN apt-get install -y nosuchpackage\n"}`,
		`{"stream":" ---\u003e Running in 0123\n"}`,
		`{"stream":"E: Unable to locate package nosuchpackage\n"}`,
		`{"errorDetail":{"code":100,"message":"The command '/bin/sh -c apt-get install -y nosuchpackage' returned a non-zero code: 100"},"error":"The command '/bin/sh -c apt-get install -y nosuchpackage' returned a non-zero code: 100"}`,
	)
	tests := []struct {
		name    string
		runtime string
		dir     func(t *testing.T) string
		setup   func(fd *fakeDocker)
		want    []string
		isBuild bool
	}{
		{
			name: "failing step", runtime: "python3", dir: writeRuntimeDir,
			setup:   func(fd *fakeDocker) { fd.buildStream = failing },
			want:    []string{"runtime python3", "Step 2/2 : RUN apt-get install -y nosuchpackage", "non-zero code: 100", "E: Unable to locate package nosuchpackage"},
			isBuild: true,
		},
		{
			name: "engine refuses the build", runtime: "node", dir: writeRuntimeDir,
			setup: func(fd *fakeDocker) { fd.buildErr = errors.New("engine says no") },
			want:  []string{"runtime node", "engine says no"},
		},
		{
			name: "no Dockerfile", runtime: "bash", dir: func(t *testing.T) string { return t.TempDir() },
			setup: func(*fakeDocker) {},
			want:  []string{"runtime bash", "Dockerfile"},
		},
		{
			name: "bad runtime name", runtime: "Bad/Name", dir: writeRuntimeDir,
			setup: func(*fakeDocker) {},
			want:  []string{`runtime name "Bad/Name"`},
		},
		{
			name: "export fails", runtime: "bash", dir: writeRuntimeDir,
			setup: func(fd *fakeDocker) {
				fd.buildStream, fd.buildTag, fd.exportErr = buildOK(fakeID1), fakeID1, errors.New("export broke")
			},
			want: []string{"runtime bash", "exporting container c1", "export broke"},
		},
		{
			name: "export is not a tar", runtime: "bash", dir: writeRuntimeDir,
			setup: func(fd *fakeDocker) {
				fd.buildStream, fd.buildTag = buildOK(fakeID1), fakeID1
				fd.export = bytes.Repeat([]byte("garbage!"), 200)
			},
			want: []string{"runtime bash", "making root filesystem", "export"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fd := newFakeDocker()
			tt.setup(fd)
			c := newTestCache(t, "", fd)
			_, err := c.RuntimeRootFS(context.Background(), tt.runtime, tt.dir(t))
			if err == nil {
				t.Fatalf("got no error, want one containing %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got error %q, want it to contain %q", err, w)
				}
			}
			var be *BuildError
			if errors.As(err, &be) != tt.isBuild {
				t.Errorf("errors.As BuildError: got %v, want %v", !tt.isBuild, tt.isBuild)
			}
			if len(fd.removed) != len(fd.created) {
				t.Errorf("containers: created %v, removed %v, want all removed", fd.created, fd.removed)
			}
			for _, d := range []string{"rootfs", "tmp"} {
				if left, _ := os.ReadDir(filepath.Join(c.Dir(), d)); len(left) != 0 {
					t.Errorf("%s: got %d entries, want 0", d, len(left))
				}
			}
		})
	}
}

func TestImageRootFS(t *testing.T) {
	tests := []struct {
		name      string
		setup     func(fd *fakeDocker)
		wantPulls int
		wantErr   string
	}{
		{
			name:      "image present",
			setup:     func(fd *fakeDocker) { fd.images["python:3.12-slim"] = fakeID1 },
			wantPulls: 0,
		},
		{
			name: "image pulled",
			setup: func(fd *fakeDocker) {
				fd.pullAdds = fakeID1
				fd.pullStream = jsonLines(
					`{"status":"Pulling from library/python","id":"3.12-slim"}`,
					`{"status":"Downloading","progressDetail":{"current":100,"total":1000},"id":"abc"}`,
					`{"status":"Pull complete","id":"abc"}`,
					`{"status":"Status: Downloaded newer image for python:3.12-slim"}`,
				)
			},
			wantPulls: 1,
		},
		{
			name: "pull fails",
			setup: func(fd *fakeDocker) {
				fd.pullStream = jsonLines(`{"errorDetail":{"message":"pull access denied"},"error":"pull access denied"}`)
			},
			wantPulls: 1,
			wantErr:   "pulling image python:3.12-slim: pull access denied",
		},
		{
			name:      "pull leaves no image",
			setup:     func(fd *fakeDocker) { fd.pullStream = jsonLines(`{"status":"done"}`) },
			wantPulls: 1,
			wantErr:   "inspecting image python:3.12-slim",
		},
		{
			name:    "engine gives an odd image ID",
			setup:   func(fd *fakeDocker) { fd.images["python:3.12-slim"] = "sha256:../../etc" },
			wantErr: "unexpected ID",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fd := newFakeDocker()
			fd.export = exportTar(t)
			tt.setup(fd)
			c := newTestCache(t, "", fd)
			fs, err := c.ImageRootFS(context.Background(), "python:3.12-slim")
			if n := fd.count("ImagePull"); n != tt.wantPulls {
				t.Errorf("pulls: got %d, want %d", n, tt.wantPulls)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ImageRootFS: %v", err)
			}
			if fs.ImageID != fakeID1 || fs.Image != "python:3.12-slim" {
				t.Errorf("got %+v, want image python:3.12-slim ID %s", fs, fakeID1)
			}
			if out, _ := debugfs(t, fs.Path, "cat /usr/bin/bash"); out != "#!fake bash\n" {
				t.Errorf("content: got %q, want %q", out, "#!fake bash\n")
			}
		})
	}
}

func TestRootFSConcurrentCallsExportOnce(t *testing.T) {
	fd := newFakeDocker()
	fd.images["img"], fd.export = fakeID1, exportTar(t)
	c := newTestCache(t, "", fd)
	var wg sync.WaitGroup
	paths := make([]string, 4)
	errs := make([]error, 4)
	for i := range paths {
		wg.Go(func() {
			fs, err := c.ImageRootFS(context.Background(), "img")
			paths[i], errs[i] = fs.Path, err
		})
	}
	wg.Wait()
	for i := range paths {
		if errs[i] != nil || paths[i] != paths[0] {
			t.Errorf("call %d: got %s, %v, want %s", i, paths[i], errs[i], paths[0])
		}
	}
	if n := fd.count("ContainerExport"); n != 1 {
		t.Errorf("exports: got %d, want 1", n)
	}
}

func TestImageSize(t *testing.T) {
	tests := []struct {
		content, margin, want int64
	}{
		{0, 64 << 20, 64 << 20},
		{100 << 20, 64 << 20, 194 << 20},
		{1, 0, 1 << 20},
		{10 << 20, 16 << 20, 29 << 20}, // 13 MiB + 16 MiB
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.content, "+", tt.margin), func(t *testing.T) {
			if got := imageSize(tt.content, tt.margin); got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
		})
	}
}

// TestExportToTarFile covers the path taken with e2fsprogs >= 1.47.1 (whose
// mke2fs -d reads tarballs): the export is saved whole and summed up.
func TestExportToTarFile(t *testing.T) {
	c := newTestCache(t, "", nil)
	export := exportTar(t)
	padded := append(bytes.Clone(export), make([]byte, 10240)...) // engines pad the stream
	path, stats, err := c.exportToTarFile(bytes.NewReader(padded))
	if err != nil {
		t.Fatalf("exportToTarFile: %v", err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, padded) {
		t.Errorf("saved tar: got %d bytes, want the %d streamed", len(got), len(padded))
	}
	// 13 entries, one of them a hard link; every entry takes one block.
	if stats.entries != 12 || stats.bytes != 12*4096 {
		t.Errorf("stats: got %d entries %d bytes, want 12 entries %d bytes", stats.entries, stats.bytes, 12*4096)
	}
}
