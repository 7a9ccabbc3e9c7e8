package function

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/faasvm/appliance/internal/fstree"
)

// maxParsedFile bounds the top-level files Load keeps in memory to parse
// (function.yaml, VM configs, shell handlers).
const maxParsedFile = 1 << 20

// tree is one version's snapshot of a function folder: the private copy
// every later read comes from, and what the walk found.
type tree struct {
	dir     string            // the snapshot (a private copy; never the user's folder)
	entries []entry           // every entry below the root, sorted by rel
	files   map[string]bool   // top-level regular files and symlinks to them
	top     map[string][]byte // content of those files up to maxParsedFile
	exts    map[string]bool   // lowercase extensions of regular files anywhere
	size    int64             // bytes in regular files
	digest  string            // hex sha256, see snapshotTree
}

type entry = fstree.Copied

// snapshotTree copies src into the empty private folder snap by the rules
// of package fstree, refusing what cannot be copied into a VM faithfully,
// and reads the copy: everything Load looks at, the digest and the code
// disk come from snap, never from src again.
//
// Refused: a src that is itself a symlink or not a directory (also if it is
// swapped for one while it is opened); symlinks with absolute targets, or
// whose target does not resolve to a path inside the folder; hard links;
// entries other than files, directories and symlinks; more than maxSize
// bytes of file content (maxSize <= 0: no limit).
//
// The digest is sha256 over, for every entry in the order of its sorted
// slash-separated relative path: the path, NUL, the type letter (d, f, l)
// and the octal permission bits it has in the copy (fstree.CopyMode), NUL,
// then the hex sha256 of a file's content or "->" and a symlink's target,
// then a newline. It covers the copy and nothing else: not the folder's
// name, not timestamps or owners, not permission bits the copy drops. So it
// names exactly the bytes a VM of the version boots with.
func snapshotTree(ctx context.Context, src, snap string, maxSize int64) (*tree, error) {
	w := &fstree.Walker{MaxSize: maxSize}
	copied, err := w.Copy(ctx, src, snap)
	if err != nil {
		var rule *fstree.Error
		if errors.As(err, &rule) {
			return nil, &invalidError{msg: rule.Error()}
		}
		if errors.Is(err, fs.ErrNotExist) {
			if _, serr := os.Lstat(src); errors.Is(serr, fs.ErrNotExist) {
				return nil, fmt.Errorf("reading folder: %w", err) // the folder is gone
			}
		}
		// %v, not %w: a file that vanished mid-walk must not read as
		// fs.ErrNotExist, which means the folder is gone.
		return nil, fmt.Errorf("walking folder: %v", err)
	}
	t := &tree{dir: snap, files: map[string]bool{}, top: map[string][]byte{}, exts: map[string]bool{}}
	for _, e := range copied {
		topLevel := !strings.Contains(e.Rel, "/")
		switch e.Type {
		case fstree.Regular:
			t.size += e.Size
			if ext := strings.ToLower(path.Ext(e.Rel)); ext != "" {
				t.exts[ext] = true
			}
			if topLevel {
				t.files[e.Rel] = true
				if e.Size <= maxParsedFile {
					b, err := os.ReadFile(filepath.Join(snap, e.Rel))
					if err != nil {
						return nil, fmt.Errorf("reading the snapshot: %w", err)
					}
					t.top[e.Rel] = b
				}
			}
		case fstree.Symlink:
			if topLevel {
				if err := t.readLinked(snap, e.Rel); err != nil {
					return nil, err
				}
			}
		}
		t.entries = append(t.entries, e)
	}
	sort.Slice(t.entries, func(i, j int) bool { return t.entries[i].Rel < t.entries[j].Rel })

	h := sha256.New()
	for _, e := range t.entries {
		fmt.Fprintf(h, "%s\x00%c%o\x00", e.Rel, typeLetter(e.Type), e.Mode.Perm())
		switch e.Type {
		case fstree.Regular:
			io.WriteString(h, hex.EncodeToString(e.Sum[:]))
		case fstree.Symlink:
			fmt.Fprintf(h, "->%s", e.Target)
		}
		h.Write([]byte{'\n'})
	}
	t.digest = hex.EncodeToString(h.Sum(nil))
	return t, nil
}

// isFile reports whether rel names a regular file, directly or through
// symlinks (all checked to stay inside the folder).
func (t *tree) isFile(dir, rel string) bool {
	if t.files[rel] {
		return true
	}
	fi, err := statIn(dir, rel)
	return err == nil && fi.Mode().IsRegular()
}

// statIn and openIn reach rel only inside dir (the snapshot), following
// symlinks that stay inside.
func statIn(dir, rel string) (os.FileInfo, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return r.Stat(filepath.FromSlash(rel))
}

func openIn(dir, rel string) (*os.File, error) {
	return os.OpenInRoot(dir, filepath.FromSlash(rel))
}

// content returns a file's bytes: from the scan for top-level files, else
// read now. Files over maxParsedFile, and unreadable ones, give nil.
func (t *tree) content(dir, rel string) []byte {
	if b, ok := t.top[rel]; ok {
		return b
	}
	if fi, err := statIn(dir, rel); err != nil || !fi.Mode().IsRegular() {
		return nil // a pipe would block the read
	}
	f, err := openIn(dir, rel)
	if err != nil {
		return nil
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxParsedFile+1))
	if err != nil || len(b) > maxParsedFile {
		return nil
	}
	return b
}

// readLinked records a top-level symlink that leads to a regular file (its
// target was checked to be inside the folder) as one of the top-level files.
func (t *tree) readLinked(dir, rel string) error {
	fi, err := statIn(dir, rel)
	if err != nil || !fi.Mode().IsRegular() {
		return nil // a link to a folder, or gone since the walk
	}
	t.files[rel] = true
	if fi.Size() > maxParsedFile {
		return nil
	}
	f, err := openIn(dir, rel)
	if err != nil {
		return fmt.Errorf("reading %s: %v", rel, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxParsedFile+1))
	if err != nil {
		return fmt.Errorf("reading %s: %v", rel, err)
	}
	if len(b) <= maxParsedFile {
		t.top[rel] = b
	}
	return nil
}

func typeLetter(t fstree.Type) byte {
	switch t {
	case fstree.Dir:
		return 'd'
	case fstree.Symlink:
		return 'l'
	default:
		return 'f'
	}
}
