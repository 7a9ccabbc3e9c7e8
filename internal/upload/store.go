package upload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"
	"golang.org/x/sys/unix"

	"github.com/faasvm/appliance/internal/config"
	"github.com/faasvm/appliance/internal/function"
)

// Errors Store's methods return (wrapped); the gateway maps them to
// statuses.
var (
	// ErrBadName: the name is not a valid function name (400).
	ErrBadName = errors.New("invalid function name")
	// ErrConflict: the mounted functions folder has a folder of that name,
	// which wins over uploads (409).
	ErrConflict = errors.New("a function folder of that name is mounted")
	// ErrNotFound: no uploaded function of that name (404).
	ErrNotFound = errors.New("no uploaded function of that name")
	// ErrTooLarge: the archive itself is larger than the limit (413).
	ErrTooLarge = errors.New("upload too large")
	// ErrInvalid: the extracted folder is not a valid function (422).
	ErrInvalid = errors.New("invalid function")
	// ErrBadSource: POST /api/functions's fields are wrong (400).
	ErrBadSource = errors.New("invalid source upload")
)

// Store keeps the uploaded functions: one folder each in Dir, never in
// FunctionsDir.
type Store struct {
	// Dir is the uploads directory (appliance-owned, in the state volume).
	Dir string
	// FunctionsDir is the mounted functions folder, only read: a name
	// there wins.
	FunctionsDir string
	// Limits bound one archive; Limits.MaxSize also bounds the archive's
	// own size.
	Limits Limits
	// Validate checks a folder by the same rules as a mounted one
	// (function.Load) and returns the version it will deploy as; nil
	// accepts every folder.
	Validate func(dir string) (version string, err error)
	// Changed is told the name of every function put or deleted (the
	// controller's Sync), so the deploy starts without waiting for the
	// watcher; nil: only the watcher notices.
	Changed func(name string)
	Logger  *slog.Logger

	mu sync.Mutex // one rename into place at a time
}

// Prepare makes Dir and clears what a crash left behind (hidden work
// folders), so it is safe to call at every start.
func (s *Store) Prepare() error {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return fmt.Errorf("uploads dir (FAAS_UPLOADS_DIR): %w", err)
	}
	entries, err := os.ReadDir(s.Dir)
	if err != nil {
		return fmt.Errorf("uploads dir (FAAS_UPLOADS_DIR): %w", err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			if err := os.RemoveAll(filepath.Join(s.Dir, e.Name())); err != nil {
				return fmt.Errorf("clearing %s: %w", e.Name(), err)
			}
		}
	}
	return nil
}

func (s *Store) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// Result says what a Put or Create did.
type Result struct {
	Name    string `json:"name"`
	Created bool   `json:"created"` // false: an earlier upload was replaced
	Files   int    `json:"files"`
	Bytes   int64  `json:"bytes"`
	// Version is the version the controller will deploy (the folder's
	// digest, as GET /api/functions/<name> shows it once it serves).
	Version string `json:"version,omitempty"`
}

// checkName refuses invalid names and names of mounted folders.
func (s *Store) checkName(name string) error {
	if err := function.ValidateName(name); err != nil {
		return fmt.Errorf("%w: %v", ErrBadName, err)
	}
	if _, err := os.Lstat(filepath.Join(s.FunctionsDir, name)); err == nil {
		return fmt.Errorf("%w: %s is in the functions folder, which wins over uploads: rename the upload or change the folder on the host", ErrConflict, name)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("checking the functions folder: %w", err)
	}
	return nil
}

// Put deploys the archive body (.tar.gz or .zip) as function name. A folder
// that holds exactly one folder and nothing else is taken as that folder
// (tar czf f.tgz myfn/ works as well as tar czf f.tgz -C myfn .).
func (s *Store) Put(ctx context.Context, name string, body io.Reader) (Result, error) {
	if err := s.checkName(name); err != nil {
		return Result{}, err
	}
	work, err := os.MkdirTemp(s.Dir, ".upload-"+name+"-")
	if err != nil {
		return Result{}, fmt.Errorf("making a work folder: %w", err)
	}
	defer os.RemoveAll(work)

	archive := filepath.Join(work, "archive")
	if err := s.save(archive, body); err != nil {
		return Result{}, err
	}
	extracted := filepath.Join(work, "x")
	if err := os.Mkdir(extracted, 0o700); err != nil {
		return Result{}, fmt.Errorf("making a work folder: %w", err)
	}
	s.log().Info("extracting upload", "function", name, "step", "extract")
	if err := Extract(ctx, archive, extracted, s.Limits); err != nil {
		return Result{}, err
	}
	root, err := singleFolder(extracted)
	if err != nil {
		return Result{}, err
	}
	return s.install(ctx, name, work, root)
}

// save copies body to path, refusing more than Limits.MaxSize bytes.
func (s *Store) save(path string, body io.Reader) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("saving the upload: %w", err)
	}
	n, err := io.Copy(f, io.LimitReader(body, s.Limits.MaxSize+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("receiving the upload: %w", err)
	}
	if n > s.Limits.MaxSize {
		return fmt.Errorf("%w: the archive is larger than the %s function size limit", ErrTooLarge, config.Size(s.Limits.MaxSize))
	}
	return nil
}

// singleFolder returns dir, or its only entry when that is a folder.
func singleFolder(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("reading the extracted folder: %w", err)
	}
	if len(entries) == 1 && entries[0].IsDir() {
		return filepath.Join(dir, entries[0].Name()), nil
	}
	return dir, nil
}

// Sources maps a runtime to the handler file POST /api/functions writes.
var sources = map[string]string{
	function.RuntimePython3: "handler.py",
	function.RuntimeNode:    "index.js",
	function.RuntimeBash:    "handler.sh",
}

// Source is POST /api/functions's body: a function of one file.
type Source struct {
	Name    string `json:"name"`
	Runtime string `json:"runtime"` // python3, node or bash
	Mode    string `json:"mode"`    // exec or http ("": exec)
	Code    string `json:"code"`
}

// Create deploys a function made of one source file: the runtime's handler
// file (handler.py, index.js, handler.sh) holding src.Code, and a
// function.yaml naming the runtime and mode.
func (s *Store) Create(ctx context.Context, src Source) (Result, error) {
	if err := s.checkName(src.Name); err != nil {
		return Result{}, err
	}
	file, ok := sources[src.Runtime]
	if !ok {
		return Result{}, fmt.Errorf("%w: runtime %q: use python3, node or bash", ErrBadSource, src.Runtime)
	}
	switch src.Mode {
	case "", function.ModeExec, function.ModeHTTP:
	default:
		return Result{}, fmt.Errorf("%w: mode %q: use exec or http", ErrBadSource, src.Mode)
	}
	if strings.TrimSpace(src.Code) == "" {
		return Result{}, fmt.Errorf("%w: code is empty", ErrBadSource)
	}
	if int64(len(src.Code)) > s.Limits.MaxSize {
		return Result{}, fmt.Errorf("%w: the code is larger than the %s function size limit", ErrTooLarge, config.Size(s.Limits.MaxSize))
	}
	work, err := os.MkdirTemp(s.Dir, ".upload-"+src.Name+"-")
	if err != nil {
		return Result{}, fmt.Errorf("making a work folder: %w", err)
	}
	defer os.RemoveAll(work)
	root := filepath.Join(work, "x")
	if err := os.Mkdir(root, 0o755); err != nil {
		return Result{}, fmt.Errorf("making a work folder: %w", err)
	}
	m := map[string]string{"runtime": src.Runtime, "handler": file}
	if src.Mode != "" {
		m["mode"] = src.Mode
	}
	manifest, err := yaml.Marshal(m)
	if err != nil {
		return Result{}, fmt.Errorf("writing function.yaml: %w", err)
	}
	perm := fs.FileMode(0o644)
	if src.Runtime == function.RuntimeBash {
		perm = 0o755
	}
	if err := os.WriteFile(filepath.Join(root, function.ManifestFile), manifest, 0o644); err != nil {
		return Result{}, fmt.Errorf("writing function.yaml: %w", err)
	}
	if err := os.WriteFile(filepath.Join(root, file), []byte(src.Code), perm); err != nil {
		return Result{}, fmt.Errorf("writing %s: %w", file, err)
	}
	return s.install(ctx, src.Name, work, root)
}

// install validates root as function name and renames it into place,
// replacing an earlier upload. work is the caller's work folder (removed
// by the caller), on the same filesystem as Dir.
func (s *Store) install(ctx context.Context, name, work, root string) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	// Load takes the function's name from its folder's.
	staged := filepath.Join(work, name)
	if err := os.Rename(root, staged); err != nil {
		return Result{}, fmt.Errorf("staging the folder: %w", err)
	}
	res := Result{Name: name}
	if err := filepath.WalkDir(staged, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == staged {
			return nil
		}
		res.Files++
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				res.Bytes += fi.Size()
			}
		}
		return nil
	}); err != nil {
		return Result{}, fmt.Errorf("reading the staged folder: %w", err)
	}
	if s.Validate != nil {
		v, err := s.Validate(staged)
		if err != nil {
			return Result{}, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		res.Version = v
	}

	// What is renamed into place must be on disk first: after a power
	// cut the folder must not appear with empty or short files.
	if err := syncTree(staged); err != nil {
		return Result{}, fmt.Errorf("flushing the staged folder to disk: %w", err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkName(name); err != nil { // a folder may have been mounted meanwhile
		return Result{}, err
	}
	dst := filepath.Join(s.Dir, name)
	// Replacing an earlier upload swaps the two folders in one step, so a
	// crash leaves either version in place, never none.
	switch err := unix.Renameat2(unix.AT_FDCWD, staged, unix.AT_FDCWD, dst, unix.RENAME_EXCHANGE); {
	case err == nil:
	case errors.Is(err, unix.ENOENT):
		res.Created = true
		if err := os.Rename(staged, dst); err != nil {
			return Result{}, fmt.Errorf("moving the upload into place: %w", err)
		}
	case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS):
		// A file system without the exchange: move the old one away first.
		old := filepath.Join(work, ".old")
		if err := os.Rename(dst, old); err != nil {
			return Result{}, fmt.Errorf("moving the earlier upload away: %w", err)
		}
		if err := os.Rename(staged, dst); err != nil {
			_ = os.Rename(old, dst) // put the earlier version back
			return Result{}, fmt.Errorf("moving the upload into place: %w", err)
		}
	default:
		return Result{}, fmt.Errorf("moving the upload into place: %w", err)
	}
	if err := syncDir(s.Dir); err != nil {
		return Result{}, fmt.Errorf("flushing %s to disk: %w", s.Dir, err)
	}
	s.log().Info("upload stored", "function", name, "step", "store", "created", res.Created, "files", res.Files, "bytes", res.Bytes)
	if s.Changed != nil {
		s.Changed(name)
	}
	return res, nil
}

// Delete removes the uploaded function name (its VMs stop once the
// controller sees the folder gone).
func (s *Store) Delete(name string) error {
	if err := s.checkName(name); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	dst := filepath.Join(s.Dir, name)
	if _, err := os.Lstat(dst); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	gone, err := os.MkdirTemp(s.Dir, ".deleted-"+name+"-")
	if err != nil {
		return fmt.Errorf("deleting %s: %w", name, err)
	}
	if err := os.Rename(dst, filepath.Join(gone, name)); err != nil {
		os.Remove(gone)
		return fmt.Errorf("deleting %s: %w", name, err)
	}
	if err := os.RemoveAll(gone); err != nil {
		s.log().Warn("removing a deleted upload's files", "function", name, "err", err)
	}
	s.log().Info("upload deleted", "function", name, "step", "delete")
	if s.Changed != nil {
		s.Changed(name)
	}
	return nil
}

// syncTree flushes every file and folder under root to disk.
func syncTree(root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && !d.Type().IsRegular() {
			return nil // symlinks live in their folder's entries
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		serr := f.Sync()
		if cerr := f.Close(); serr == nil {
			serr = cerr
		}
		return serr
	})
}

// syncDir flushes dir's entries (the renames in it) to disk.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	serr := d.Sync()
	if cerr := d.Close(); serr == nil {
		serr = cerr
	}
	return serr
}
