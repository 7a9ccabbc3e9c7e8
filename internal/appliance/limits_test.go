package appliance

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/faasvm/appliance/internal/controller"
)

func TestDefaultMaxBoots(t *testing.T) {
	tests := []struct {
		cores int
		accel string
		want  int
	}{
		{1, "tcg", 1},
		{2, "tcg", 1},
		{3, "tcg", 1},
		{8, "tcg", 4},
		{2, "", 1}, // not probed yet: as TCG
		{1, "kvm", 2},
		{2, "kvm", 4},
		{16, "kvm", 32},
	}
	for _, tt := range tests {
		if got := defaultMaxBoots(tt.cores, tt.accel); got != tt.want {
			t.Errorf("defaultMaxBoots(%d, %q) = %d, want %d", tt.cores, tt.accel, got, tt.want)
		}
	}
}

func TestLimitsHandler(t *testing.T) {
	h := limitsHandler(func() Limits { return Limits{Boots: controller.BootQueue{Limit: 1, Booting: 1, Queued: 3}} })
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, limitsPath, nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET: %d", rec.Code)
	}
	var got map[string]map[string]int
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if b := got["boots"]; b["limit"] != 1 || b["booting"] != 1 || b["queued"] != 3 {
		t.Errorf("body %s", rec.Body)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, limitsPath, nil))
	if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") == "" {
		t.Errorf("POST: %d, Allow %q", rec.Code, rec.Header().Get("Allow"))
	}
}
