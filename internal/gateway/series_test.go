package gateway

import (
	"math"
	"testing"
	"time"
)

func TestSeries(t *testing.T) {
	var s Series
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

func TestSeriesVMStarts(t *testing.T) {
	now := time.Unix(2_000_000, 0)
	sec := func(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
	type start struct {
		method string
		took   time.Duration
		ago    time.Duration
	}
	tests := []struct {
		name        string
		starts      []start
		wantBoot    *startPoint // in the last bucket
		wantRestore *startPoint
		wantTotal   int // starts of any kept method over the 15 minutes
	}{
		{name: "none", wantTotal: 0},
		{name: "one boot", starts: []start{{"boot", sec(2), 0}},
			wantBoot: &startPoint{Count: 1, MedianSeconds: 2, MaxSeconds: 2}, wantTotal: 1},
		{name: "boots and restores apart", starts: []start{{"boot", sec(3), 0}, {"restore", sec(0.2), 0}, {"boot", sec(1), 0}, {"restore", sec(0.4), 0}, {"restore", sec(0.3), 0}},
			wantBoot:    &startPoint{Count: 2, MedianSeconds: 2, MaxSeconds: 3},
			wantRestore: &startPoint{Count: 3, MedianSeconds: 0.3, MaxSeconds: 0.4}, wantTotal: 5},
		{name: "an older bucket", starts: []start{{"boot", sec(2), time.Minute}}, wantTotal: 1},
		{name: "older than 15 minutes", starts: []start{{"boot", sec(2), 16 * time.Minute}}, wantTotal: 0},
		{name: "unknown method and negative time not kept", starts: []start{{"snapshot", sec(1), 0}, {"boot", -sec(1), 0}}, wantTotal: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s Series
			for _, st := range tt.starts {
				s.vmStarted("f", st.method, st.took, now.Add(-st.ago))
			}
			pts := s.points("f", now)
			last := pts[len(pts)-1]
			checkStart(t, "boot", last.Boot, tt.wantBoot)
			checkStart(t, "restore", last.Restore, tt.wantRestore)
			total := 0
			for _, p := range pts {
				for _, sp := range []*startPoint{p.Boot, p.Restore} {
					if sp != nil {
						total += sp.Count
					}
				}
			}
			if total != tt.wantTotal {
				t.Errorf("got %d starts in 15 minutes, want %d", total, tt.wantTotal)
			}
		})
	}
}

func checkStart(t *testing.T, method string, got, want *startPoint) {
	t.Helper()
	switch {
	case got == nil && want == nil:
	case got == nil || want == nil:
		t.Errorf("%s: got %+v, want %+v", method, got, want)
	case got.Count != want.Count || got.MaxSeconds != want.MaxSeconds || math.Abs(got.MedianSeconds-want.MedianSeconds) > 1e-9:
		t.Errorf("%s: got %+v, want %+v", method, *got, *want)
	}
}

func TestSeriesForgetAndReuse(t *testing.T) {
	var s Series
	now := time.Unix(3_000_000, 0)
	s.vmStarted("f", "boot", time.Second, now)
	s.record("f", 200, time.Millisecond, now)
	// A bucket reused 15 minutes later starts empty.
	later := now.Add(seriesBuckets * seriesBucket)
	s.record("f", 200, time.Millisecond, later)
	if last := s.points("f", later)[seriesBuckets-1]; last.Boot != nil || last.Requests != 1 {
		t.Errorf("reused bucket: got boot %+v and %d requests, want none and 1", last.Boot, last.Requests)
	}
	s.Forget("f")
	for _, p := range s.points("f", later) {
		if p.Requests != 0 || p.Boot != nil {
			t.Fatalf("after Forget: got %+v, want an empty series", p)
		}
	}
}
