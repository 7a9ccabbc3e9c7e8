package vm

import (
	"fmt"
	"path/filepath"
	"time"
)

// ValidateDirs checks the directories every engine's config names: the
// state dir (required, absolute) and the keep-logs dir (absolute when set).
// engine prefixes the errors ("qemu config: ...").
func ValidateDirs(engine, stateDir, keepLogsDir string) error {
	if stateDir == "" {
		return fmt.Errorf("%s config: state dir is empty", engine)
	}
	if !filepath.IsAbs(stateDir) {
		return fmt.Errorf("%s config: state dir %q is not an absolute path", engine, stateDir)
	}
	if keepLogsDir != "" && !filepath.IsAbs(keepLogsDir) {
		return fmt.Errorf("%s config: keep-logs dir %q is not an absolute path", engine, keepLogsDir)
	}
	return nil
}

// NamedDuration is a config duration and what it is called in errors.
type NamedDuration struct {
	Name  string
	Value time.Duration
}

// ValidateDurations reports the first negative duration (0 means "use the
// default" and is accepted). engine prefixes the errors.
func ValidateDurations(engine string, ds ...NamedDuration) error {
	for _, d := range ds {
		if d.Value < 0 {
			return fmt.Errorf("%s config: %s %s is negative", engine, d.Name, d.Value)
		}
	}
	return nil
}
