package image

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/faasvm/appliance/guest/protocol"
	"github.com/faasvm/appliance/internal/fstree"
)

// codeMargin is the free space a code image gets beyond its content (and
// the 30% added to it).
const codeMargin = 16 << 20

// ErrCodeTooLarge is wrapped by the error for a code folder over the size
// limit.
var ErrCodeTooLarge = errors.New("function folder is over the size limit")

// ErrSymlinkOutside is wrapped by the error for a symlink in a code folder
// that points outside it.
var ErrSymlinkOutside = errors.New("symlink points outside the function folder")

// codeEntry is one file, directory or symlink of a code folder.
type codeEntry struct {
	rel    string      // slash-separated path relative to the folder
	mode   fs.FileMode // type bit and the permissions it gets in the image
	size   int64       // regular file: bytes
	sum    [32]byte    // regular file: sha256 of the content
	target string      // symlink: its target
}

// imageMode is the mode an entry of type t gets in a code image: owned by
// root, readable by all, executable where the user made it executable.
func imageMode(t fstree.Type, m fs.FileMode) fs.FileMode {
	switch {
	case t == fstree.Dir:
		return fs.ModeDir | 0o755
	case t == fstree.Symlink:
		return fs.ModeSymlink | 0o777
	case m&0o111 != 0:
		return 0o755
	}
	return 0o644
}

// CodeDisk returns the path of a read-only ext4 image (volume label
// protocol.CodeLabel) holding a snapshot of the folder src. The snapshot's
// digest (see codeDigest) names the image in the cache:
// <cache>/code/<digest>.ext4. The folder is first copied to a private
// directory, so edits made while the image is being made cannot change it;
// src is only read. Symlinks that point outside the folder, special files
// and folders over the size limit are refused.
func (c *Cache) CodeDisk(ctx context.Context, src string) (string, error) {
	start := time.Now()
	snap, err := c.tempDir("code-*")
	if err != nil {
		return "", fmt.Errorf("code disk of %s: %w", src, err)
	}
	defer os.RemoveAll(snap)
	entries, err := readCodeTree(ctx, src, snap, c.codeLimit)
	if err != nil {
		return "", err
	}
	digest := codeDigest(entries)
	path := filepath.Join(c.dir, "code", digest+".ext4")
	log := c.log.With("step", "code", "dir", src, "digest", digest)

	defer c.lock(path)()
	ok, err := exists(path)
	if err != nil {
		return "", fmt.Errorf("code disk of %s: %w", src, err)
	}
	if ok {
		log.Debug("code disk cached", "path", path)
		return path, nil
	}
	var content int64
	for _, e := range entries {
		content += blockBytes(e.size)
	}
	out, err := c.tempFile("code-*.ext4")
	if err != nil {
		return "", fmt.Errorf("code disk of %s: %w", src, err)
	}
	defer os.Remove(out) // no-op once published
	err = c.mkfs.make(ctx, ext4Image{
		Out:    out,
		Label:  protocol.CodeLabel,
		Source: snap,
		Bytes:  imageSize(content, codeMargin),
		Inodes: inodeCount(int64(len(entries))),
	})
	if err != nil {
		return "", fmt.Errorf("code disk of %s: %w", src, err)
	}
	if err := publish(out, path); err != nil {
		return "", fmt.Errorf("code disk of %s: %w", src, err)
	}
	log.Info("code disk made", "path", path, "files", len(entries), "elapsed", time.Since(start).Round(time.Millisecond))
	return path, nil
}

// codeDigest is a snapshot's digest: the sha256 over its entries' sorted
// relative paths, each with the mode it gets in the image and its content
// (or symlink target). Every field ends in a NUL, which no path or symlink
// target contains, so distinct trees cannot hash alike.
func codeDigest(entries []codeEntry) string {
	sorted := slices.Clone(entries)
	slices.SortFunc(sorted, func(a, b codeEntry) int { return cmp.Compare(a.rel, b.rel) })
	h := sha256.New()
	io.WriteString(h, "faasvm-code-v1\x00")
	for _, e := range sorted {
		field(h, e.rel)
		field(h, strconv.FormatUint(uint64(e.mode), 8))
		switch {
		case e.mode.IsRegular():
			field(h, strconv.FormatInt(e.size, 10))
			field(h, hex.EncodeToString(e.sum[:]))
		case e.mode&fs.ModeSymlink != 0:
			field(h, e.target)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

func field(h hash.Hash, s string) {
	io.WriteString(h, s)
	h.Write([]byte{0})
}

// readCodeTree walks the folder src by the rules of package fstree (dangling
// symlinks allowed), copies it to the empty directory dst as it goes and
// returns its entries (the folder itself excluded). It hashes what it
// copies, so the entries describe exactly the copy.
func readCodeTree(ctx context.Context, src, dst string, limit int64) ([]codeEntry, error) {
	root, err := filepath.EvalSymlinks(src)
	if err != nil {
		return nil, fmt.Errorf("function folder %s: %w", src, err)
	}
	if fi, err := os.Stat(root); err != nil {
		return nil, fmt.Errorf("function folder %s: %w", src, err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("function folder %s is not a directory", src)
	}
	if err := os.Chmod(dst, 0o755); err != nil {
		return nil, fmt.Errorf("snapshot of %s: %w", src, err)
	}
	var entries []codeEntry
	w := &fstree.Walker{MaxSize: limit, AllowDangling: true}
	err = w.Walk(ctx, root, func(fe fstree.Entry) error {
		e := codeEntry{rel: fe.Rel, mode: imageMode(fe.Type, fe.Mode), target: fe.Target}
		to := filepath.Join(dst, filepath.FromSlash(fe.Rel))
		switch fe.Type {
		case fstree.Dir:
			if err := mkdirMode(to, e.mode.Perm()); err != nil {
				return err
			}
		case fstree.Symlink:
			if err := os.Symlink(e.target, to); err != nil {
				return err
			}
		case fstree.Regular:
			var err error
			if e.size, e.sum, err = hashCopy(w, fe, to, e.mode.Perm()); err != nil {
				return err
			}
		}
		entries = append(entries, e)
		return nil
	})
	if err != nil {
		return nil, codeTreeError(src, err)
	}
	return entries, nil
}

// codeTreeError words an error from walking the folder src, rule
// violations the way callers match them: ErrCodeTooLarge, ErrSymlinkOutside.
func codeTreeError(src string, err error) error {
	var rule *fstree.Error
	if !errors.As(err, &rule) {
		return fmt.Errorf("function folder %s: %w", src, err)
	}
	switch rule.Kind {
	case fstree.ErrTooLarge:
		return fmt.Errorf("function folder %s holds more than %d bytes: %w", src, rule.Limit, ErrCodeTooLarge)
	case fstree.ErrAbsolute:
		return fmt.Errorf("function folder %s: %s -> %s: %w (absolute target)", src, rule.Rel, rule.Target, ErrSymlinkOutside)
	case fstree.ErrOutside:
		if rule.Resolved != "" {
			return fmt.Errorf("function folder %s: %s -> %s resolves to %s: %w", src, rule.Rel, rule.Target, rule.Resolved, ErrSymlinkOutside)
		}
		return fmt.Errorf("function folder %s: %s -> %s: %w", src, rule.Rel, rule.Target, ErrSymlinkOutside)
	}
	return fmt.Errorf("function folder %s: %w", src, err)
}

func mkdirMode(path string, perm fs.FileMode) error {
	if err := os.Mkdir(path, perm); err != nil {
		return err
	}
	return os.Chmod(path, perm) // whatever the umask
}

// hashCopy copies the file e to dst within w's size budget, hashing it.
func hashCopy(w *fstree.Walker, e fstree.Entry, dst string, perm fs.FileMode) (int64, [32]byte, error) {
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return 0, [32]byte{}, err
	}
	defer out.Close()
	sum, n, err := w.Hash(e, out)
	if err != nil {
		return n, sum, err
	}
	if err := out.Chmod(perm); err != nil { // whatever the umask
		return n, sum, err
	}
	return n, sum, out.Close()
}
