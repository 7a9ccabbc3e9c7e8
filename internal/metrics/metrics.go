// Package metrics holds the appliance's Prometheus metrics, in a registry
// owned by a Metrics value (never the global default registry).
//
// The invocation metrics keep OpenFaaS's gateway names and labels, so its
// dashboards and alerts work unchanged:
//
//	gateway_function_invocation_total{function_name,code}  counter
//	gateway_function_invocation_started{function_name}     counter
//	gateway_functions_seconds{function_name}               histogram
//	gateway_service_count{function_name}                   gauge (ready replicas)
//
// and the appliance adds its own:
//
//	faasvm_vm_start_seconds{function_name,method}  histogram (VM start to agent ready; method boot|restore)
//	faasvm_cold_starts_total{function_name}   counter (requests that waited for a boot)
//	faasvm_queue_depth{function_name}         gauge (requests waiting for a slot)
//
// and the snapshots' and VMs' memory (snapshot.go), and the asynchronous
// queue's (async.go).
//
// function_name is the folder's name (OpenFaaS appends a namespace such as
// ".openfaas-fn"; there is none here).
//
// Series exist only for functions the controller reports (FunctionState)
// and are deleted when it forgets one (Forget), so a request for an unknown
// or removed name never creates a series.
package metrics

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// label names
const (
	labelFunction = "function_name"
	labelCode     = "code"
)

// Metrics records the appliance's metrics. The zero value is not usable:
// call New. Its methods are safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	started  *prometheus.CounterVec
	total    *prometheus.CounterVec
	seconds  *prometheus.HistogramVec
	replicas *prometheus.GaugeVec
	boot     *prometheus.HistogramVec
	cold     *prometheus.CounterVec
	queue    *prometheus.GaugeVec
	// truncated counts answers cut off mid-body, by the status sent.
	truncated *prometheus.CounterVec
	async     *asyncMetrics    // see async.go
	snap      *snapshotMetrics // see snapshot.go
	mem       *memoryMetrics   // see memory.go

	// mu guards known; the hot path (InvocationStarted, InvocationDone,
	// FunctionState of a known function) only read-locks it for the
	// lookup and then uses the function's cached series.
	mu    sync.RWMutex
	known map[string]*fnSeries // functions with series; see the package comment
}

// fnSeries are one function's series, resolved once (no label hashing per
// request).
type fnSeries struct {
	started  prometheus.Counter
	seconds  prometheus.Observer
	replicas prometheus.Gauge
	queue    prometheus.Gauge
	total    *prometheus.CounterVec
	name     string
	codes    sync.Map // status code (int) → prometheus.Counter
}

func (s *fnSeries) code(status int) prometheus.Counter {
	if c, ok := s.codes.Load(status); ok {
		return c.(prometheus.Counter)
	}
	c, _ := s.codes.LoadOrStore(status, s.total.WithLabelValues(s.name, strconv.Itoa(status)))
	return c.(prometheus.Counter)
}

// series returns function's cached series, nil if it is not known.
func (m *Metrics) series(function string) *fnSeries {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.known[function]
}

// New returns metrics registered in a new registry, with the Go runtime and
// process collectors beside them.
func New() *Metrics {
	// Histogram buckets, in seconds. Invocations: Prometheus's defaults
	// (5ms to 10s) extended to a minute. Boots: KVM (tens of ms) to
	// software emulation (seconds).
	invocationBuckets := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
	bootBuckets := []float64{.05, .1, .25, .5, 1, 2, 3, 5, 10, 20, 30, 60}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_function_invocation_started",
			Help: "Function invocations started (OpenFaaS-compatible).",
		}, []string{labelFunction}),
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_function_invocation_total",
			Help: "Function invocations finished, by HTTP status (OpenFaaS-compatible).",
		}, []string{labelFunction, labelCode}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gateway_functions_seconds",
			Help:    "Function invocation time, from arrival at the gateway to the end of the response, queueing and cold starts included (OpenFaaS-compatible).",
			Buckets: invocationBuckets,
		}, []string{labelFunction}),
		replicas: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gateway_service_count",
			Help: "Ready replicas (VMs) of the function (OpenFaaS-compatible).",
		}, []string{labelFunction}),
		boot: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "faasvm_vm_start_seconds",
			Help:    "Time from starting a VM to its guest agent answering, per VM; method is boot (a full boot) or restore (a snapshot clone).",
			Buckets: bootBuckets,
		}, []string{labelFunction, "method"}),
		cold: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "faasvm_cold_starts_total",
			Help: "Invocations that had to wait for a VM to boot.",
		}, []string{labelFunction}),
		queue: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "faasvm_queue_depth",
			Help: "Requests waiting for a free concurrency slot of the function.",
		}, []string{labelFunction}),
		truncated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "faasvm_truncated_responses_total",
			Help: "Invocations whose response body was cut off after the status was sent, by that status (gateway_function_invocation_total counts them under code 0).",
		}, []string{labelFunction, labelCode}),
		known: map[string]*fnSeries{},
		async: newAsyncMetrics(),
		snap:  newSnapshotMetrics(),
		mem:   newMemoryMetrics(),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.started, m.total, m.seconds, m.replicas, m.boot, m.cold, m.queue, m.truncated,
	)
	m.reg.MustRegister(m.async.collectors()...)
	m.reg.MustRegister(m.snap.collectors()...)
	m.reg.MustRegister(m.mem.collectors()...)
	return m
}

// Registry is where the metrics are registered, for promhttp.HandlerFor.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// isKnown says whether function has series; m.mu is held.
func (m *Metrics) isKnown(function string) bool { return m.known[function] != nil }

// InvocationStarted counts a request for function arriving at the gateway.
// Unknown functions are not recorded.
func (m *Metrics) InvocationStarted(function string) {
	if s := m.series(function); s != nil {
		s.started.Inc()
	}
}

// InvocationDone records a request's final HTTP status and duration.
// Unknown functions are not recorded.
func (m *Metrics) InvocationDone(function string, status int, took time.Duration) {
	if s := m.series(function); s != nil {
		s.code(status).Inc()
		s.seconds.Observe(took.Seconds())
	}
}

// InvocationTruncated counts a response of function cut off mid-body
// after status was sent. Unknown functions are not recorded.
func (m *Metrics) InvocationTruncated(function string, status int) {
	if m.series(function) != nil {
		m.truncated.WithLabelValues(function, strconv.Itoa(status)).Inc()
	}
}

// FunctionState reports a function's ready replicas and queued requests;
// the first report makes the function known.
func (m *Metrics) FunctionState(function string, ready, queued int) {
	s := m.series(function)
	if s == nil {
		m.mu.Lock()
		if s = m.known[function]; s == nil {
			// Expose the counters at zero from the start, so that rate()
			// sees the first invocation.
			s = &fnSeries{
				started:  m.started.WithLabelValues(function),
				seconds:  m.seconds.WithLabelValues(function),
				replicas: m.replicas.WithLabelValues(function),
				queue:    m.queue.WithLabelValues(function),
				total:    m.total,
				name:     function,
			}
			m.cold.WithLabelValues(function)
			m.async.known(function)
			m.known[function] = s
		}
		m.mu.Unlock()
	}
	s.replicas.Set(float64(ready))
	s.queue.Set(float64(queued))
}

// VMStarted records one VM start of function; method is how it started
// ("boot", "restore").
func (m *Metrics) VMStarted(function, method string, took time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.isKnown(function) {
		m.boot.WithLabelValues(function, method).Observe(took.Seconds())
	}
}

// ColdStart counts an invocation of function that waited for a VM to boot.
func (m *Metrics) ColdStart(function string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.isKnown(function) {
		m.cold.WithLabelValues(function).Inc()
	}
}

// Forget deletes every series of a removed function.
func (m *Metrics) Forget(function string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.known, function)
	l := prometheus.Labels{labelFunction: function}
	for _, v := range append([]interface{ DeletePartialMatch(prometheus.Labels) int }{
		m.started, m.total, m.seconds, m.replicas, m.boot, m.cold, m.queue, m.truncated,
	}, m.async.vecs()...) {
		v.DeletePartialMatch(l)
	}
	m.snap.forget(function)
	m.mem.forget(function)
}
