// Package upload turns an uploaded archive (.tar.gz or .zip) of a function
// folder into a folder of the uploads directory, safely: every entry is
// checked before anything is written, the archive is extracted into a
// private temporary folder, validated by function.Load's rules, and only
// then renamed into place, so the uploads directory never holds a
// half-written folder.
package upload

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/faasvm/appliance/internal/config"
)

// Limits bound what one archive may expand to.
type Limits struct {
	// MaxSize bounds the bytes of file content (the function size limit).
	MaxSize int64
	// MaxFiles bounds the entries (files, folders and symlinks).
	MaxFiles int
	// MaxRatio bounds expanded bytes per archive byte once the content
	// passes ratioFloor: above it the archive is a bomb.
	MaxRatio int64
}

// Defaults for Limits' zero fields.
const (
	DefaultMaxFiles = 10000
	DefaultMaxRatio = 200
	// ratioFloor: content up to this size is never called a bomb, however
	// well it compresses (a small file of zeros is fine).
	ratioFloor = 1 << 20
)

func (l Limits) withDefaults() Limits {
	if l.MaxFiles <= 0 {
		l.MaxFiles = DefaultMaxFiles
	}
	if l.MaxRatio <= 0 {
		l.MaxRatio = DefaultMaxRatio
	}
	return l
}

// EntryError says why one entry of the archive was refused.
type EntryError struct {
	Entry  string // the entry's name as the archive spells it
	Reason string
	// TooLarge: the archive exceeds a size, count or ratio limit (413)
	// rather than holding an unsafe entry (400).
	TooLarge bool
}

func (e *EntryError) Error() string {
	return fmt.Sprintf("archive entry %q: %s", e.Entry, e.Reason)
}

// ErrFormat: the upload is neither a gzip-compressed tar nor a zip.
var ErrFormat = errors.New("the upload is not a .tar.gz or .zip archive")

// Extract extracts the archive file src (its format found from its first
// bytes) into dst, an empty folder only the caller writes. On an error dst
// holds part of the archive: the caller removes it.
//
// Refused, each naming the entry: absolute paths, ".." components,
// backslashes, NUL, duplicate entries, entries below a symlink, symlinks
// whose target is absolute or leaves the folder, hard links, devices,
// FIFOs and every other type but files, folders and symlinks; and, as too
// large, more than MaxSize bytes of content, more than MaxFiles entries
// and content more than MaxRatio times the archive's size.
func Extract(ctx context.Context, src, dst string, lim Limits) error {
	lim = lim.withDefaults()
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("opening the upload: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("opening the upload: %w", err)
	}
	magic := make([]byte, 4)
	if _, err := io.ReadFull(f, magic); err != nil {
		return ErrFormat
	}
	root, err := os.OpenRoot(dst)
	if err != nil {
		return fmt.Errorf("opening the extraction folder: %w", err)
	}
	defer root.Close()
	x := &extractor{ctx: ctx, root: root, lim: lim, compressed: max(fi.Size(), 1), seen: map[string]byte{}}
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("reading the upload: %w", err)
		}
		err = x.tarGz(bufio.NewReader(f))
	case bytes.Equal(magic, []byte("PK\x03\x04")), bytes.Equal(magic, []byte("PK\x05\x06")):
		// Count the entries before zip.NewReader reads the whole central
		// directory into memory.
		if n, ok := zipEntryCount(f, fi.Size()); ok && n > lim.MaxFiles {
			return tooLarge("(central directory)", fmt.Sprintf("the archive has more than %d entries", lim.MaxFiles))
		}
		zr, zerr := zip.NewReader(f, fi.Size())
		if zerr != nil {
			return fmt.Errorf("%w: reading the zip: %v", ErrFormat, zerr)
		}
		err = x.zip(zr)
	default:
		return ErrFormat
	}
	if err != nil {
		return err
	}
	return x.checkLinks(dst)
}

// checkLinks resolves every symlink the way the kernel will, through the
// other symlinks, and refuses one that ends outside dst or nowhere.
func (x *extractor) checkLinks(dst string) error {
	base, err := filepath.EvalSymlinks(dst)
	if err != nil {
		return fmt.Errorf("resolving the extraction folder: %w", err)
	}
	for _, name := range x.links {
		got, err := filepath.EvalSymlinks(filepath.Join(base, filepath.FromSlash(path.Clean(name))))
		if err != nil {
			return refuse(name, "symlink does not resolve to an existing path inside the folder")
		}
		if got != base && !strings.HasPrefix(got, base+string(filepath.Separator)) {
			return refuse(name, "symlink resolves to a path outside the folder: links must stay inside the folder")
		}
	}
	return nil
}

type extractor struct {
	ctx        context.Context
	root       *os.Root
	lim        Limits
	compressed int64
	written    int64
	entries    int
	seen       map[string]byte // clean name → 'd', 'f' or 'l'
	links      []string        // archive names of the symlinks, checked last
}

func (x *extractor) tarGz(r io.Reader) error {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrFormat, err)
	}
	zr.Multistream(false)
	tr := tar.NewReader(zr)
	for {
		if err := x.ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: reading the tar: %v", ErrFormat, err)
		}
		switch h.Typeflag {
		case tar.TypeXGlobalHeader:
			continue // metadata of the archive, not an entry
		case tar.TypeDir:
			err = x.dir(h.Name)
		case tar.TypeReg, tar.TypeRegA:
			err = x.file(h.Name, fs.FileMode(h.Mode), h.Size, tr)
		case tar.TypeSymlink:
			err = x.symlink(h.Name, h.Linkname)
		case tar.TypeLink:
			err = refuse(h.Name, "hard links are not supported: store a copy or a relative symlink")
		case tar.TypeChar, tar.TypeBlock:
			err = refuse(h.Name, "device files are not allowed")
		case tar.TypeFifo:
			err = refuse(h.Name, "FIFOs are not allowed")
		default:
			err = refuse(h.Name, fmt.Sprintf("entry type %q is not allowed: only files, folders and symlinks", h.Typeflag))
		}
		if err != nil {
			return err
		}
	}
}

func (x *extractor) zip(zr *zip.Reader) error {
	for _, f := range zr.File {
		if err := x.ctx.Err(); err != nil {
			return err
		}
		m := f.Mode()
		var err error
		switch {
		case m.IsDir():
			err = x.dir(f.Name)
		case m&fs.ModeSymlink != 0:
			err = x.zipSymlink(f)
		case m&fs.ModeDevice != 0, m&fs.ModeCharDevice != 0:
			err = refuse(f.Name, "device files are not allowed")
		case m&fs.ModeNamedPipe != 0:
			err = refuse(f.Name, "FIFOs are not allowed")
		case m.IsRegular():
			err = x.zipFile(f)
		default:
			err = refuse(f.Name, "entry type is not allowed: only files, folders and symlinks")
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (x *extractor) zipFile(f *zip.File) error {
	if _, err := x.check(f.Name, 'f'); err != nil {
		return err
	}
	rc, err := f.Open()
	if err != nil {
		return &EntryError{Entry: f.Name, Reason: fmt.Sprintf("cannot be read: %v", err)}
	}
	defer rc.Close()
	// The declared size is the archive's claim; the writer counts what
	// really comes out.
	return x.write(f.Name, path.Clean(f.Name), f.Mode(), int64(f.UncompressedSize64), rc)
}

func (x *extractor) zipSymlink(f *zip.File) error {
	rc, err := f.Open()
	if err != nil {
		return &EntryError{Entry: f.Name, Reason: fmt.Sprintf("cannot be read: %v", err)}
	}
	defer rc.Close()
	target, err := io.ReadAll(io.LimitReader(rc, 4097))
	if err != nil {
		return &EntryError{Entry: f.Name, Reason: fmt.Sprintf("cannot be read: %v", err)}
	}
	if len(target) > 4096 {
		return refuse(f.Name, "symlink target is longer than 4096 bytes")
	}
	return x.symlink(f.Name, string(target))
}

func refuse(entry, reason string) error { return &EntryError{Entry: entry, Reason: reason} }

func tooLarge(entry, reason string) error {
	return &EntryError{Entry: entry, Reason: reason, TooLarge: true}
}

// check validates an entry's name and records it; it returns the clean,
// slash-separated relative name ("" for the root itself).
func (x *extractor) check(name string, kind byte) (string, error) {
	switch {
	case name == "":
		return "", refuse(name, "empty name")
	case strings.ContainsRune(name, 0):
		return "", refuse(name, "name contains NUL")
	case strings.Contains(name, `\`):
		return "", refuse(name, `name contains a backslash: use "/" between folders`)
	case strings.HasPrefix(name, "/"):
		return "", refuse(name, "absolute path: entries must be relative to the function folder")
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", refuse(name, `".." is not allowed in entry names`)
		}
	}
	clean := path.Clean(name)
	if clean == "." {
		if kind == 'd' {
			return "", nil
		}
		return "", refuse(name, "names the folder itself")
	}
	if prev, ok := x.seen[clean]; ok {
		if prev == 'd' && kind == 'd' {
			return clean, nil // a folder listed twice is harmless
		}
		return "", refuse(name, "appears twice in the archive")
	}
	for dir := path.Dir(clean); dir != "."; dir = path.Dir(dir) {
		switch x.seen[dir] {
		case 'l':
			return "", refuse(name, fmt.Sprintf("lies below the symlink %q", dir))
		case 'f':
			return "", refuse(name, fmt.Sprintf("lies below the file %q", dir))
		}
	}
	x.entries++
	if x.entries > x.lim.MaxFiles {
		return "", tooLarge(name, fmt.Sprintf("the archive has more than %d entries", x.lim.MaxFiles))
	}
	x.seen[clean] = kind
	return clean, nil
}

func (x *extractor) dir(name string) error {
	clean, err := x.check(name, 'd')
	if err != nil || clean == "" {
		return err
	}
	if err := x.root.MkdirAll(clean, 0o755); err != nil {
		return refuse(name, fmt.Sprintf("cannot be created: %v", err))
	}
	return nil
}

func (x *extractor) parent(name, clean string) error {
	if dir := path.Dir(clean); dir != "." {
		for d := dir; d != "."; d = path.Dir(d) {
			if _, ok := x.seen[d]; !ok {
				x.seen[d] = 'd' // implied folders count once, when first met
				x.entries++
				if x.entries > x.lim.MaxFiles {
					return tooLarge(name, fmt.Sprintf("the archive has more than %d entries", x.lim.MaxFiles))
				}
			}
		}
		if err := x.root.MkdirAll(dir, 0o755); err != nil {
			return refuse(name, fmt.Sprintf("its folder cannot be created: %v", err))
		}
	}
	return nil
}

func (x *extractor) file(name string, mode fs.FileMode, declared int64, r io.Reader) error {
	clean, err := x.check(name, 'f')
	if err != nil {
		return err
	}
	return x.write(name, clean, mode, declared, r)
}

// write extracts a checked file entry.
func (x *extractor) write(name, clean string, mode fs.FileMode, declared int64, r io.Reader) error {
	if declared > x.lim.MaxSize-x.written {
		return tooLarge(name, fmt.Sprintf("the content is larger than the %s function size limit", config.Size(x.lim.MaxSize)))
	}
	if err := x.parent(name, clean); err != nil {
		return err
	}
	perm := fs.FileMode(0o644)
	if mode&0o111 != 0 {
		perm = 0o755
	}
	out, err := x.root.OpenFile(clean, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return refuse(name, fmt.Sprintf("cannot be created: %v", err))
	}
	_, err = io.Copy(out, &countingReader{r: r, x: x, entry: name})
	if cerr := out.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("writing %s: %w", name, cerr)
	}
	var ee *EntryError
	if err != nil && !errors.As(err, &ee) {
		return &EntryError{Entry: name, Reason: fmt.Sprintf("cannot be extracted: %v", err)}
	}
	return err
}

// countingReader enforces the size and ratio limits on what really comes
// out of the archive, whatever its headers claim.
type countingReader struct {
	r     io.Reader
	x     *extractor
	entry string
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	x := c.x
	x.written += int64(n)
	switch {
	case x.written > x.lim.MaxSize:
		return n, tooLarge(c.entry, fmt.Sprintf("the content is larger than the %s function size limit", config.Size(x.lim.MaxSize)))
	case x.written > ratioFloor && x.written/x.compressed > x.lim.MaxRatio:
		return n, tooLarge(c.entry, fmt.Sprintf("the archive expands more than %d times its size: refused as a compression bomb", x.lim.MaxRatio))
	}
	return n, err
}

func (x *extractor) symlink(name, target string) error {
	clean, err := x.check(name, 'l')
	if err != nil {
		return err
	}
	switch {
	case target == "":
		return refuse(name, "symlink has an empty target")
	case strings.ContainsRune(target, 0):
		return refuse(name, "symlink target contains NUL")
	case strings.HasPrefix(target, "/"):
		return refuse(name, fmt.Sprintf("symlink target %q is absolute: links must stay inside the folder", target))
	}
	// Lexically, from the link's folder: intermediate symlinks cannot
	// exist (no entry may lie below one), so this is where it resolves.
	resolved := path.Join(path.Dir(clean), target)
	if resolved == ".." || strings.HasPrefix(resolved, "../") {
		return refuse(name, fmt.Sprintf("symlink target %q leaves the folder", target))
	}
	if err := x.parent(name, clean); err != nil {
		return err
	}
	if err := x.root.Symlink(target, clean); err != nil {
		return refuse(name, fmt.Sprintf("cannot be created: %v", err))
	}
	x.links = append(x.links, name)
	return nil
}

// zipEntryCount reads the entry count of the zip's end-of-central-directory
// record (0xFFFF, a zip64 archive's marker, counts as that many).
func zipEntryCount(f io.ReaderAt, size int64) (int, bool) {
	const eocd = 22
	tail := int64(eocd + 65535) // the record plus the longest comment
	if tail > size {
		tail = size
	}
	buf := make([]byte, tail)
	if _, err := f.ReadAt(buf, size-tail); err != nil && !errors.Is(err, io.EOF) {
		return 0, false
	}
	i := bytes.LastIndex(buf, []byte("PK\x05\x06"))
	if i < 0 || len(buf)-i < eocd {
		return 0, false
	}
	return int(binary.LittleEndian.Uint16(buf[i+10:])), true
}
