package appliance

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStateDiskBudget(t *testing.T) {
	dir := t.TempDir()
	write := func(rel string, n int) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, bytes.Repeat([]byte{1}, n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("images/rootfs/big.ext4", 3<<20)
	write("images/code/a.ext4", 1<<20)
	write("vms/one/deep/console.log", 2<<20)
	write("logs/fn/0.log", 64<<10)

	for _, tc := range []struct {
		budget string
		over   bool
	}{
		{"5MiB", true},
		{"100MiB", false},
		{"100%", false},
	} {
		r := measureState(dir, tc.budget)
		if r.Error != "" {
			t.Fatalf("%s: %s", tc.budget, r.Error)
		}
		if r.UsedBytes < 6<<20 {
			t.Errorf("%s: used %d, want at least 6 MiB", tc.budget, r.UsedBytes)
		}
		if r.Over != tc.over {
			t.Errorf("%s: over %v, want %v (used %d, budget %d)", tc.budget, r.Over, tc.over, r.UsedBytes, r.BudgetBytes)
		}
		if tc.over && !strings.Contains(r.Warning, "FAAS_STATE_BUDGET") {
			t.Errorf("%s: warning %q does not say which setting", tc.budget, r.Warning)
		}
		if len(r.Largest) < 3 || r.Largest[0].Path != "images/rootfs/big.ext4" || r.Largest[1].Path != filepath.Join("vms", "one", "deep") {
			t.Errorf("%s: largest %+v, want images/rootfs/big.ext4 then vms/one/deep first", tc.budget, r.Largest)
		}
	}

	var logged bytes.Buffer
	s := &stateDisk{dir: dir, budget: "1MiB", log: slog.New(slog.NewTextHandler(&logged, nil))}
	s.check()
	if !strings.Contains(logged.String(), "images/rootfs/big.ext4") || !strings.Contains(logged.String(), "level=WARN") {
		t.Errorf("the warning does not name the largest user: %s", logged.String())
	}
	h, ok := s.health()["disk"].(map[string]any)
	if !ok || h["overBudget"] != true {
		t.Errorf("health: %v", s.health())
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/disk?fresh=1", nil))
	var got DiskReport
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || !got.Over || len(got.Largest) == 0 {
		t.Errorf("/api/disk: %d %s (%v)", rec.Code, rec.Body, err)
	}
	rec = httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/api/disk", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /api/disk: got %d, want 405", rec.Code)
	}
}
