package appliance

import (
	"bufio"
	"bytes"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/faasvm/appliance/internal/config"
)

// The host memory budget's default: a fraction of the memory the appliance
// may use, the host's MemTotal or, when smaller, the container's cgroup
// limit (inside Docker the host's memory is not the appliance's to take).

// memoryFiles are where the host's and the container's memory are read
// (variables for the tests).
var memoryFiles = struct{ meminfo, cgroupV2, cgroupV1 string }{
	meminfo:  "/proc/meminfo",
	cgroupV2: "/sys/fs/cgroup/memory.max",
	cgroupV1: "/sys/fs/cgroup/memory/memory.limit_in_bytes",
}

// memoryBudget resolves FAAS_MEMORY_BUDGET and logs it with its source.
func memoryBudget(cfg *config.Config, log *slog.Logger) (int64, error) {
	if config.MemoryBudgetOff(cfg.MemoryBudget) {
		log.Warn("memory budget off (FAAS_MEMORY_BUDGET): VMs start whatever the host has left; the kernel's OOM killer may stop one")
		return 0, nil
	}
	available, source := availableMemory()
	budget, err := config.ResolveMemoryBudget(cfg.MemoryBudget, available)
	if err != nil {
		return 0, err
	}
	log.Info("memory budget", "budget_mib", budget>>20, "setting", cfg.MemoryBudget, "of_mib", available>>20, "from", source,
		"counted_per_vm", "guest memory + 64 MiB")
	return budget, nil
}

// availableMemory is the memory the appliance may use and where that
// figure comes from; 0 when nothing could be read.
func availableMemory() (int64, string) {
	host := memTotal(memoryFiles.meminfo)
	limit, file := int64(0), ""
	for _, f := range []string{memoryFiles.cgroupV2, memoryFiles.cgroupV1} {
		if n := cgroupLimit(f); n > 0 {
			limit, file = n, f
			break
		}
	}
	switch {
	case limit > 0 && (host == 0 || limit < host):
		return limit, "container memory limit (" + file + ")"
	case host > 0:
		return host, "host memory (MemTotal)"
	}
	return 0, "unknown"
}

// memTotal reads MemTotal from a /proc/meminfo file; 0 when absent.
func memTotal(path string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		rest, ok := strings.CutPrefix(s.Text(), "MemTotal:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil || kb <= 0 || kb > 1<<40 {
			return 0
		}
		return kb << 10
	}
	return 0
}

// cgroupLimit reads a cgroup memory limit file: v2's "max" and v1's
// page-rounded huge value mean none (0).
func cgroupLimit(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	v := string(bytes.TrimSpace(b))
	if v == "max" {
		return 0
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 || n >= 1<<60 {
		return 0
	}
	return n
}
