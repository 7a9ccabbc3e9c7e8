package config

import "time"

// LimitsConfig holds what bounds the appliance's time and host resources:
// how long a deploy may prepare, how many VMs boot at once, and how large
// a VM's console log grows.
type LimitsConfig struct {
	// PrepareTimeout bounds one deploy's prepare step: its root
	// filesystem (Docker build or pull and export), code disk and
	// dependency install together.
	PrepareTimeout time.Duration
	// MaxConcurrentBoots is the most VMs booting at once, appliance-wide;
	// 0 picks it from the host's cores and the accelerator.
	MaxConcurrentBoots int
	// ConsoleMaxSize bounds one running VM's console log on disk (the
	// newest output is kept).
	ConsoleMaxSize Size
	// MemoryBudget bounds the guests' committed memory: a size ("16GiB"),
	// a percentage of the memory the appliance may use (the host's, or
	// its container's limit when smaller), or off (ResolveMemoryBudget).
	MemoryBudget string
}

// limitsSettings are the rows of the limits' settings.
func limitsSettings() []setting {
	return []setting{
		{key: "prepare_timeout", def: "15m", typ: "duration",
			help:  "longest a deploy's prepare may take (root filesystem build or pull, code disk, dependency install)",
			field: func(c *Config) any { return &c.PrepareTimeout }, check: func(c *Config) string {
				if c.PrepareTimeout <= 0 {
					return "must be a positive duration"
				}
				return ""
			}},
		{key: "max_concurrent_boots", def: "0", typ: "int",
			help:  "most VMs booting at once (0: from the host's cores: TCG max(1, cores/2), KVM 2 x cores); others wait in line",
			field: func(c *Config) any { return &c.MaxConcurrentBoots }, check: func(c *Config) string {
				if c.MaxConcurrentBoots < 0 {
					return "must be at least 0"
				}
				return ""
			}},
		{key: "memory_budget", def: "75%", typ: "string",
			help:  "most memory the VMs may commit (guest RAM + QEMU overhead each): a size (16GiB), a percentage of the host's or container's memory, or off; a start that does not fit scales idle functions to zero first, else waits (503 with Retry-After)",
			field: func(c *Config) any { return &c.MemoryBudget }, check: func(c *Config) string {
				if MemoryBudgetOff(c.MemoryBudget) {
					return ""
				}
				if _, _, err := ParseBudget(c.MemoryBudget); err != nil {
					return err.Error() + ", or off"
				}
				return ""
			}},
		{key: "console_max_size", def: "1MB", typ: "size",
			help:  "bound on one running VM's console log on disk (the newest output is kept)",
			field: func(c *Config) any { return &c.ConsoleMaxSize }, check: func(c *Config) string {
				if c.ConsoleMaxSize < 16*KiB {
					return "must be at least 16KB"
				}
				return ""
			}},
	}
}
