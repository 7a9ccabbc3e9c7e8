package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Snapshot and memory metrics:
//
//	faasvm_snapshot_restore_failures_total{function_name,reason}  counter (restores that fell back to a boot)
//	faasvm_snapshot_bytes{function_name}                          gauge (the serving version's snapshot on disk)
//	faasvm_snapshot_age_seconds{function_name}                    gauge (since it was made, at scrape time)
//	faasvm_instance_pss_bytes{function_name,instance}             gauge (each VM process's PSS)

type snapshotMetrics struct {
	failures *prometheus.CounterVec
	bytes    *prometheus.GaugeVec
	pss      *prometheus.GaugeVec
	age      *ageCollector
}

func newSnapshotMetrics() *snapshotMetrics {
	return &snapshotMetrics{
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "faasvm_snapshot_restore_failures_total",
			Help: "Restores from a function's snapshot that failed (the VM booted instead and the snapshot is made again), by reason: corrupt, timeout, engine.",
		}, []string{labelFunction, "reason"}),
		bytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "faasvm_snapshot_bytes",
			Help: "Disk space of the serving version's VM snapshot (RAM file, device state, manifest).",
		}, []string{labelFunction}),
		pss: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "faasvm_instance_pss_bytes",
			Help: "Proportional set size of each VM's process (pages shared with other clones of a snapshot counted in part).",
		}, []string{labelFunction, "instance"}),
		age: &ageCollector{
			desc: prometheus.NewDesc("faasvm_snapshot_age_seconds",
				"Seconds since the serving version's VM snapshot was made.", []string{labelFunction}, nil),
			created: map[string]time.Time{},
		},
	}
}

// ageCollector computes each snapshot's age when scraped.
type ageCollector struct {
	desc    *prometheus.Desc
	mu      sync.Mutex
	created map[string]time.Time
}

func (a *ageCollector) Describe(ch chan<- *prometheus.Desc) { ch <- a.desc }

func (a *ageCollector) Collect(ch chan<- prometheus.Metric) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	for fn, t := range a.created {
		ch <- prometheus.MustNewConstMetric(a.desc, prometheus.GaugeValue, max(now.Sub(t).Seconds(), 0), fn)
	}
}

func (a *ageCollector) set(function string, created time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if created.IsZero() {
		delete(a.created, function)
		return
	}
	a.created[function] = created
}

func (s *snapshotMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{s.failures, s.bytes, s.pss, s.age}
}

func (s *snapshotMetrics) forget(function string) {
	l := prometheus.Labels{labelFunction: function}
	s.failures.DeletePartialMatch(l)
	s.bytes.DeletePartialMatch(l)
	s.pss.DeletePartialMatch(l)
	s.age.set(function, time.Time{})
}

// SnapshotRestoreFailed counts a failed restore of function's snapshot.
func (m *Metrics) SnapshotRestoreFailed(function, reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.isKnown(function) {
		m.snap.failures.WithLabelValues(function, reason).Inc()
	}
}

// SnapshotSaved reports function's current snapshot.
func (m *Metrics) SnapshotSaved(function string, bytes int64, created time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.isKnown(function) {
		m.snap.bytes.WithLabelValues(function).Set(float64(bytes))
		m.snap.age.set(function, created)
	}
}

// SnapshotGone reports that function has no snapshot (any more).
func (m *Metrics) SnapshotGone(function string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.snap.bytes.DeleteLabelValues(function)
	m.snap.age.set(function, time.Time{})
}

// InstancePSS reports one VM's PSS.
func (m *Metrics) InstancePSS(function, instance string, bytes int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.isKnown(function) {
		m.snap.pss.WithLabelValues(function, instance).Set(float64(bytes))
	}
}

// InstanceGone drops a stopped VM's PSS series.
func (m *Metrics) InstanceGone(function, instance string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.snap.pss.DeleteLabelValues(function, instance)
}
