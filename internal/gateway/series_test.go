package gateway

import (
	"testing"
	"time"
)

func TestSeries(t *testing.T) {
	var s seriesStore
	now := time.Unix(1_000_000, 0)
	for i := range 10 {
		s.record("f", 200, time.Duration(i+1)*time.Millisecond, now)
	}
	s.record("f", 502, 100*time.Millisecond, now)
	s.record("f", 200, time.Millisecond, now.Add(-20*time.Minute)) // too old: overwritten slot or outside
	s.record("f", 200, time.Millisecond, now.Add(-30*time.Second))

	tests := []struct {
		name     string
		at       time.Time
		wantLen  int
		wantLast seriesPoint
	}{
		{name: "now", at: now, wantLen: seriesBuckets, wantLast: seriesPoint{Requests: 11, Errors: 1, RPS: 1.1}},
		{name: "16 minutes later", at: now.Add(16 * time.Minute), wantLen: seriesBuckets, wantLast: seriesPoint{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pts := s.points("f", tt.at)
			if len(pts) != tt.wantLen {
				t.Fatalf("got %d points, want %d", len(pts), tt.wantLen)
			}
			last := pts[len(pts)-1]
			if last.Requests != tt.wantLast.Requests || last.Errors != tt.wantLast.Errors || last.RPS != tt.wantLast.RPS {
				t.Errorf("last point: got %+v, want %+v", last, tt.wantLast)
			}
			total := 0
			for _, p := range pts {
				total += p.Requests
			}
			if tt.name == "now" {
				if total != 12 {
					t.Errorf("got %d requests in 15 minutes, want 12 (the 20-minute-old one left out)", total)
				}
				if last.P50Ms == nil || *last.P50Ms != 6 || *last.P99Ms != 100 {
					t.Errorf("p50/p99: got %v/%v, want 6/100", last.P50Ms, last.P99Ms)
				}
			} else if total != 0 {
				t.Errorf("got %d requests after 16 quiet minutes, want 0", total)
			}
		})
	}
	if pts := s.points("other", now); pts[len(pts)-1].P50Ms != nil {
		t.Errorf("an unknown function has latencies")
	}
}
