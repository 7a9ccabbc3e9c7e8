package image

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

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
	return d.Cache.DepsDisk(ctx, runtime, "sha256:"+id, dir)
}
