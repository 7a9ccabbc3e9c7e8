package vmtest

import (
	"strings"
	"sync"
	"testing"
)

func TestLogBuffer(t *testing.T) {
	tests := []struct {
		name    string
		writers int
		want    []string
	}{
		{name: "one writer", writers: 1, want: []string{"level=DEBUG", "msg=hello", "n=0"}},
		{name: "concurrent writers", writers: 8, want: []string{"n=0", "n=7"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			buf := &LogBuffer{}
			log := NewLogger(buf)
			var wg sync.WaitGroup
			for i := range tt.writers {
				wg.Go(func() { log.Debug("hello", "n", i) })
			}
			wg.Wait()
			got := buf.String()
			if n := strings.Count(got, "\n"); n != tt.writers {
				t.Errorf("got %d lines, want %d: %q", n, tt.writers, got)
			}
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("got %q, want it to contain %q", got, w)
				}
			}
		})
	}
}
