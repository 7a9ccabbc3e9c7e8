package vm

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
)

// DefaultKeptLogs is how many kept console logs KeepLog leaves in its
// directory per VM name (see PruneLogs).
const DefaultKeptLogs = 5

// keptLogSuffix ends the name of every kept console log.
const keptLogSuffix = ".console.log"

// KeptLogName is the file name KeepLog gives the console log of the VM
// with the given name and id (its UID): <name>-<id>.console.log.
func KeptLogName(name, id string) string {
	return name + "-" + id + keptLogSuffix
}

// KeepLog moves the log file src into dir (created if need be) as
// KeptLogName(name, id), copying it when dir is on another file system,
// then prunes dir to the DefaultKeptLogs newest logs of each VM name (see
// PruneLogs) so that it stays bounded. A missing src is not an error:
// there is nothing to keep.
func KeepLog(src, dir, name, id string) error {
	if _, err := os.Stat(src); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("keeping console log: %w", err)
	}
	dst := filepath.Join(dir, KeptLogName(name, id))
	if err := os.Rename(src, dst); err != nil {
		if !errors.Is(err, syscall.EXDEV) {
			return fmt.Errorf("keeping console log: %w", err)
		}
		if err := copyFile(dst, src); err != nil {
			return fmt.Errorf("keeping console log: %w", err)
		}
	}
	return PruneLogs(dir, DefaultKeptLogs)
}

// PruneLogs removes from dir all but the keep newest (by modification
// time) kept console logs of each VM name. A kept log is a file named as
// KeptLogName makes it; its VM name is what precedes the id, which is a
// UUID (the UIDs vm.NewVM makes) when the name ends in one, else the text
// after the last "-". Other files are left alone, as is a missing dir.
func PruneLogs(dir string, keep int) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pruning kept logs: %w", err)
	}
	type log struct {
		name  string
		mtime time.Time
	}
	byVM := map[string][]log{}
	for _, ent := range ents {
		vmName, ok := keptLogVM(ent.Name())
		if !ok || !ent.Type().IsRegular() {
			continue
		}
		fi, err := ent.Info()
		if err != nil {
			continue // removed meanwhile (a concurrent prune)
		}
		byVM[vmName] = append(byVM[vmName], log{ent.Name(), fi.ModTime()})
	}
	var errs []error
	for _, logs := range byVM {
		if len(logs) <= keep {
			continue
		}
		slices.SortFunc(logs, func(a, b log) int { // newest first
			if c := b.mtime.Compare(a.mtime); c != 0 {
				return c
			}
			return strings.Compare(b.name, a.name)
		})
		for _, l := range logs[max(keep, 0):] {
			if err := os.Remove(filepath.Join(dir, l.name)); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("pruning kept logs: %w", errors.Join(errs...))
	}
	return nil
}

// keptLogVM returns the VM name of a kept log's file name (see PruneLogs);
// ok is false for a file that is not a kept log.
func keptLogVM(file string) (name string, ok bool) {
	base, ok := strings.CutSuffix(file, keptLogSuffix)
	if !ok {
		return "", false
	}
	const uuidLen = 36
	if i := len(base) - uuidLen - 1; i > 0 && base[i] == '-' {
		if _, err := uuid.Parse(base[i+1:]); err == nil {
			return base[:i], true
		}
	}
	i := strings.LastIndexByte(base, '-')
	if i <= 0 || i == len(base)-1 {
		return "", false
	}
	return base[:i], true
}

// copyFile copies src to a new file dst.
func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// RemoveVMDir removes a stopped VM's host directory dir. When keepLogsDir
// is set it first keeps the VM's console log there, named after the VM's
// name and id (see KeepLog); the directory is removed even if that fails,
// and both errors are joined.
func RemoveVMDir(dir, consoleLog, keepLogsDir, name, id string) error {
	var errs []error
	if keepLogsDir != "" {
		if err := KeepLog(consoleLog, keepLogsDir, name, id); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, fmt.Errorf("removing vm dir: %w", err))
	}
	return errors.Join(errs...)
}
