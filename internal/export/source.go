package export

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	api "github.com/weaveworks/ignite/pkg/apis/ignite"

	"github.com/faasvm/appliance/internal/fstree"
	"github.com/faasvm/appliance/internal/function"
)

// ErrChanged is matched by the error for a folder that changed while it was
// being exported.
var ErrChanged = errors.New("function folder changed while it was exported")

// source is one version of a function: its spec and a private copy of the
// folder that the spec was read from, which is what goes into the image.
type source struct {
	spec *function.Spec
	// code is the private copy (a folder named like the function).
	code string
}

// loadSource validates the folder dir exactly as the appliance does (the
// same function.Load, defaults and template, so an invalid folder gets the
// appliance's reason), copies it to a private folder under work by the
// rules every copy into a VM follows, and loads the copy again: the spec,
// its digest and the image's code all come from the copy, and a copy whose
// digest differs from the folder's (it changed meanwhile) is refused.
func loadSource(ctx context.Context, dir, work string, d function.Defaults, template *api.VM) (*source, error) {
	spec, err := function.Load(dir, d, template, function.EngineQEMU)
	if err != nil {
		return nil, err
	}
	copyDir := filepath.Join(work, spec.Name)
	if err := copyFolder(ctx, dir, copyDir, d.MaxSize); err != nil {
		return nil, fmt.Errorf("function %s: copying the folder: %w", spec.Name, err)
	}
	copied, err := function.Load(copyDir, d, template, function.EngineQEMU)
	if err != nil {
		return nil, fmt.Errorf("function %s: %w: %w", spec.Name, ErrChanged, err)
	}
	if copied.Digest != spec.Digest {
		return nil, fmt.Errorf("function %s: %w (version %s, then %s); export it again", spec.Name, ErrChanged, spec.Version(), copied.Version())
	}
	copied.Dir = spec.Dir // name the user's folder, not the copy
	return &source{spec: copied, code: copyDir}, nil
}

// copyFolder copies src to dst (which must not exist) with fstree's rules:
// no special files, symlinks kept only when they stay inside, files read
// inside the folder and counted against maxSize. Permissions are kept (the
// version digest covers them); owners are whoever copies.
func copyFolder(ctx context.Context, src, dst string, maxSize int64) error {
	if err := os.Mkdir(dst, 0o700); err != nil {
		return err
	}
	var dirs []fstree.Entry
	w := &fstree.Walker{MaxSize: maxSize}
	err := w.Walk(ctx, src, func(e fstree.Entry) error {
		target := filepath.Join(dst, filepath.FromSlash(e.Rel))
		switch e.Type {
		case fstree.Dir:
			dirs = append(dirs, e) // writable until the files are in
			return os.Mkdir(target, 0o700)
		case fstree.Symlink:
			return os.Symlink(e.Target, target)
		case fstree.Regular:
			f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return err
			}
			_, _, err = w.Hash(e, f)
			if err == nil {
				err = f.Chmod(e.Mode.Perm())
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			return err
		}
		return fmt.Errorf("%s: unexpected entry type", e.Rel)
	})
	if err != nil {
		return err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Chmod(filepath.Join(dst, filepath.FromSlash(dirs[i].Rel)), dirs[i].Mode.Perm()); err != nil {
			return err
		}
	}
	return nil
}

// codeMode is a code file's mode: readable by all, executable by all where
// the user made it executable (as on a VM's code disk).
func codeMode(m fs.FileMode) fs.FileMode {
	if m&0o111 != 0 {
		return 0o755
	}
	return 0o644
}
