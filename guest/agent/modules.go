package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// parseModuleList reads modules.list: one module file name per line, blank
// lines and #-comments ignored.
func parseModuleList(s string) []string {
	var names []string
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		names = append(names, line)
	}
	return names
}

// loadModules loads every module with load, in passes: a module whose
// dependencies are not loaded yet fails, and is retried in the next pass.
// It stops when all are loaded (returning the number of passes) or when a
// pass makes no progress (returning every remaining failure). A module that
// is already loaded (EEXIST) counts as loaded.
func loadModules(names []string, load func(name string) error) (int, error) {
	pending := names
	passes := 0
	for len(pending) > 0 {
		passes++
		var failed []string
		var errs []error
		for _, name := range pending {
			err := load(name)
			if err == nil || errors.Is(err, unix.EEXIST) {
				continue
			}
			failed = append(failed, name)
			errs = append(errs, fmt.Errorf("module %s: %w", name, err))
		}
		if len(failed) == len(pending) {
			return passes, fmt.Errorf("%d of %d modules did not load: %w", len(failed), len(names), errors.Join(errs...))
		}
		pending = failed
	}
	return passes, nil
}

// finitModule loads the kernel module file at path.
func finitModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil {
		return fmt.Errorf("finit_module: %w", err)
	}
	return nil
}
