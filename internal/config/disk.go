package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// DiskConfig holds the settings that keep the state directory bounded.
type DiskConfig struct {
	// KeepVersions is how many previous versions of each function keep
	// their disks for a quick rollback; older ones are collected.
	KeepVersions int
	// GCInterval is how often unreferenced cache entries are collected
	// besides after each deploy.
	GCInterval time.Duration
	// StateBudget bounds the state directory: a size ("40GiB") or a
	// percentage of its file system ("80%"); see Budget.
	StateBudget string
}

// Budget resolves StateBudget against a file system of fsBytes: the bytes
// the state directory may hold before the appliance warns.
func (c *DiskConfig) Budget(fsBytes int64) int64 {
	b, pct, err := ParseBudget(c.StateBudget)
	if err != nil {
		return 0
	}
	if pct > 0 {
		return int64(float64(fsBytes) * pct / 100)
	}
	return int64(b)
}

// ParseBudget reads a state budget: a size (see ParseSize), or a
// percentage in (0, 100] of the file system (returned as pct, size 0).
func ParseBudget(s string) (size Size, pct float64, err error) {
	t := strings.TrimSpace(s)
	if v, ok := strings.CutSuffix(t, "%"); ok {
		p, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || !(p > 0 && p <= 100) {
			return 0, 0, fmt.Errorf("%q is not a percentage above 0 and at most 100", s)
		}
		return 0, p, nil
	}
	n, err := ParseSize(t)
	if err != nil {
		return 0, 0, fmt.Errorf("%q %w, or a percentage of the file system such as 80%%", s, err)
	}
	if n <= 0 {
		return 0, 0, fmt.Errorf("%q must be above zero", s)
	}
	return n, 0, nil
}

// diskSettings are the rows of the state directory's bounds.
func diskSettings() []setting {
	return []setting{
		{key: "keep_versions", def: "2", typ: "int", help: "previous versions per function whose disks are kept for a quick rollback (older ones are removed)",
			field: func(c *Config) any { return &c.KeepVersions }, check: func(c *Config) string {
				if c.KeepVersions < 0 || c.KeepVersions > 1000 {
					return "must be between 0 and 1000"
				}
				return ""
			}},
		{key: "gc_interval", def: "10m", typ: "duration", help: "how often unreferenced disks are removed besides after each deploy",
			field: func(c *Config) any { return &c.GCInterval }, check: func(c *Config) string {
				if c.GCInterval < time.Second {
					return "must be at least 1s"
				}
				return ""
			}},
		{key: "state_budget", def: "80%", typ: "string", help: "size the state directory may reach before a warning names the largest users: a size (40GiB) or a percentage of its file system",
			field: func(c *Config) any { return &c.StateBudget }, check: func(c *Config) string {
				if _, _, err := ParseBudget(c.StateBudget); err != nil {
					return err.Error()
				}
				return ""
			}},
	}
}
