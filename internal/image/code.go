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
	"strings"
	"time"

	"github.com/faasvm/appliance/guest/protocol"
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

// imageMode is the mode a folder entry gets in a code image: owned by root,
// readable by all, executable where the user made it executable.
func imageMode(m fs.FileMode) (fs.FileMode, error) {
	switch {
	case m.IsDir():
		return fs.ModeDir | 0o755, nil
	case m&fs.ModeSymlink != 0:
		return fs.ModeSymlink | 0o777, nil
	case m.IsRegular() && m&0o111 != 0:
		return 0o755, nil
	case m.IsRegular():
		return 0o644, nil
	}
	return 0, fmt.Errorf("is a %s; a function folder may hold only files, directories and symlinks", fileKind(m))
}

func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return "special file"
}

// CodeDigest is the digest CodeDisk would give the folder src now, without
// making anything: the sha256 over its sorted relative paths, each with the
// mode it gets in the image and its content (or symlink target).
func (c *Cache) CodeDigest(ctx context.Context, src string) (string, error) {
	entries, err := readCodeTree(ctx, src, "", c.codeLimit)
	if err != nil {
		return "", err
	}
	return codeDigest(entries), nil
}

// CodeDisk returns the path of a read-only ext4 image (volume label
// protocol.CodeLabel) holding a snapshot of the folder src, and the
// snapshot's digest (see CodeDigest), which names the image in the cache:
// <cache>/code/<digest>.ext4. The folder is first copied to a private
// directory, so edits made while the image is being made cannot change it;
// src is only read. Symlinks that point outside the folder, special files
// and folders over the size limit are refused.
func (c *Cache) CodeDisk(ctx context.Context, src string) (path, digest string, err error) {
	start := time.Now()
	snap, err := c.tempDir("code-*")
	if err != nil {
		return "", "", fmt.Errorf("code disk of %s: %w", src, err)
	}
	defer os.RemoveAll(snap)
	entries, err := readCodeTree(ctx, src, snap, c.codeLimit)
	if err != nil {
		return "", "", err
	}
	digest = codeDigest(entries)
	path = filepath.Join(c.dir, "code", digest+".ext4")
	log := c.log.With("step", "code", "dir", src, "digest", digest)

	defer c.lock(path)()
	ok, err := exists(path)
	if err != nil {
		return "", "", fmt.Errorf("code disk of %s: %w", src, err)
	}
	if ok {
		log.Debug("code disk cached", "path", path)
		return path, digest, nil
	}
	var content int64
	for _, e := range entries {
		content += blockBytes(e.size)
	}
	out, err := c.tempFile("code-*.ext4")
	if err != nil {
		return "", "", fmt.Errorf("code disk of %s: %w", src, err)
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
		return "", "", fmt.Errorf("code disk of %s: %w", src, err)
	}
	if err := publish(out, path); err != nil {
		return "", "", fmt.Errorf("code disk of %s: %w", src, err)
	}
	log.Info("code disk made", "path", path, "files", len(entries), "elapsed", time.Since(start).Round(time.Millisecond))
	return path, digest, nil
}

// codeDigest hashes entries in the order of their paths. Every field ends
// in a NUL, which no path or symlink target contains, so distinct trees
// cannot hash alike.
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

// readCodeTree walks the folder src and returns its entries (the folder
// itself excluded), checking the rules CodeDisk states. When dst is not
// empty it copies the tree there as it goes, hashing what it copies, so the
// entries describe exactly the copy.
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
	if dst != "" {
		if err := os.Chmod(dst, 0o755); err != nil {
			return nil, fmt.Errorf("snapshot of %s: %w", src, err)
		}
	}
	var (
		entries []codeEntry
		total   int64
	)
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if path == root {
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		mode, err := imageMode(info.Mode())
		if err != nil {
			return fmt.Errorf("%s %w", rel, err)
		}
		e := codeEntry{rel: filepath.ToSlash(rel), mode: mode}
		var target string
		if dst != "" {
			target = filepath.Join(dst, rel)
		}
		switch {
		case mode.IsDir():
			if target != "" {
				if err := mkdirMode(target, mode.Perm()); err != nil {
					return err
				}
			}
		case mode&fs.ModeSymlink != 0:
			if e.target, err = checkSymlink(root, path, rel); err != nil {
				return err
			}
			if target != "" {
				if err := os.Symlink(e.target, target); err != nil {
					return err
				}
			}
		default:
			if e.size, e.sum, err = hashCopy(path, target, mode.Perm(), limit-total); err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
			total += e.size
		}
		entries = append(entries, e)
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrCodeTooLarge) {
			return nil, fmt.Errorf("function folder %s holds more than %d bytes: %w", src, limit, ErrCodeTooLarge)
		}
		return nil, fmt.Errorf("function folder %s: %w", src, err)
	}
	return entries, nil
}

// checkSymlink returns the target of the symlink at path (rel inside root),
// refusing one that leads outside root, by its text or once resolved.
func checkSymlink(root, path, rel string) (string, error) {
	target, err := os.Readlink(path)
	if err != nil {
		return "", err
	}
	if filepath.IsAbs(target) {
		return "", fmt.Errorf("%s -> %s: %w (absolute target)", rel, target, ErrSymlinkOutside)
	}
	lexical := filepath.Join(filepath.Dir(rel), target)
	if lexical == ".." || strings.HasPrefix(lexical, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("%s -> %s: %w", rel, target, ErrSymlinkOutside)
	}
	// Symlinks along the way (a -> ., b -> a/..) can still lead out.
	resolved, err := filepath.EvalSymlinks(path)
	if errors.Is(err, fs.ErrNotExist) {
		return target, nil // dangling, and its text stays inside
	}
	if err != nil {
		return "", err
	}
	if in, err := filepath.Rel(root, resolved); err != nil || in == ".." || strings.HasPrefix(in, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("%s -> %s resolves to %s: %w", rel, target, resolved, ErrSymlinkOutside)
	}
	return target, nil
}

func mkdirMode(path string, perm fs.FileMode) error {
	if err := os.Mkdir(path, perm); err != nil {
		return err
	}
	return os.Chmod(path, perm) // whatever the umask
}

// hashCopy hashes the file at src, copying it to dst when dst is not empty,
// and fails with ErrCodeTooLarge once more than budget bytes were read.
func hashCopy(src, dst string, perm fs.FileMode, budget int64) (int64, [32]byte, error) {
	var sum [32]byte
	in, err := os.Open(src)
	if err != nil {
		return 0, sum, err
	}
	defer in.Close()
	h := sha256.New()
	w := io.Writer(h)
	var out *os.File
	if dst != "" {
		if out, err = os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm); err != nil {
			return 0, sum, err
		}
		defer out.Close()
		w = io.MultiWriter(h, out)
	}
	n, err := io.CopyN(w, in, budget+1)
	if err != nil && !errors.Is(err, io.EOF) {
		return n, sum, err
	}
	if n > budget {
		return n, sum, ErrCodeTooLarge
	}
	if out != nil {
		if err := out.Chmod(perm); err != nil { // whatever the umask
			return n, sum, err
		}
		if err := out.Close(); err != nil {
			return n, sum, err
		}
	}
	copy(sum[:], h.Sum(nil))
	return n, sum, nil
}
