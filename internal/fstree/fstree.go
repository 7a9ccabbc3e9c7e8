// Package fstree walks a function folder by the rules every copy of it into
// a VM must follow, so that the checks that validate a function and the
// ones that snapshot it cannot drift apart:
//
//   - the folder itself must be a folder, not a symlink to one, and is
//     opened once: every later access goes through that handle (os.Root),
//     so a folder swapped for a symlink mid-walk leads nowhere else;
//   - entries are visited in lexical order, a folder before what it holds;
//     symlinks are not followed;
//   - only regular files, folders and symlinks are allowed; pipes, sockets
//     and devices are refused, and so are hard links (a regular file with
//     more than one link could be a host file under another name);
//   - a symlink's target must be relative and must stay inside the folder,
//     both by its text and once resolved through any further links;
//   - the bytes of regular files count against a size limit, both as the
//     walk sees them and as they are read; a file is read only if it is
//     still the very file the walk saw.
//
// Copy takes the private snapshot a version is made from: the walk's
// entries copied to a new folder with normalised modes, each file hashed as
// it is copied.
//
// Rule violations are *Error values; other failures (I/O, a cancelled
// context) are returned as they come, wrapped with %w.
package fstree

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// Type classifies a folder entry.
type Type uint8

const (
	Special Type = iota // a named pipe, socket, device or other special file
	Regular
	Dir
	Symlink
)

// TypeOf classifies a file mode as lstat reports it.
func TypeOf(m fs.FileMode) Type {
	switch {
	case m.IsRegular():
		return Regular
	case m.IsDir():
		return Dir
	case m&fs.ModeSymlink != 0:
		return Symlink
	}
	return Special
}

// KindName names what a special file is ("named pipe", "socket", "device"
// or "special file"), for messages.
func KindName(m fs.FileMode) string {
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

// Entry is one file, folder or symlink below the walked root.
type Entry struct {
	Rel    string      // slash-separated path below the root
	Path   string      // the entry's path on the host (for messages)
	Type   Type        // never Special: those are refused
	Mode   fs.FileMode // as lstat reports it
	Size   int64       // Regular: bytes, as the walk saw them
	Target string      // Symlink: its target, checked to stay inside

	root *os.Root    // the walked folder: Hash opens the entry through it
	info fs.FileInfo // lstat of the entry, to recognise it when read
}

// Walker walks folders and reads their files against one size budget. Its
// zero value has no size limit and refuses dangling symlinks. A Walker is
// for one folder, and not safe for concurrent use.
type Walker struct {
	// MaxSize bounds the bytes of regular files; <= 0: no limit.
	MaxSize int64
	// AllowDangling accepts a symlink whose target does not exist, as long
	// as its text stays inside the folder.
	AllowDangling bool

	seen int64 // file bytes by the sizes the walk saw
	read int64 // file bytes read by Hash
}

// OpenFolder opens the folder at path for a walk. It refuses a path whose
// last element is a symlink, or that is not a folder, and one swapped
// while it was being opened: what it returns is the folder that was there,
// whatever happens to the path afterwards.
func OpenFolder(path string) (*os.Root, error) {
	lfi, err := os.Lstat(path)
	if err != nil {
		return nil, fmt.Errorf("reading folder: %w", err)
	}
	if err := rootKind(path, lfi); err != nil {
		return nil, err
	}
	r, err := os.OpenRoot(path)
	if err != nil {
		return nil, fmt.Errorf("opening folder: %w", err)
	}
	opened, err := r.Stat(".")
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("opening folder: %w", err)
	}
	// The path may have been a symlink (to anywhere) for the instant
	// OpenRoot followed it: what was opened must be what lstat sees now.
	after, err := os.Lstat(path)
	if err == nil {
		err = rootKind(path, after)
	}
	if err == nil && !os.SameFile(opened, after) {
		err = &Error{Kind: ErrRootSwapped, Rel: "."}
	}
	if err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

func rootKind(path string, fi fs.FileInfo) error {
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return &Error{Kind: ErrRootSymlink, Rel: ".", Target: path}
	case !fi.IsDir():
		return &Error{Kind: ErrRootNotFolder, Rel: ".", Target: path}
	}
	return nil
}

// Walk calls fn for every entry below root (root itself excluded) in
// lexical order, a folder before what it holds, after checking the entry
// against the rules; the first violation stops the walk with an *Error. So
// does ctx, and any error fn returns, which Walk returns unchanged. root
// must be a folder, not a symlink (see OpenFolder). Entries can be read
// (Hash) only while fn runs.
func (w *Walker) Walk(ctx context.Context, root string, fn func(Entry) error) error {
	r, err := OpenFolder(root)
	if err != nil {
		return err
	}
	defer r.Close()
	return fs.WalkDir(r.FS(), ".", func(rel string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		// lstat through the root, not the listing's type: what is there now.
		info, err := r.Lstat(filepath.FromSlash(rel))
		if err != nil {
			return err
		}
		e := Entry{Rel: rel, Path: filepath.Join(root, filepath.FromSlash(rel)), Type: TypeOf(info.Mode()), Mode: info.Mode(), root: r, info: info}
		switch e.Type {
		case Special:
			return &Error{Kind: ErrSpecial, Rel: e.Rel, Mode: e.Mode}
		case Regular:
			if links(info) > 1 {
				return &Error{Kind: ErrHardLink, Rel: e.Rel, Links: links(info)}
			}
			e.Size = info.Size()
			w.seen += e.Size
			if w.MaxSize > 0 && w.seen > w.MaxSize {
				return &Error{Kind: ErrTooLarge, Rel: e.Rel, Limit: w.MaxSize}
			}
		case Symlink:
			if e.Target, err = w.checkSymlink(r, e.Rel); err != nil {
				return err
			}
		}
		if err := fn(e); err != nil {
			return err
		}
		if d.IsDir() && e.Type != Dir {
			return fs.SkipDir // it was swapped for something else since the listing
		}
		return nil
	})
}

// links is a file's hard link count (1 when unknown).
func links(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Nlink)
	}
	return 1
}

// checkSymlink returns the target of the symlink rel, refusing one that is
// absolute or leads outside the root, by its text or once resolved.
func (w *Walker) checkSymlink(r *os.Root, rel string) (string, error) {
	target, err := r.Readlink(filepath.FromSlash(rel))
	if err != nil {
		return "", fmt.Errorf("reading symlink %s: %w", rel, err)
	}
	if filepath.IsAbs(target) {
		return "", &Error{Kind: ErrAbsolute, Rel: rel, Target: target}
	}
	if lexical := path.Join(path.Dir(rel), filepath.ToSlash(target)); outside(lexical, "/") {
		return "", &Error{Kind: ErrOutside, Rel: rel, Target: target}
	}
	// Resolving inside the root catches what the text cannot, such as a
	// link through another link to the folder itself ("self/..").
	_, err = r.Stat(filepath.FromSlash(rel))
	switch {
	case err == nil:
		return target, nil
	case errors.Is(err, fs.ErrNotExist):
		if w.AllowDangling {
			return target, nil // dangling, and its text stays inside
		}
		return "", &Error{Kind: ErrUnresolved, Rel: rel, Target: target, Err: err}
	case strings.Contains(err.Error(), "escapes"):
		return "", &Error{Kind: ErrOutside, Rel: rel, Target: target, Resolved: "outside the folder"}
	}
	return "", &Error{Kind: ErrUnresolved, Rel: rel, Target: target, Err: err}
}

func outside(rel, sep string) bool {
	return rel == ".." || strings.HasPrefix(rel, ".."+sep)
}

// Hash reads the regular file e, writing its content to dst (when not nil)
// as well as to the returned sha256, and returns the bytes read. It counts
// them against MaxSize, failing with an *Error (ErrTooLarge) when the file
// grew past what is left. It reads through the walk's handle on the folder
// and only the very file the walk saw: one swapped since (for a symlink, a
// pipe, another file, a hard link) is refused, not followed. Call it from
// Walk's fn.
func (w *Walker) Hash(e Entry, dst io.Writer) (sum [32]byte, n int64, err error) {
	if e.root == nil || e.info == nil {
		return sum, 0, fmt.Errorf("reading %s: not an entry from Walk", e.Rel)
	}
	f, err := e.root.OpenFile(filepath.FromSlash(e.Rel), os.O_RDONLY|syscall.O_NONBLOCK, 0) // a FIFO swapped in must not block the open
	if err != nil {
		return sum, 0, fmt.Errorf("reading %s: %w", e.Rel, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	switch {
	case err != nil:
		return sum, 0, fmt.Errorf("reading %s: %w", e.Rel, err)
	case !fi.Mode().IsRegular():
		return sum, 0, fmt.Errorf("reading %s: no longer a regular file", e.Rel)
	case !os.SameFile(fi, e.info):
		return sum, 0, fmt.Errorf("reading %s: replaced by another file since the walk", e.Rel)
	case links(fi) > 1:
		return sum, 0, &Error{Kind: ErrHardLink, Rel: e.Rel, Links: links(fi)}
	}
	var r io.Reader = f
	if w.MaxSize > 0 {
		r = io.LimitReader(f, w.MaxSize-w.read+1)
	}
	h := sha256.New()
	out := io.Writer(h)
	if dst != nil {
		out = io.MultiWriter(h, dst)
	}
	n, err = io.Copy(out, r)
	w.read += n
	if err != nil {
		return sum, n, fmt.Errorf("reading %s: %w", e.Rel, err)
	}
	if w.MaxSize > 0 && w.read > w.MaxSize {
		return sum, n, &Error{Kind: ErrTooLarge, Rel: e.Rel, Limit: w.MaxSize}
	}
	copy(sum[:], h.Sum(nil))
	return sum, n, nil
}

// ErrorKind says which rule an entry broke.
type ErrorKind uint8

const (
	ErrSpecial       ErrorKind = iota + 1 // not a file, folder or symlink
	ErrAbsolute                           // symlink with an absolute target
	ErrOutside                            // symlink leading outside the folder
	ErrUnresolved                         // symlink that does not resolve
	ErrTooLarge                           // file content over the size limit
	ErrHardLink                           // regular file with more than one link
	ErrRootSymlink                        // the folder itself is a symlink
	ErrRootNotFolder                      // the folder is not a folder
	ErrRootSwapped                        // the folder was replaced while being opened
)

// Error is a rule an entry broke. Its message is meant for the user;
// callers with their own wording can build one from the fields.
type Error struct {
	Kind     ErrorKind
	Rel      string      // the entry, slash-separated below the root
	Mode     fs.FileMode // ErrSpecial: the entry's mode
	Target   string      // symlink kinds: the link's target
	Resolved string      // ErrOutside found by resolving: where it leads
	Limit    int64       // ErrTooLarge: the size limit
	Links    uint64      // ErrHardLink: the link count
	Err      error       // ErrUnresolved: why it did not resolve
}

func (e *Error) Error() string {
	switch e.Kind {
	case ErrSpecial:
		return fmt.Sprintf("%s is a %s; a function folder may hold only files, folders and symlinks", e.Rel, KindName(e.Mode))
	case ErrAbsolute:
		return fmt.Sprintf("symlink %s points to the absolute path %s; only relative links to files inside the folder are allowed", e.Rel, e.Target)
	case ErrOutside:
		return fmt.Sprintf("symlink %s -> %s points outside the folder; only links to files inside it are allowed", e.Rel, e.Target)
	case ErrUnresolved:
		return fmt.Sprintf("symlink %s -> %s does not resolve to anything inside the folder", e.Rel, e.Target)
	case ErrTooLarge:
		return fmt.Sprintf("folder holds more than the %d bytes a function may have (at %s)", e.Limit, e.Rel)
	case ErrHardLink:
		return fmt.Sprintf("%s is a hard link (%d names for one file); a function folder may hold only files of its own: copy it instead", e.Rel, e.Links)
	case ErrRootSymlink:
		return fmt.Sprintf("%s is a symlink; a function must be a real folder (copy it or bind-mount it instead)", e.Target)
	case ErrRootNotFolder:
		return fmt.Sprintf("%s is not a folder", e.Target)
	case ErrRootSwapped:
		return "the folder was replaced while it was being read; try again once it is in place"
	}
	return fmt.Sprintf("%s breaks a folder rule", e.Rel)
}
