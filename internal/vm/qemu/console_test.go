package qemu

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConsoleLogCapped(t *testing.T) {
	tests := []struct {
		name    string
		max     int64
		chunk   int // bytes per write
		total   int // lines written
		wantMin int64
	}{
		{"small writes", 64 << 10, 100, 50000, 16 << 10},
		{"writes larger than the cap", 16 << 10, 100 << 10, 20000, 4 << 10},
		{"under the cap", 1 << 20, 4096, 100, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "console.log")
			w, c, err := startConsoleLog(path, tt.max, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			var all bytes.Buffer
			for i := range tt.total {
				fmt.Fprintf(&all, "line %08d %s\n", i, strings.Repeat("x", 40))
			}
			data := all.Bytes()
			peak := int64(0)
			for len(data) > 0 {
				n := min(tt.chunk, len(data))
				if _, err := w.Write(data[:n]); err != nil {
					t.Fatal(err)
				}
				data = data[n:]
				if st, err := os.Stat(path); err == nil {
					peak = max(peak, st.Size())
				}
			}
			w.Close()
			<-c.done
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			limit := max(tt.max, minConsoleMaxSize)
			if int64(len(b)) > limit || peak > limit {
				t.Errorf("console log %d bytes (peak %d), cap %d", len(b), peak, limit)
			}
			if int64(len(b)) < tt.wantMin {
				t.Errorf("console log %d bytes: kept too little (want >= %d)", len(b), tt.wantMin)
			}
			last := fmt.Sprintf("line %08d ", tt.total-1)
			lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
			if !strings.HasPrefix(lines[len(lines)-1], last) {
				t.Errorf("last line %q, want the newest output %q...", lines[len(lines)-1], last)
			}
			if tt.chunk < int(limit/2) && !strings.HasPrefix(lines[0], "line ") {
				t.Errorf("first line %q does not start at a line boundary", lines[0])
			}
			if tt.total == 100 && int64(len(b)) != int64(all.Len()) {
				t.Errorf("under the cap: kept %d of %d bytes", len(b), all.Len())
			}
			if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
				t.Errorf("temporary file left behind: %v", err)
			}
		})
	}
}
