package function

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
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
	rel  string // slash-separated path below the root
	mode fs.FileMode
	size int64
	link string // symlink target
}

// scanTree walks dir without following symlinks and without writing
// anything, refuses what cannot be copied into a VM faithfully, and
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
	realRoot, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, fmt.Errorf("resolving folder: %w", err)
	}

	t := &tree{files: map[string]bool{}, top: map[string][]byte{}, exts: map[string]bool{}}
	// Errors below the root use %v, not %w: a file that vanished mid-walk
	// must not read as fs.ErrNotExist, which means the folder is gone.
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("walking folder: %v", err)
		}
		if p == dir {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return fmt.Errorf("walking folder: %v", err)
		}
		rel = filepath.ToSlash(rel)
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("walking folder: %v", err)
		}
		e := entry{rel: rel, mode: info.Mode()}
		switch {
		case info.Mode().IsRegular():
			e.size = info.Size()
			t.size += e.size
			if maxSize > 0 && t.size > maxSize {
				return invalidf("folder holds more than the %d bytes a function may have (at %s)", maxSize, rel)
			}
			if ext := strings.ToLower(path.Ext(rel)); ext != "" {
				t.exts[ext] = true
			}
		case info.IsDir():
		case info.Mode()&fs.ModeSymlink != 0:
			if e.link, err = checkSymlink(realRoot, p, rel); err != nil {
				return err
			}
		default:
			return invalidf("%s is a %s; a function folder may hold only files, folders and symlinks", rel, typeName(info.Mode()))
		}
		t.entries = append(t.entries, e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(t.entries, func(i, j int) bool { return t.entries[i].rel < t.entries[j].rel })

	h := sha256.New()
	var read int64
	for _, e := range t.entries {
		fmt.Fprintf(h, "%s\x00%c%o\x00", e.rel, typeLetter(e.mode), e.mode.Perm())
		switch {
		case e.mode.IsRegular():
			sum, n, content, err := hashFile(filepath.Join(dir, filepath.FromSlash(e.rel)), limitLeft(maxSize, read), !strings.Contains(e.rel, "/"))
			if err != nil {
				return nil, err
			}
			read += n
			if !strings.Contains(e.rel, "/") {
				t.files[e.rel] = true
				if content != nil {
					t.top[e.rel] = content
				}
			}
			h.Write([]byte(sum))
		case e.mode&fs.ModeSymlink != 0:
			fmt.Fprintf(h, "->%s", e.link)
			if !strings.Contains(e.rel, "/") {
				if err := t.readLinked(dir, e.rel); err != nil {
					return nil, err
				}
			}
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
	fi, err := os.Stat(filepath.Join(dir, filepath.FromSlash(rel)))
	return err == nil && fi.Mode().IsRegular()
}

// content returns a file's bytes: from the scan for top-level files, else
// read now. Files over maxParsedFile, and unreadable ones, give nil.
func (t *tree) content(dir, rel string) []byte {
	if b, ok := t.top[rel]; ok {
		return b
	}
	f, err := os.Open(filepath.Join(dir, filepath.FromSlash(rel)))
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
	p := filepath.Join(dir, rel)
	fi, err := os.Stat(p)
	if err != nil || !fi.Mode().IsRegular() {
		return nil // a link to a folder, or gone since the walk
	}
	t.files[rel] = true
	if fi.Size() > maxParsedFile {
		return nil
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("reading %s: %v", rel, err)
	}
	if len(b) <= maxParsedFile {
		t.top[rel] = b
	}
	return nil
}

// checkSymlink refuses a symlink at p unless its target is relative and
// resolves (through any further links) to a path inside realRoot. It
// returns the link's target.
func checkSymlink(realRoot, p, rel string) (string, error) {
	target, err := os.Readlink(p)
	if err != nil {
		return "", fmt.Errorf("reading symlink %s: %v", rel, err)
	}
	if filepath.IsAbs(target) {
		return "", invalidf("symlink %s points to the absolute path %s; only relative links to files inside the folder are allowed", rel, target)
	}
	outside := invalidf("symlink %s -> %s points outside the folder; only links to files inside it are allowed", rel, target)
	if lexical := path.Join(path.Dir(rel), filepath.ToSlash(target)); lexical == ".." || strings.HasPrefix(lexical, "../") {
		return "", outside
	}
	// Resolving catches what the lexical check cannot, such as a link
	// through another link to the folder itself ("self/..").
	resolved, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", invalidf("symlink %s -> %s does not resolve to anything inside the folder", rel, target)
	}
	inside, err := filepath.Rel(realRoot, resolved)
	if err != nil || inside == ".." || strings.HasPrefix(inside, ".."+string(filepath.Separator)) {
		return "", outside
	}
	return target, nil
}

// hashFile returns the hex sha256 of a file's content and its length. It
// reads at most limit+1 bytes (limit < 0: no limit) and fails past limit.
// With keep, content holds the bytes when there are at most maxParsedFile.
func hashFile(p string, limit int64, keep bool) (sum string, n int64, content []byte, err error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, nil, fmt.Errorf("reading %s: %v", filepath.Base(p), err)
	}
	defer f.Close()
	// The folder may change under us; never read a device or pipe that
	// replaced a file since the walk.
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return "", 0, nil, fmt.Errorf("reading %s: no longer a regular file (%v)", filepath.Base(p), err)
	}
	var r io.Reader = f
	if limit >= 0 {
		r = io.LimitReader(f, limit+1)
	}
	h := sha256.New()
	var buf *limitedBuffer
	var w io.Writer = h
	if keep {
		buf = &limitedBuffer{max: maxParsedFile}
		w = io.MultiWriter(h, buf)
	}
	n, err = io.Copy(w, r)
	if err != nil {
		return "", n, nil, fmt.Errorf("reading %s: %v", filepath.Base(p), err)
	}
	if limit >= 0 && n > limit {
		return "", n, nil, invalidf("folder grew past the size limit while it was read (at %s)", filepath.Base(p))
	}
	if buf != nil && !buf.over {
		content = buf.b
		if content == nil {
			content = []byte{}
		}
	}
	return hex.EncodeToString(h.Sum(nil)), n, content, nil
}

func limitLeft(maxSize, read int64) int64 {
	if maxSize <= 0 {
		return -1
	}
	return maxSize - read
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

func typeLetter(m fs.FileMode) byte {
	switch {
	case m.IsDir():
		return 'd'
	case m&fs.ModeSymlink != 0:
		return 'l'
	default:
		return 'f'
	}
}

func typeName(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	default:
		return "special file"
	}
}
