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
	mode   fs.FileMode // type bit and the permissions it gets in the image (fstree.CopyMode)
	size   int64       // regular file: bytes
	sum    [32]byte    // regular file: sha256 of the content
	target string      // symlink: its target
}

// CodeDisk returns the path of a read-only ext4 image (volume label
// protocol.CodeLabel) holding a snapshot of the folder src. The snapshot's
// digest (see codeDigest) names the image in the cache:
// <cache>/code/<digest>.ext4. The folder is first copied to a private
// directory (fstree.Copy), so edits made while the image is being made
// cannot change it; src is only read. A src that is a symlink, symlinks
// that point outside the folder, hard links, special files and folders
// over the size limit are refused. The controller hands it the version's
// snapshot (function.Spec.Snapshot), never the user's folder.
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
	ok, err := c.checkEntry(path)
	if err != nil {
		return "", fmt.Errorf("code disk of %s: %w", src, err)
	}
	if ok {
		c.used(path)
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
	if err := c.publish(out, path); err != nil {
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

// readCodeTree copies the folder src to the empty directory dst by the
// rules of package fstree (dangling symlinks allowed) and returns its
// entries (the folder itself excluded), which describe exactly the copy.
func readCodeTree(ctx context.Context, src, dst string, limit int64) ([]codeEntry, error) {
	w := &fstree.Walker{MaxSize: limit, AllowDangling: true}
	copied, err := w.Copy(ctx, src, dst)
	if err != nil {
		return nil, codeTreeError(src, err)
	}
	entries := make([]codeEntry, len(copied))
	for i, c := range copied {
		entries[i] = codeEntry{rel: c.Rel, mode: c.Mode, size: c.Size, sum: c.Sum, target: c.Target}
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
