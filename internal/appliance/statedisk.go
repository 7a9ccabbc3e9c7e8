package appliance

import (
	"cmp"
	"context"
	"encoding/json"
	"io/fs"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/faasvm/appliance/internal/config"
)

// The state directory's budget (FAAS_STATE_BUDGET): every minute the
// appliance adds up what the state directory holds on disk (allocated
// blocks: the images are sparse) and, over the budget, warns naming its
// largest users. /healthz carries the figures (not the paths: it is
// public); /api/disk carries the whole report.

// diskCheckEvery is how often the state directory is measured.
const diskCheckEvery = time.Minute

// offenders is how many of the largest users a report names.
const offenders = 8

// DiskReport is one measurement of the state directory.
type DiskReport struct {
	At          time.Time `json:"at"`
	Dir         string    `json:"dir"`
	UsedBytes   int64     `json:"usedBytes"`
	BudgetBytes int64     `json:"budgetBytes"`
	// FS: the file system the state directory is on.
	FSBytes     int64       `json:"fsBytes"`
	FSFreeBytes int64       `json:"fsFreeBytes"`
	Over        bool        `json:"overBudget"`
	Warning     string      `json:"warning,omitempty"`
	Largest     []DiskUsage `json:"largest,omitempty"`
	Error       string      `json:"error,omitempty"`
}

// DiskUsage is the bytes one part of the state directory holds.
type DiskUsage struct {
	Path  string `json:"path"` // relative to the state directory
	Bytes int64  `json:"bytes"`
}

// stateDisk measures the state directory against its budget.
type stateDisk struct {
	dir    string
	budget string
	log    *slog.Logger

	mu     sync.Mutex
	last   DiskReport
	warned bool
}

// measureState walks dir and returns its report against budget (see
// config.DiskConfig.Budget). Parts are grouped three levels deep
// (images/code/<digest>.ext4, vms/<id>/console.log), largest first.
func measureState(dir, budget string) DiskReport {
	r := DiskReport{At: time.Now(), Dir: dir}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		r.Error = "statfs: " + err.Error()
		return r
	}
	r.FSBytes = int64(st.Blocks) * int64(st.Bsize)
	r.FSFreeBytes = int64(st.Bavail) * int64(st.Bsize)
	dc := config.DiskConfig{StateBudget: budget}
	r.BudgetBytes = dc.Budget(r.FSBytes)
	parts := map[string]int64{}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil // unreadable parts are skipped, not fatal
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		n := fi.Size()
		if s, ok := fi.Sys().(*syscall.Stat_t); ok {
			n = s.Blocks * 512
		}
		rel, _ := filepath.Rel(dir, p)
		elems := strings.Split(rel, string(filepath.Separator))
		key := filepath.Join(elems[:min(len(elems), 3)]...)
		parts[key] += n
		r.UsedBytes += n
		return nil
	})
	for p, n := range parts {
		r.Largest = append(r.Largest, DiskUsage{Path: p, Bytes: n})
	}
	slices.SortFunc(r.Largest, func(a, b DiskUsage) int {
		return cmp.Or(cmp.Compare(b.Bytes, a.Bytes), cmp.Compare(a.Path, b.Path))
	})
	r.Largest = r.Largest[:min(len(r.Largest), offenders)]
	if r.BudgetBytes > 0 && r.UsedBytes > r.BudgetBytes {
		r.Over = true
		r.Warning = "the state directory holds more than its budget (FAAS_STATE_BUDGET=" + budget +
			"): remove unused functions, lower FAAS_KEEP_VERSIONS or FAAS_LOGS_MAX_SIZE, or give it more disk"
	}
	return r
}

// check measures now, logs a warning when over budget (and once when back
// under it), and keeps the report.
func (s *stateDisk) check() DiskReport {
	r := measureState(s.dir, s.budget)
	s.mu.Lock()
	wasOver := s.warned
	s.last = r
	s.warned = r.Over
	s.mu.Unlock()
	switch {
	case r.Error != "":
		s.log.Warn("measuring the state directory", "dir", s.dir, "err", r.Error)
	case r.Over:
		attrs := []any{"dir", s.dir, "used_bytes", r.UsedBytes, "budget_bytes", r.BudgetBytes, "fs_free_bytes", r.FSFreeBytes}
		for i, l := range r.Largest {
			attrs = append(attrs, slog.Group("largest_"+string(rune('1'+i)), "path", l.Path, "bytes", l.Bytes))
		}
		s.log.Warn(r.Warning, attrs...)
	case wasOver:
		s.log.Info("the state directory is back under its budget", "dir", s.dir, "used_bytes", r.UsedBytes, "budget_bytes", r.BudgetBytes)
	}
	return r
}

// run measures every diskCheckEvery until ctx ends.
func (s *stateDisk) run(ctx context.Context) {
	t := time.NewTicker(diskCheckEvery)
	defer t.Stop()
	for {
		s.check()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// report is the last measurement (measured now when there is none).
func (s *stateDisk) report() DiskReport {
	s.mu.Lock()
	r := s.last
	s.mu.Unlock()
	if r.At.IsZero() {
		r = s.check()
	}
	return r
}

// health is the public summary for /healthz.
func (s *stateDisk) health() map[string]any {
	r := s.report()
	return map[string]any{"disk": map[string]any{
		"usedBytes": r.UsedBytes, "budgetBytes": r.BudgetBytes, "fsFreeBytes": r.FSFreeBytes,
		"overBudget": r.Over, "warning": r.Warning,
	}}
}

// ServeHTTP serves the whole report (GET /api/disk; ?fresh=1 measures now).
func (s *stateDisk) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	r := s.report()
	if req.URL.Query().Get("fresh") == "1" {
		r = s.check()
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(r)
}
