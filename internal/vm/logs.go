package vm

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// KeepLog moves the log file src into dir (created if need be) as name,
// copying it when dir is on another file system. A missing src is not an
// error: there is nothing to keep.
func KeepLog(src, dir, name string) error {
	if _, err := os.Stat(src); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("keeping console log: %w", err)
	}
	dst := filepath.Join(dir, name)
	if err := os.Rename(src, dst); err == nil {
		return nil
	} else if !errors.Is(err, syscall.EXDEV) {
		return fmt.Errorf("keeping console log: %w", err)
	}
	if err := copyFile(dst, src); err != nil {
		return fmt.Errorf("keeping console log: %w", err)
	}
	return nil
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
// is set it first keeps the VM's console log there as keptName (see
// KeepLog); the directory is removed even if that fails, and both errors
// are joined.
func RemoveVMDir(dir, consoleLog, keepLogsDir, keptName string) error {
	var errs []error
	if keepLogsDir != "" {
		if err := KeepLog(consoleLog, keepLogsDir, keptName); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, fmt.Errorf("removing vm dir: %w", err))
	}
	return errors.Join(errs...)
}
