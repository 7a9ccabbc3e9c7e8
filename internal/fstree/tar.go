package fstree

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// WriteTar writes the tree under dir into tw: every folder, regular file and
// symlink below it (links written as links, never followed), named relative
// to dir with forward slashes, owned by root, with its permissions. skip, if
// not nil, leaves an entry out (a skipped folder with all it holds). It does
// not close tw and returns the number of entries written.
//
// It is for trees the caller trusts to stay put (a build context the
// appliance wrote, the developer's own folder on their machine): a file that
// changes size while it is read fails the walk rather than producing a
// malformed archive. Function folders from strangers go through Walk.
func WriteTar(tw *tar.Writer, dir string, skip func(rel string, d fs.DirEntry) bool) (int, error) {
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		if skip != nil && skip(rel, d) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		h.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			h.Name += "/"
		}
		h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		n++
		if !info.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := io.CopyN(tw, f, info.Size()); err != nil {
			return fmt.Errorf("%s (did it change while being packed?): %w", rel, err)
		}
		return nil
	})
	return n, err
}
