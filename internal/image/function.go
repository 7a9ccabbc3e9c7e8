package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/docker/docker/client"
	"golang.org/x/sys/unix"
)

// ErrNoSpace is wrapped by the error of a disk that could not be made
// because the state directory's file system is full. Nothing half-made is
// left in the cache; the deploy is retried (see the controller).
var ErrNoSpace = errors.New("the state directory's disk is full")

// ErrEngineUnreachable is wrapped by the error of a disk that could not be
// made because the Docker engine does not answer.
var ErrEngineUnreachable = errors.New("the docker engine does not answer")

// Transient reports whether err (from RootFS, CodeDisk or DepsDisk) may go
// away without the function changing: a full disk, an engine away.
func Transient(err error) bool {
	return errors.Is(err, ErrNoSpace) || errors.Is(err, ErrEngineUnreachable)
}

// Classify wraps err with ErrNoSpace or ErrEngineUnreachable when it is
// one, saying what to do; dir is the directory whose file system it was
// (its free space is reported).
func Classify(err error, dir string) error {
	if err == nil || Transient(err) {
		return err
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) ||
		strings.Contains(strings.ToLower(err.Error()), "no space left on device") {
		free := "unknown"
		var st unix.Statfs_t
		if unix.Statfs(dir, &st) == nil {
			free = fmt.Sprintf("%d MiB", int64(st.Bavail)*int64(st.Bsize)>>20)
		}
		return fmt.Errorf("%w (%s free in %s): free space there (unused versions go by themselves, see FAAS_KEEP_VERSIONS); the deploy is retried: %w",
			ErrNoSpace, free, dir, err)
	}
	if client.IsErrConnectionFailed(err) || strings.Contains(err.Error(), "Cannot connect to the Docker daemon") {
		return fmt.Errorf("%w: check that dockerd runs and its socket is mounted (DOCKER_HOST); the deploy is retried: %w", ErrEngineUnreachable, err)
	}
	return err
}

// FunctionDisks gives a function the two disks its VMs boot from: the root
// filesystem of its runtime (or of the image it names) and a snapshot of its
// code. RuntimesDir holds one Docker build context per runtime.
type FunctionDisks struct {
	*Cache
	RuntimesDir string
}

// RootFS returns the root filesystem image path for a function: the image
// ref when not empty, else the runtime's own image built from RuntimesDir.
func (d FunctionDisks) RootFS(ctx context.Context, runtime, ref string) (string, error) {
	p, err := d.rootFS(ctx, runtime, ref)
	return p, Classify(err, d.dir)
}

// CodeDisk is Cache.CodeDisk with its errors classified (ErrNoSpace).
func (d FunctionDisks) CodeDisk(ctx context.Context, dir string) (string, error) {
	p, err := d.Cache.CodeDisk(ctx, dir)
	return p, Classify(err, d.dir)
}

func (d FunctionDisks) rootFS(ctx context.Context, runtime, ref string) (string, error) {
	if ref != "" {
		fs, err := d.ImageRootFS(ctx, ref)
		if err != nil {
			return "", err
		}
		return fs.Path, nil
	}
	dir := filepath.Join(d.RuntimesDir, runtime)
	if _, err := os.Stat(filepath.Join(dir, "Dockerfile")); err != nil {
		return "", fmt.Errorf("runtime %q has no Dockerfile in %s (check FAAS_RUNTIMES_DIR): %w", runtime, d.RuntimesDir, err)
	}
	fs, err := d.RuntimeRootFS(ctx, runtime, dir)
	if err != nil {
		return "", err
	}
	return fs.Path, nil
}

// DepsDisk returns the dependency disk of the version snapshot dir for
// runtime, installed on top of the image the root filesystem rootfs was
// made from (its file name is the image ID), or "" when the folder has no
// requirements.txt (python3) or package.json (node). See Cache.DepsDisk.
func (d FunctionDisks) DepsDisk(ctx context.Context, runtime, rootfs, dir string) (string, error) {
	id := strings.TrimSuffix(filepath.Base(rootfs), ".ext4")
	p, err := d.Cache.DepsDisk(ctx, runtime, "sha256:"+id, dir)
	return p, Classify(err, d.dir)
}
