package metrics

import "github.com/prometheus/client_golang/prometheus"

// Memory budget metrics (the gauges faasvm_memory_budget_bytes and
// faasvm_memory_committed_bytes are the appliance's, read from the
// controller at scrape time):
//
//	faasvm_memory_evictions_total{function_name}  counter (scaled to zero to make room for another function)
//	faasvm_memory_refusals_total{function_name}   counter (VM starts refused: the budget was used up)

type memoryMetrics struct {
	evictions *prometheus.CounterVec
	refusals  *prometheus.CounterVec
}

func newMemoryMetrics() *memoryMetrics {
	return &memoryMetrics{
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "faasvm_memory_evictions_total",
			Help: "Times an idle function was scaled to zero to make memory room for another one (FAAS_MEMORY_BUDGET).",
		}, []string{labelFunction}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "faasvm_memory_refusals_total",
			Help: "VM starts of a function refused because the memory budget was used up (FAAS_MEMORY_BUDGET).",
		}, []string{labelFunction}),
	}
}

func (mm *memoryMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{mm.evictions, mm.refusals}
}

func (mm *memoryMetrics) forget(function string) {
	mm.evictions.DeleteLabelValues(function)
	mm.refusals.DeleteLabelValues(function)
}

// MemoryEvicted counts function scaled to zero to make memory room.
func (m *Metrics) MemoryEvicted(function string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.isKnown(function) {
		m.mem.evictions.WithLabelValues(function).Inc()
	}
}

// MemoryRefused counts a VM start of function refused for memory.
func (m *Metrics) MemoryRefused(function string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.isKnown(function) {
		m.mem.refusals.WithLabelValues(function).Inc()
	}
}
