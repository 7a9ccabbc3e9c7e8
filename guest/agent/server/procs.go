package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// resolveCommand finds the executable for name the way the agent documents:
// an absolute path as is, a path with a slash relative to the code
// directory, a bare name through PATH (the handler's PATH, not the agent's).
func resolveCommand(name, codeDir, pathEnv string) (string, error) {
	switch {
	case name == "":
		return "", errors.New("empty command")
	case filepath.IsAbs(name):
		return name, checkExecutable(name)
	case strings.Contains(name, "/"):
		p := filepath.Join(codeDir, name)
		return p, checkExecutable(p)
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" || !filepath.IsAbs(dir) {
			continue // never the working directory by accident
		}
		p := filepath.Join(dir, name)
		if checkExecutable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found in PATH %q", name, pathEnv)
}

func checkExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", p)
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s: not executable", p)
	}
	return nil
}

// mergeEnv returns base with the variables of add set, replacing any
// earlier value; add's keys follow base in sorted order.
func mergeEnv(base []string, add map[string]string) []string {
	out := make([]string, 0, len(base)+len(add))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if _, over := add[k]; !over {
			out = append(out, kv)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(add)) {
		out = append(out, k+"="+add[k])
	}
	return out
}

// lookupEnv returns the last value of key in env.
func lookupEnv(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v
		}
	}
	return ""
}

// killGroup signals the process group pgid. A group that is already gone is
// not an error.
func killGroup(pgid int, sig syscall.Signal) error {
	if pgid <= 1 {
		return fmt.Errorf("refusing to signal process group %d", pgid)
	}
	if err := syscall.Kill(-pgid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signalling process group %d: %w", pgid, err)
	}
	return nil
}

// stopGroups sends SIGTERM to every process group in procs (pgid → closed
// when that process has been waited for), gives them grace to exit, then
// SIGKILLs the rest and waits for them or ctx.
func stopGroups(ctx context.Context, grace time.Duration, procs map[int]<-chan struct{}) error {
	var errs []error
	for pgid := range procs {
		errs = append(errs, killGroup(pgid, syscall.SIGTERM))
	}
	graceCtx, cancel := context.WithTimeout(ctx, grace)
	defer cancel()
	pending := maps.Clone(procs)
	for pgid, done := range procs {
		select {
		case <-done:
			delete(pending, pgid)
		case <-graceCtx.Done():
		}
	}
	for pgid := range pending {
		errs = append(errs, killGroup(pgid, syscall.SIGKILL))
	}
	for pgid, done := range pending {
		select {
		case <-done:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("process group %d still running: %w", pgid, ctx.Err()))
		}
	}
	return errors.Join(errs...)
}
