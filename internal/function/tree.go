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

// tree is one read-only pass over a function folder.
type tree struct {
	entries []entry           // every entry below the root, sorted by rel
	files   map[string]bool   // top-level regular files and symlinks to them
	top     map[string][]byte // content of those files up to maxParsedFile
	exts    map[string]bool   // lowercase extensions of regular files anywhere
	size    int64             // bytes in regular files
	digest  string            // hex sha256, see scanTree
}

type entry struct {
	fstree.Entry
	sum [32]byte // regular file: sha256 of the content
}

// scanTree walks dir by the rules of package fstree, without writing
// anything, refusing what cannot be copied into a VM faithfully, and
// computes the folder's digest.
//
// Refused: a dir that is itself a symlink or not a directory; symlinks with
// absolute targets, or whose target does not resolve to a path inside the
// folder; entries other than files, directories and symlinks; more than
// maxSize bytes of file content (maxSize <= 0: no limit).
//
// The digest is sha256 over, for every entry in the order of its sorted
// slash-separated relative path: the path, NUL, the type letter (d, f, l)
// and octal permission bits, NUL, then the hex sha256 of a file's content
// or "->" and a symlink's target, then a newline. It covers the folder and
// nothing else: not its name, not timestamps or owners.
func scanTree(dir string, maxSize int64) (*tree, error) {
	fi, err := os.Lstat(dir)
	if err != nil {
		return nil, fmt.Errorf("reading folder: %w", err)
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return nil, invalidf("%s is a symlink; a function must be a real folder (copy it or bind-mount it instead)", dir)
	case !fi.IsDir():
		return nil, invalidf("%s is not a folder", dir)
	}

	t := &tree{files: map[string]bool{}, top: map[string][]byte{}, exts: map[string]bool{}}
	w := &fstree.Walker{MaxSize: maxSize}
	err = w.Walk(context.Background(), dir, func(fe fstree.Entry) error {
		e := entry{Entry: fe}
		topLevel := !strings.Contains(e.Rel, "/")
		switch e.Type {
		case fstree.Regular:
			t.size += e.Size
			if ext := strings.ToLower(path.Ext(e.Rel)); ext != "" {
				t.exts[ext] = true
			}
			var dst io.Writer // keeps top-level content to parse
			var keep *limitedBuffer
			if topLevel {
				keep = &limitedBuffer{b: []byte{}, max: maxParsedFile}
				dst = keep
			}
			var err error
			if e.sum, _, err = w.Hash(fe, dst); err != nil {
				return err
			}
			if topLevel {
				t.files[e.Rel] = true
				if !keep.over {
					t.top[e.Rel] = keep.b
				}
			}
		case fstree.Symlink:
			if topLevel {
				if err := t.readLinked(dir, e.Rel); err != nil {
					return err
				}
			}
		}
		t.entries = append(t.entries, e)
		return nil
	})
	if err != nil {
		var rule *fstree.Error
		if errors.As(err, &rule) {
			return nil, &invalidError{msg: rule.Error()}
		}
		// %v, not %w: a file that vanished mid-walk must not read as
		// fs.ErrNotExist, which means the folder is gone.
		return nil, fmt.Errorf("walking folder: %v", err)
	}
	sort.Slice(t.entries, func(i, j int) bool { return t.entries[i].Rel < t.entries[j].Rel })

	h := sha256.New()
	for _, e := range t.entries {
		fmt.Fprintf(h, "%s\x00%c%o\x00", e.Rel, typeLetter(e.Type), e.Mode.Perm())
		switch e.Type {
		case fstree.Regular:
			io.WriteString(h, hex.EncodeToString(e.sum[:]))
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

// statIn and openIn reach rel only inside dir, following symlinks that stay
// inside: a file swapped for a link leading outside since the walk is not
// followed.
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

// limitedBuffer keeps up to max bytes and notes whether more came.
type limitedBuffer struct {
	b    []byte
	max  int
	over bool
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if !l.over {
		if len(l.b)+len(p) > l.max {
			l.over, l.b = true, nil
		} else {
			l.b = append(l.b, p...)
		}
	}
	return len(p), nil
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
