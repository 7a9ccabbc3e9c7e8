package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// series returns the value of every series of the named metric as
// "label=value,..." → value (a histogram's value is its sample count).
func series(t *testing.T, m *Metrics, name string) map[string]float64 {
	t.Helper()
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatalf("gathering: %v", err)
	}
	out := map[string]float64{}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, s := range f.GetMetric() {
			var labels []string
			for _, l := range s.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			out[strings.Join(labels, ",")] = value(f.GetType(), s)
		}
	}
	return out
}

func value(typ dto.MetricType, s *dto.Metric) float64 {
	switch typ {
	case dto.MetricType_COUNTER:
		return s.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return s.GetGauge().GetValue()
	case dto.MetricType_HISTOGRAM:
		return float64(s.GetHistogram().GetSampleCount())
	}
	return -1
}

func TestMetricsRecordKnownFunctions(t *testing.T) {
	m := New()
	m.InvocationStarted("ghost") // before the controller reports it: dropped
	m.InvocationDone("ghost", 200, time.Second)
	m.FunctionState("fn", 2, 3)
	m.InvocationStarted("fn")
	m.InvocationDone("fn", 200, 150*time.Millisecond)
	m.InvocationStarted("fn")
	m.InvocationDone("fn", 429, time.Millisecond)
	m.VMStarted("fn", "boot", 2*time.Second)
	m.ColdStart("fn")

	tests := []struct {
		metric string
		want   map[string]float64
	}{
		{"gateway_function_invocation_started", map[string]float64{"function_name=fn": 2}},
		{"gateway_function_invocation_total", map[string]float64{"code=200,function_name=fn": 1, "code=429,function_name=fn": 1}},
		{"gateway_functions_seconds", map[string]float64{"function_name=fn": 2}},
		{"gateway_service_count", map[string]float64{"function_name=fn": 2}},
		{"faasvm_queue_depth", map[string]float64{"function_name=fn": 3}},
		{"faasvm_vm_start_seconds", map[string]float64{"function_name=fn,method=boot": 1}},
		{"faasvm_cold_starts_total", map[string]float64{"function_name=fn": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.metric, func(t *testing.T) {
			got := series(t, m, tt.metric)
			if len(got) != len(tt.want) {
				t.Errorf("got series %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s{%s}: got %v, want %v", tt.metric, k, got[k], v)
				}
			}
		})
	}

	m.Forget("fn")
	for _, tt := range tests {
		if got := series(t, m, tt.metric); len(got) != 0 {
			t.Errorf("after Forget, %s: got %v, want no series", tt.metric, got)
		}
	}
	m.InvocationDone("fn", 200, time.Second) // a late answer of a removed function
	if got := series(t, m, "gateway_function_invocation_total"); len(got) != 0 {
		t.Errorf("a removed function's late answer made series: %v", got)
	}
}

func TestMetricsExposition(t *testing.T) {
	m := New()
	m.FunctionState("fn", 1, 0)
	m.InvocationStarted("fn")
	m.InvocationDone("fn", 200, 10*time.Millisecond)
	srv := httptest.NewServer(promhttp.HandlerFor(m.Registry(), promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)
	res, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	for _, want := range []string{
		`gateway_function_invocation_total{code="200",function_name="fn"} 1`,
		`gateway_function_invocation_started{function_name="fn"} 1`,
		`gateway_functions_seconds_count{function_name="fn"} 1`,
		`gateway_service_count{function_name="fn"} 1`,
		`faasvm_cold_starts_total{function_name="fn"} 0`,
		`go_goroutines `,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
}
