package main_test

import (
	"net/http"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/faasvm/appliance/internal/controller"
)

// BenchmarkScaleFromZero measures the first request after scale-to-zero
// through the gateway, end to end (the client's GET until its 200), for the
// same http-mode python function on two appliances side by side: one with
// snapshots off (every start is a boot) and one with them on (every start
// after the first is a restore). The two are measured in turns, so both see
// the same machine; b.N rounds each (scripts/bench-snapshot.sh gateway runs
// 7), medians reported.
func BenchmarkScaleFromZero(b *testing.B) {
	type side struct {
		name   string
		method string // the start method each measured request must have caused
		a      *appliance
		times  []time.Duration
	}
	sides := []*side{
		{name: "boot", method: controller.StartBoot, a: startAppliance(b, "FAAS_SNAPSHOTS=false")},
		{name: "restore", method: controller.StartRestore, a: startAppliance(b, "FAAS_SNAPSHOTS=true")},
	}
	for _, s := range sides {
		writeFile(b, filepath.Join(s.a.functions, "zero", "handler.py"), sleeper)
		writeFile(b, filepath.Join(s.a.functions, "zero", "function.yaml"),
			"mode: http\nminReplicas: 0\nmaxReplicas: 1\nidleTimeout: 2s\n")
		s.a.waitFor(b, "/invoke/zero", 180*time.Second, is200)
	}
	// The restore side needs its snapshot before the first measured round.
	waitStatus(b, sides[1].a, "zero", "the snapshot made", 5*time.Minute, func(st controller.Status) bool {
		return st.Snapshot != nil && st.Snapshot.State == controller.SnapReady
	})

	for b.Loop() {
		for _, s := range sides {
			waitStatus(b, s.a, "zero", "scaled to zero", 2*time.Minute, func(st controller.Status) bool {
				return st.State == controller.StateIdle && len(st.Instances) == 0
			})
			start := time.Now()
			resp, err := http.Get(s.a.base + "/invoke/zero")
			if err != nil {
				b.Fatalf("%s: first request after zero: %v", s.name, err)
			}
			resp.Body.Close()
			took := time.Since(start)
			if resp.StatusCode != http.StatusOK {
				b.Fatalf("%s: first request after zero: %d, want 200", s.name, resp.StatusCode)
			}
			st := s.a.status(b, "zero")
			if len(st.Instances) != 1 || st.Instances[0].Start != s.method {
				b.Fatalf("%s: the request from zero started %+v, want one instance started by %s", s.name, st.Instances, s.method)
			}
			s.times = append(s.times, took)
		}
	}
	for _, s := range sides {
		sort.Slice(s.times, func(i, j int) bool { return s.times[i] < s.times[j] })
		b.ReportMetric(float64(s.times[len(s.times)/2].Milliseconds()), "ms-"+s.name+"-from-zero-median")
		b.Logf("%s from zero (%d runs): %v", s.name, len(s.times), s.times)
	}
	boot, restore := sides[0].times[len(sides[0].times)/2], sides[1].times[len(sides[1].times)/2]
	b.ReportMetric(boot.Seconds()/restore.Seconds(), "x-faster")
}

func waitStatus(tb testing.TB, a *appliance, name, what string, bound time.Duration, cond func(controller.Status) bool) {
	tb.Helper()
	deadline := time.Now().Add(bound)
	for {
		st := a.status(tb, name)
		if cond(st) {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: %s not reached within %s (state %s, replicas %+v, snapshot %+v)", name, what, bound, st.State, st.Replicas, st.Snapshot)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
