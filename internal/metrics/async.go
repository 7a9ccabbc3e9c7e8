package metrics

import "github.com/prometheus/client_golang/prometheus"

// The asynchronous queue's metrics keep the names of OpenFaaS's JetStream
// queue-worker where it has one (with its queue_name and function_name
// labels), and add the appliance's own:
//
//	queue_worker_messages_submitted_total{queue_name,function_name}     counter
//	queue_worker_messages_processed_total{queue_name,function_name}     counter (calls that ended)
//	queue_worker_pending_messages{queue_name,function_name}             gauge (queue depth, retries waiting included)
//	queue_worker_function_invocation_inflight{queue_name,function_name} gauge
//	faasvm_async_retries_total{function_name}                           counter
//	faasvm_async_dead_letters_total{function_name}                      counter

const labelQueue = "queue_name"

// asyncQueueName is the queue_name of every async series: the appliance has
// one queue (the FAAS_CALLS stream).
const asyncQueueName = "faas-calls"

// asyncMetrics are the queue's series.
type asyncMetrics struct {
	queueName                                  string
	submitted, processed, retries, deadLetters *prometheus.CounterVec
	pending, inflight                          *prometheus.GaugeVec
}

func newAsyncMetrics() *asyncMetrics {
	qf := []string{labelQueue, labelFunction}
	return &asyncMetrics{
		queueName: asyncQueueName,
		submitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "queue_worker_messages_submitted_total",
			Help: "Asynchronous calls queued (OpenFaaS-compatible).",
		}, qf),
		processed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "queue_worker_messages_processed_total",
			Help: "Asynchronous calls that ended: done, failed or dead-lettered (OpenFaaS-compatible).",
		}, qf),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "queue_worker_pending_messages",
			Help: "Asynchronous calls waiting to run, including those waiting for a retry (OpenFaaS-compatible).",
		}, qf),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "queue_worker_function_invocation_inflight",
			Help: "Asynchronous calls being delivered to the function now (OpenFaaS-compatible).",
		}, qf),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "faasvm_async_retries_total",
			Help: "Attempts of asynchronous calls that failed and will be retried.",
		}, []string{labelFunction}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "faasvm_async_dead_letters_total",
			Help: "Asynchronous calls moved to the dead letters after their last attempt failed.",
		}, []string{labelFunction}),
	}
}

func (a *asyncMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{a.submitted, a.processed, a.pending, a.inflight, a.retries, a.deadLetters}
}

// known exposes a new function's counters at zero.
func (a *asyncMetrics) known(function string) {
	a.submitted.WithLabelValues(a.queueName, function)
	a.processed.WithLabelValues(a.queueName, function)
	a.retries.WithLabelValues(function)
	a.deadLetters.WithLabelValues(function)
}

// vecs are the series Forget deletes.
func (a *asyncMetrics) vecs() []interface{ DeletePartialMatch(prometheus.Labels) int } {
	return []interface{ DeletePartialMatch(prometheus.Labels) int }{a.submitted, a.processed, a.pending, a.inflight, a.retries, a.deadLetters}
}

// AsyncSubmitted counts a call queued for function.
func (m *Metrics) AsyncSubmitted(function string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.isKnown(function) {
		m.async.submitted.WithLabelValues(m.async.queueName, function).Inc()
	}
}

// AsyncProcessed counts a call of function that ended.
func (m *Metrics) AsyncProcessed(function string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.isKnown(function) {
		m.async.processed.WithLabelValues(m.async.queueName, function).Inc()
	}
}

// AsyncRetried counts a failed attempt that will be retried.
func (m *Metrics) AsyncRetried(function string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.isKnown(function) {
		m.async.retries.WithLabelValues(function).Inc()
	}
}

// AsyncDeadLettered counts a call moved to the dead letters.
func (m *Metrics) AsyncDeadLettered(function string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.isKnown(function) {
		m.async.deadLetters.WithLabelValues(function).Inc()
	}
}

// AsyncQueue reports function's waiting and running asynchronous calls.
func (m *Metrics) AsyncQueue(function string, queued, inFlight int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.isKnown(function) {
		m.async.pending.WithLabelValues(m.async.queueName, function).Set(float64(queued))
		m.async.inflight.WithLabelValues(m.async.queueName, function).Set(float64(inFlight))
	}
}
