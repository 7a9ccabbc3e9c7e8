package metrics

import "testing"

func TestAsyncMetrics(t *testing.T) {
	m := New()
	m.AsyncSubmitted("ghost") // unknown to the controller: dropped
	m.FunctionState("fn", 1, 0)
	for range 3 {
		m.AsyncSubmitted("fn")
	}
	m.AsyncRetried("fn")
	m.AsyncRetried("fn")
	m.AsyncProcessed("fn")
	m.AsyncProcessed("fn")
	m.AsyncDeadLettered("fn")
	m.AsyncQueue("fn", 4, 2)

	q := "function_name=fn,queue_name=faas-calls"
	tests := []struct {
		metric string
		want   map[string]float64
	}{
		{"queue_worker_messages_submitted_total", map[string]float64{q: 3}},
		{"queue_worker_messages_processed_total", map[string]float64{q: 2}},
		{"queue_worker_pending_messages", map[string]float64{q: 4}},
		{"queue_worker_function_invocation_inflight", map[string]float64{q: 2}},
		{"faasvm_async_retries_total", map[string]float64{"function_name=fn": 2}},
		{"faasvm_async_dead_letters_total", map[string]float64{"function_name=fn": 1}},
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
	m.AsyncQueue("fn", 1, 1) // a removed function's queue: no series
	for _, tt := range tests {
		if got := series(t, m, tt.metric); len(got) != 0 {
			t.Errorf("after Forget, %s: got %v, want no series", tt.metric, got)
		}
	}
}
