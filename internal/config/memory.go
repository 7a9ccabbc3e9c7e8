package config

import (
	"fmt"
	"strings"
)

// MemoryBudgetOff reports whether s turns the host memory budget off.
func MemoryBudgetOff(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "0", "off", "none":
		return true
	}
	return false
}

// ResolveMemoryBudget resolves a memory budget setting against the memory
// the appliance may use (the host's, or its container's limit when
// smaller): the bytes the guests' committed memory may reach, 0 when the
// budget is off.
func ResolveMemoryBudget(s string, available int64) (int64, error) {
	if MemoryBudgetOff(s) {
		return 0, nil
	}
	size, pct, err := ParseBudget(s)
	if err != nil {
		return 0, fmt.Errorf("memory_budget: %w (or off)", err)
	}
	if pct > 0 {
		if available <= 0 {
			return 0, fmt.Errorf("memory_budget %q: the host's memory is unknown; give a size such as 16GiB", s)
		}
		return int64(float64(available) * pct / 100), nil
	}
	return int64(size), nil
}
