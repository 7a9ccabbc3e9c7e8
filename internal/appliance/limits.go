package appliance

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/faasvm/appliance/internal/config"
	"github.com/faasvm/appliance/internal/controller"
	"github.com/faasvm/appliance/internal/gateway"
	"github.com/faasvm/appliance/internal/vm"
)

// maxConcurrentBoots is FAAS_MAX_CONCURRENT_BOOTS, or when 0 the default
// for this host: under TCG every boot is CPU-bound emulation, so booting
// more than half the cores at once only slows each of them (scripts/
// bench-deploy.sh measures it); under KVM a boot mostly waits on the
// guest, so twice the cores.
func maxConcurrentBoots(cfg *config.Config, engine vm.Engine, log *slog.Logger) int {
	if cfg.MaxConcurrentBoots > 0 {
		log.Info("concurrent boot limit", "max_concurrent_boots", cfg.MaxConcurrentBoots, "from", "FAAS_MAX_CONCURRENT_BOOTS")
		return cfg.MaxConcurrentBoots
	}
	accel := "kvm" // ignite: Firecracker, KVM only
	if a, ok := engine.(interface{ Accel() (string, string) }); ok {
		accel, _ = a.Accel()
	}
	n := defaultMaxBoots(runtime.NumCPU(), accel)
	log.Info("concurrent boot limit", "max_concurrent_boots", n, "from", "host cores and accelerator",
		"cores", runtime.NumCPU(), "accel", accel)
	return n
}

// defaultMaxBoots is the concurrent boot limit for cores and accel.
func defaultMaxBoots(cores int, accel string) int {
	if accel == "kvm" {
		return max(2, 2*cores)
	}
	return max(1, cores/2)
}

// limitsPath is the API route reporting the appliance-wide limits' state.
const limitsPath = "/api/limits"

// Limits is what GET /api/limits answers.
type Limits struct {
	Boots  controller.BootQueue   `json:"boots"`
	Memory controller.MemoryState `json:"memory"`
}

// mountLimits serves GET /api/limits (behind the API token) and exports
// the boot line as metrics: faasvm_boots_active (boots holding a slot),
// faasvm_boots_queued (waiting for one), faasvm_boots_limit; and the
// memory budget: faasvm_memory_budget_bytes, faasvm_memory_committed_bytes.
func mountLimits(gw *gateway.Gateway, reg *prometheus.Registry, ctrl *controller.Controller) {
	gauge := func(name, help string, v func(controller.BootQueue) int) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help},
			func() float64 { return float64(v(ctrl.BootQueue())) })
	}
	reg.MustRegister(
		gauge("faasvm_boots_active", "VM boots holding a slot under the concurrent boot limit.",
			func(q controller.BootQueue) int { return q.Booting }),
		gauge("faasvm_boots_queued", "VM boots waiting in line for a slot (FAAS_MAX_CONCURRENT_BOOTS).",
			func(q controller.BootQueue) int { return q.Queued }),
		gauge("faasvm_boots_limit", "Most VM boots at once (0: no limit).",
			func(q controller.BootQueue) int { return q.Limit }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "faasvm_memory_budget_bytes",
			Help: "Most memory the VMs may commit, guest RAM plus QEMU overhead each (FAAS_MEMORY_BUDGET; 0: none)."},
			func() float64 { return float64(ctrl.MemoryState().BudgetBytes) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "faasvm_memory_committed_bytes",
			Help: "Memory committed to the VMs that exist or are starting (guest RAM plus QEMU overhead each)."},
			func() float64 { return float64(ctrl.MemoryState().CommittedBytes) }),
	)
	gw.MountAPI(limitsPath, limitsHandler(func() Limits {
		return Limits{Boots: ctrl.BootQueue(), Memory: ctrl.MemoryState()}
	}))
}

// limitsHandler answers GET with state() as JSON.
func limitsHandler(state func() Limits) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed: use GET", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(state())
	})
}
