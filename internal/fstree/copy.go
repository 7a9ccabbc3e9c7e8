package fstree

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Copied is one entry of a copy, as it is in the copy.
type Copied struct {
	Rel    string      // slash-separated path below the copy's root
	Type   Type        // Regular, Dir or Symlink
	Mode   fs.FileMode // type bits and the permissions of the copy (see CopyMode)
	Size   int64       // Regular: bytes copied
	Sum    [32]byte    // Regular: sha256 of the bytes copied
	Target string      // Symlink: its target
}

// CopyMode is the mode an entry of type t and mode m gets in a copy, the
// same for everyone: folders 0755, files 0644, or 0755 when the user made
// them executable, symlinks 0777. Owners and other bits are not kept.
func CopyMode(t Type, m fs.FileMode) fs.FileMode {
	switch {
	case t == Dir:
		return fs.ModeDir | 0o755
	case t == Symlink:
		return fs.ModeSymlink | 0o777
	case m&0o111 != 0:
		return 0o755
	}
	return 0o644
}

// Copy walks src by the rules (see Walk) and copies it into dst, an empty
// folder the caller made and nobody else writes, giving every entry its
// CopyMode and hashing each file as it is copied, so the result describes
// exactly the bytes of the copy. The copy is the snapshot later readers
// use: it never changes, whatever happens to src.
func (w *Walker) Copy(ctx context.Context, src, dst string) ([]Copied, error) {
	if err := os.Chmod(dst, 0o755); err != nil {
		return nil, fmt.Errorf("snapshot of %s: %w", src, err)
	}
	var out []Copied
	err := w.Walk(ctx, src, func(e Entry) error {
		c := Copied{Rel: e.Rel, Type: e.Type, Mode: CopyMode(e.Type, e.Mode), Target: e.Target}
		to := filepath.Join(dst, filepath.FromSlash(e.Rel))
		switch e.Type {
		case Dir:
			if err := os.Mkdir(to, c.Mode.Perm()); err != nil {
				return err
			}
			if err := os.Chmod(to, c.Mode.Perm()); err != nil { // whatever the umask
				return err
			}
		case Symlink:
			if err := os.Symlink(c.Target, to); err != nil {
				return err
			}
		case Regular:
			f, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, c.Mode.Perm())
			if err != nil {
				return err
			}
			c.Sum, c.Size, err = w.Hash(e, f)
			if err == nil {
				err = f.Chmod(c.Mode.Perm())
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		}
		out = append(out, c)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
