package vm

import (
	"os"
	"testing"
)

func TestParsePSS(t *testing.T) {
	for _, tt := range []struct {
		name string
		in   string
		want int64
		ok   bool
	}{
		{"rollup", "559f-7ffc ---p 00000000 00:00 0 [rollup]\nRss:  1748 kB\nPss:   241 kB\nPss_Dirty: 112 kB\n", 241 << 10, true},
		{"pss_dirty only", "Rss: 1 kB\nPss_Dirty: 112 kB\n", 0, false},
		{"empty", "", 0, false},
		{"not a number", "Pss: lots kB\n", 0, false},
		{"negative", "Pss: -4 kB\n", 0, false},
		{"other unit", "Pss: 4 MB\n", 0, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parsePSS([]byte(tt.in), "test")
			if (err == nil) != tt.ok || got != tt.want {
				t.Fatalf("parsePSS(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
			}
		})
	}
}

func TestProcessPSSOfThisProcess(t *testing.T) {
	got, err := ProcessPSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if got <= 0 {
		t.Fatalf("PSS of this process = %d, want > 0", got)
	}
	if _, err := ProcessPSS(0); err == nil {
		t.Fatal("ProcessPSS(0) did not fail")
	}
}
