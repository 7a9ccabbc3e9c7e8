package appliance

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAvailableMemory(t *testing.T) {
	const meminfo = "MemTotal:       24576000 kB\nMemFree:         1000 kB\n"
	tests := []struct {
		name               string
		meminfo, v2, v1    string // "" : file absent
		want               int64
		wantSourceContains string
	}{
		{"host only", meminfo, "", "", 24576000 << 10, "MemTotal"},
		{"cgroup v2 max", meminfo, "max\n", "", 24576000 << 10, "MemTotal"},
		{"cgroup v2 limit", meminfo, "4294967296\n", "", 4 << 30, "memory.max"},
		{"cgroup v1 limit", meminfo, "", "2147483648\n", 2 << 30, "limit_in_bytes"},
		{"cgroup v1 unlimited", meminfo, "", "9223372036854771712\n", 24576000 << 10, "MemTotal"},
		{"limit above host", meminfo, "99999999999999\n", "", 24576000 << 10, "MemTotal"},
		{"garbage everywhere", "MemTotal: lots\n", "-5\n", "x\n", 0, "unknown"},
		{"nothing readable", "", "", "", 0, "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			write := func(name, content string) string {
				p := filepath.Join(dir, name)
				if content != "" {
					if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				return p
			}
			saved := memoryFiles
			t.Cleanup(func() { memoryFiles = saved })
			memoryFiles.meminfo = write("meminfo", tt.meminfo)
			memoryFiles.cgroupV2 = write("memory.max", tt.v2)
			memoryFiles.cgroupV1 = write("memory.limit_in_bytes", tt.v1)
			got, source := availableMemory()
			if got != tt.want || !strings.Contains(source, tt.wantSourceContains) {
				t.Errorf("availableMemory() = %d, %q; want %d, a source naming %q", got, source, tt.want, tt.wantSourceContains)
			}
		})
	}
}
