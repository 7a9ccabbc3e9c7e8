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
// inside the folder and counted against maxSize. Every entry is owned by
// whoever copies and gets the mode a VM's code disk gives it.
func copyFolder(ctx context.Context, src, dst string, maxSize int64) error {
	if err := mkdir(dst); err != nil {
		return err
	}
	w := &fstree.Walker{MaxSize: maxSize}
	return w.Walk(ctx, src, func(e fstree.Entry) error {
		target := filepath.Join(dst, filepath.FromSlash(e.Rel))
		switch e.Type {
		case fstree.Dir:
			return mkdir(target)
		case fstree.Symlink:
			return os.Symlink(e.Target, target)
		case fstree.Regular:
			f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, codeMode(e.Mode))
			if err != nil {
				return err
			}
			_, _, err = w.Hash(e, f)
			if err == nil {
				err = f.Chmod(codeMode(e.Mode)) // whatever the umask
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			return err
		}
		return fmt.Errorf("%s: unexpected entry type", e.Rel)
	})
}

// mkdir creates a folder with mode 0755, whatever the umask.
func mkdir(path string) error {
	if err := os.Mkdir(path, 0o755); err != nil {
		return err
	}
	return os.Chmod(path, 0o755)
}

// codeMode is a code file's mode: readable by all, executable by all where
// the user made it executable (as on a VM's code disk).
func codeMode(m fs.FileMode) fs.FileMode {
	if m&0o111 != 0 {
		return 0o755
	}
	return 0o644
}
