// Package fstree walks a function folder by the rules every copy of it into
// a VM must follow, so that the checks that validate a function and the
// ones that snapshot it cannot drift apart:
//
//   - entries are visited in filepath.WalkDir order (lexical within a
//     folder, a folder before what it holds) and symlinks are not followed;
//   - only regular files, folders and symlinks are allowed; pipes, sockets
//     and devices are refused;
//   - a symlink's target must be relative and must stay inside the folder,
//     both by its text and once resolved through any further links;
//   - the bytes of regular files count against a size limit, both as the
//     walk sees them and as they are read.
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
	Path   string      // the entry's path on the host
	Type   Type        // never Special: those are refused
	Mode   fs.FileMode // as lstat reports it
	Size   int64       // Regular: bytes, as the walk saw them
	Target string      // Symlink: its target, checked to stay inside

	root string // the walked folder, resolved: Hash opens the entry inside it
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

// Walk calls fn for every entry below root (root itself excluded) in
// filepath.WalkDir order, after checking the entry against the rules; the
// first violation stops the walk with an *Error. So does ctx, and any error
// fn returns, which Walk returns unchanged. The caller checks that root is
// a folder, and decides whether root itself may be a symlink.
func (w *Walker) Walk(ctx context.Context, root string, fn func(Entry) error) error {
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return fmt.Errorf("resolving %s: %w", root, err)
	}
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		e := Entry{Rel: filepath.ToSlash(rel), Path: p, Type: TypeOf(info.Mode()), Mode: info.Mode(), root: realRoot}
		switch e.Type {
		case Special:
			return &Error{Kind: ErrSpecial, Rel: e.Rel, Mode: e.Mode}
		case Regular:
			e.Size = info.Size()
			w.seen += e.Size
			if w.MaxSize > 0 && w.seen > w.MaxSize {
				return &Error{Kind: ErrTooLarge, Rel: e.Rel, Limit: w.MaxSize}
			}
		case Symlink:
			if e.Target, err = w.checkSymlink(realRoot, p, e.Rel); err != nil {
				return err
			}
		}
		return fn(e)
	})
}

// checkSymlink returns the target of the symlink at p, refusing one that is
// absolute or leads outside realRoot, by its text or once resolved.
func (w *Walker) checkSymlink(realRoot, p, rel string) (string, error) {
	target, err := os.Readlink(p)
	if err != nil {
		return "", fmt.Errorf("reading symlink %s: %w", rel, err)
	}
	if filepath.IsAbs(target) {
		return "", &Error{Kind: ErrAbsolute, Rel: rel, Target: target}
	}
	if lexical := path.Join(path.Dir(rel), filepath.ToSlash(target)); outside(lexical, "/") {
		return "", &Error{Kind: ErrOutside, Rel: rel, Target: target}
	}
	// Resolving catches what the text cannot, such as a link through
	// another link to the folder itself ("self/..").
	resolved, err := filepath.EvalSymlinks(p)
	if err != nil {
		if w.AllowDangling && errors.Is(err, fs.ErrNotExist) {
			return target, nil // dangling, and its text stays inside
		}
		return "", &Error{Kind: ErrUnresolved, Rel: rel, Target: target, Err: err}
	}
	if in, err := filepath.Rel(realRoot, resolved); err != nil || outside(in, string(filepath.Separator)) {
		return "", &Error{Kind: ErrOutside, Rel: rel, Target: target, Resolved: resolved}
	}
	return target, nil
}

func outside(rel, sep string) bool {
	return rel == ".." || strings.HasPrefix(rel, ".."+sep)
}

// Hash reads the regular file e, writing its content to dst (when not nil)
// as well as to the returned sha256, and returns the bytes read. It counts
// them against MaxSize, failing with an *Error (ErrTooLarge) when the file
// grew past what is left, and refuses what is no longer a regular file (a
// pipe swapped in since the walk would block the read). The file is opened
// inside the walked folder (os.OpenInRoot): a file or folder swapped for a
// symlink leading outside since the walk is refused, not followed.
func (w *Walker) Hash(e Entry, dst io.Writer) (sum [32]byte, n int64, err error) {
	if e.root == "" {
		return sum, 0, fmt.Errorf("reading %s: not an entry from Walk", e.Rel)
	}
	f, err := os.OpenInRoot(e.root, filepath.FromSlash(e.Rel))
	if err != nil {
		return sum, 0, fmt.Errorf("reading %s: %w", e.Rel, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return sum, 0, fmt.Errorf("reading %s: %w", e.Rel, err)
	} else if !fi.Mode().IsRegular() {
		return sum, 0, fmt.Errorf("reading %s: no longer a regular file", e.Rel)
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
	ErrSpecial    ErrorKind = iota + 1 // not a file, folder or symlink
	ErrAbsolute                        // symlink with an absolute target
	ErrOutside                         // symlink leading outside the folder
	ErrUnresolved                      // symlink that does not resolve
	ErrTooLarge                        // file content over the size limit
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
	}
	return fmt.Sprintf("%s breaks a folder rule", e.Rel)
}
