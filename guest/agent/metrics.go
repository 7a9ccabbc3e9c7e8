package main

// Invocation metrics of container mode, in the Prometheus text format, with
// the names and labels the appliance's gateway uses (OpenFaaS's), so the
// same dashboards work on a cluster:
//
//	gateway_function_invocation_started{function_name}      counter
//	gateway_function_invocation_total{function_name,code}   counter
//	gateway_functions_seconds{function_name}                histogram
//
// In a VM the gateway counts; in a container nothing stands in front but
// the platform, so the agent counts at its data listener. Written by hand:
// the agent stays free of a metrics library.

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// invocationBuckets are the gateway's histogram buckets, in seconds.
var invocationBuckets = [...]float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

type invocationMetrics struct {
	function string

	mu      sync.Mutex
	started uint64
	total   map[int]uint64 // by status code
	buckets [len(invocationBuckets)]uint64
	count   uint64
	sum     float64
}

func newInvocationMetrics(function string) *invocationMetrics {
	return &invocationMetrics{function: function, total: map[int]uint64{}}
}

// begin counts a started invocation and returns the writer that records
// its status; call done when the handler returned.
func (m *invocationMetrics) begin(w http.ResponseWriter) *statusRecorder {
	m.mu.Lock()
	m.started++
	m.mu.Unlock()
	return &statusRecorder{ResponseWriter: w, m: m, start: time.Now()}
}

func (m *invocationMetrics) observe(code int, took time.Duration) {
	s := took.Seconds()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.total[code]++
	m.count++
	m.sum += s
	for i, le := range invocationBuckets {
		if s <= le {
			m.buckets[i]++
		}
	}
}

// serve writes the metrics in the Prometheus text exposition format.
func (m *invocationMetrics) serve(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = w.Write([]byte(m.render()))
}

func (m *invocationMetrics) render() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	fn := `function_name="` + escapeLabel(m.function) + `"`
	var b strings.Builder
	fmt.Fprintf(&b, "# HELP gateway_function_invocation_started Function invocations started (OpenFaaS-compatible).\n")
	fmt.Fprintf(&b, "# TYPE gateway_function_invocation_started counter\n")
	fmt.Fprintf(&b, "gateway_function_invocation_started{%s} %d\n", fn, m.started)
	fmt.Fprintf(&b, "# HELP gateway_function_invocation_total Function invocations finished, by HTTP status (OpenFaaS-compatible).\n")
	fmt.Fprintf(&b, "# TYPE gateway_function_invocation_total counter\n")
	codes := make([]int, 0, len(m.total))
	for c := range m.total {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	for _, c := range codes {
		fmt.Fprintf(&b, "gateway_function_invocation_total{code=\"%d\",%s} %d\n", c, fn, m.total[c])
	}
	fmt.Fprintf(&b, "# HELP gateway_functions_seconds Function invocation time at the agent's data listener (OpenFaaS-compatible).\n")
	fmt.Fprintf(&b, "# TYPE gateway_functions_seconds histogram\n")
	for i, le := range invocationBuckets {
		fmt.Fprintf(&b, "gateway_functions_seconds_bucket{%s,le=\"%s\"} %d\n", fn, strconv.FormatFloat(le, 'g', -1, 64), m.buckets[i])
	}
	fmt.Fprintf(&b, "gateway_functions_seconds_bucket{%s,le=\"+Inf\"} %d\n", fn, m.count)
	fmt.Fprintf(&b, "gateway_functions_seconds_sum{%s} %s\n", fn, strconv.FormatFloat(m.sum, 'g', -1, 64))
	fmt.Fprintf(&b, "gateway_functions_seconds_count{%s} %d\n", fn, m.count)
	return b.String()
}

// escapeLabel escapes a label value for the text format.
func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	m      *invocationMetrics
	start  time.Time
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 && code >= 200 { // 1xx are interim
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Flush lets streamed responses through.
func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap gives http.ResponseController the underlying writer.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *statusRecorder) done() {
	code := r.status
	if code == 0 {
		code = http.StatusOK // nothing written: net/http answers 200
	}
	r.m.observe(code, time.Since(r.start))
}
