package vm

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// PSSReporter is an optional Machine capability: a machine whose engine
// runs it as a host process tells that process's proportional set size
// (PSS: its private memory plus its share of pages mapped by others, such
// as the clean pages of a snapshot's RAM file that every clone maps).
type PSSReporter interface {
	// PSS returns the VM process's PSS in bytes.
	PSS() (int64, error)
}

// ProcessPSS reads the PSS of process pid from /proc/<pid>/smaps_rollup.
func ProcessPSS(pid int) (int64, error) {
	if pid <= 0 {
		return 0, fmt.Errorf("reading PSS: no process (pid %d)", pid)
	}
	path := fmt.Sprintf("/proc/%d/smaps_rollup", pid)
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("reading PSS: %w", err)
	}
	return parsePSS(data, path)
}

// parsePSS finds the "Pss:" line (in kB) of an smaps_rollup file.
func parsePSS(data []byte, path string) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) < 2 || string(f[0]) != "Pss:" {
			continue
		}
		kb, err := strconv.ParseInt(string(f[1]), 10, 64)
		if err != nil || kb < 0 {
			return 0, fmt.Errorf("reading PSS: %s has a malformed Pss line %q", path, sc.Text())
		}
		if len(f) > 2 && string(f[2]) != "kB" {
			return 0, fmt.Errorf("reading PSS: %s gives Pss in %q, not kB", path, f[2])
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("reading PSS: %s has no Pss line", path)
}
