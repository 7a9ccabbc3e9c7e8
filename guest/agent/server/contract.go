package server

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/faasvm/appliance/guest/agent/bootstrap"
	"github.com/faasvm/appliance/guest/protocol"
)

// contractEnv is what a handler's contract needs to know beyond the
// request (see package bootstrap): the contract, the function to call and
// what the Lambda context reports.
func contractEnv(cfg *protocol.Config) []string {
	env := []string{
		"FAAS_TEMPLATE=" + cfg.Template,
		"FAAS_FUNCTION=" + cfg.Function,
		"FAAS_FUNCTION_NAME=" + cfg.Name,
		"FAAS_TIMEOUT_MS=" + strconv.FormatInt(time.Duration(cfg.Timeout).Milliseconds(), 10),
	}
	if cfg.MemoryMB > 0 {
		env = append(env, "FAAS_MEMORY_MB="+strconv.Itoa(cfg.MemoryMB))
	}
	return env
}

// classicConfig returns cfg with a classic template's command replaced by
// its runner: [python3 handler.py] becomes [python3 RUNDIR/classic.py
// handler.py], [node handler.js] [node RUNDIR/classic.cjs handler.js].
// Other configs come back as they are.
func classicConfig(cfg *protocol.Config, runDir string) *protocol.Config {
	if cfg.Template != protocol.TemplateOpenFaaSClassic || len(cfg.Command) != 2 || runDir == "" {
		return cfg
	}
	var runner string
	switch cfg.Command[0] {
	case "python3":
		runner = bootstrap.ClassicPython
	case "node":
		runner = bootstrap.ClassicNode
	default:
		return cfg
	}
	c := *cfg
	c.Command = []string{cfg.Command[0], filepath.Join(runDir, runner), cfg.Command[1]}
	return &c
}

// writeClassicRunner writes the runner a classic command names.
func writeClassicRunner(runDir, path string) error {
	src, err := bootstrap.ClassicSource(filepath.Base(path))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", runDir, err)
	}
	if err := os.WriteFile(path, src, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
