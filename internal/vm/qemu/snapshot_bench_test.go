package qemu_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/faasvm/appliance/guest/protocol"
	"github.com/faasvm/appliance/internal/vm"
	"github.com/faasvm/appliance/internal/vm/qemu"
	"github.com/faasvm/appliance/internal/vmtest"
)

// BenchmarkSnapshot compares, for the same http-mode python function in one
// run: boot-to-first-200 with restore-to-first-200 (median of
// FAAS_BENCH_STARTS, at least 7, each), and the PSS of the qemu processes of
// 5 idle booted VMs with that of 5 idle clones of one snapshot. Run it with
// -benchtime 1x (scripts/bench-snapshot.sh). FAAS_BENCH_TB_SIZE sets the
// TCG translation cache (MiB) to measure its effect.
func BenchmarkSnapshot(b *testing.B) {
	starts := 7
	if n, err := strconv.Atoi(os.Getenv("FAAS_BENCH_STARTS")); err == nil && n > starts {
		starts = n
	}
	const idle = 5
	h := newHarness(b, func(c *qemu.Config) {
		if n, err := strconv.Atoi(os.Getenv("FAAS_BENCH_TB_SIZE")); err == nil {
			c.TBSizeMiB = n
		}
	})
	fc := fnCase{name: "bench-py", runtime: "python3", mode: protocol.ModeHTTP, handler: "handler.py", code: pyCounter}
	spec := h.spec(b, fc, false)
	spec.VM.SetAnnotation(vm.SnapshotKeyAnnotation, "bench")
	clone := func(i int) *vm.Spec { c := cloneSpec(spec, i); return c }

	for b.Loop() {
		boot := func(i int) (vm.Machine, error) { return h.engine.Start(context.Background(), clone(i)) }
		bootTimes, bootPSS := measureStarts(b, "boot", starts, idle, spec, boot)

		dir := filepath.Join(h.state, "snaps", "bench")
		snapBegin := time.Now()
		snap, err := h.engine.Snapshot(context.Background(), spec, dir, func(ctx context.Context, m vm.Machine) error {
			if r := call(b, m, spec.Agent.Secret, "GET", "/warm", "", nil); r.status != 200 {
				return fmt.Errorf("warm-up answered %d", r.status)
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(time.Since(snapBegin).Milliseconds()), "ms-snapshot")
		b.ReportMetric(float64(snap.Size)/(1<<20), "MiB-snapshot-on-disk")
		restore := func(i int) (vm.Machine, error) { return h.engine.Restore(context.Background(), snap, clone(i)) }
		restoreTimes, restorePSS := measureStarts(b, "restore", starts, idle, spec, restore)

		boot50, restore50 := median(bootTimes), median(restoreTimes)
		b.ReportMetric(float64(boot50.Microseconds())/1000, "ms-boot-to-200-median")
		b.ReportMetric(float64(restore50.Microseconds())/1000, "ms-restore-to-200-median")
		b.ReportMetric(float64(boot50)/float64(restore50), "x-restore-faster")
		b.ReportMetric(medianInt(bootPSS)/1024, "MiB-pss-idle-booted-median")
		b.ReportMetric(medianInt(restorePSS)/1024, "MiB-pss-idle-restored-median")
		b.Logf("boot-to-200 %v; restore-to-200 %v; PSS booted %v KiB, restored %v KiB", bootTimes, restoreTimes, bootPSS, restorePSS)
	}
}

// measureStarts starts n VMs one after another with start, timing each to
// its first 200; the last idle of them stay up until all have started and
// the PSS of each one's qemu is read after they have idled a while.
func measureStarts(b *testing.B, what string, n, idle int, spec *vm.Spec, start func(i int) (vm.Machine, error)) ([]time.Duration, []int) {
	var times []time.Duration
	var running []vm.Machine
	defer func() {
		for _, m := range running {
			m.Stop(context.Background())
		}
	}()
	for i := range n {
		begin := time.Now()
		m, err := start(i + 1)
		if err != nil {
			b.Fatalf("%s %d: %v", what, i+1, err)
		}
		r := call(b, m, spec.Agent.Secret+"-clone"+strconv.Itoa(i+1), "GET", "/", "", nil)
		times = append(times, time.Since(begin))
		if r.status != 200 {
			b.Fatalf("%s %d: first call answered %d %q", what, i+1, r.status, r.body)
		}
		if i >= n-idle {
			running = append(running, m)
		} else if err := m.Stop(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	time.Sleep(3 * time.Second) // idle: let the guests settle
	var pss []int
	for _, m := range running {
		for _, pid := range vmtest.ProcessesWith(filepath.Dir(m.ConsoleLog())) {
			pss = append(pss, vmtest.PSSKiB(pid))
		}
	}
	if len(pss) != idle {
		b.Fatalf("%s: PSS of %d qemu processes read, want %d", what, len(pss), idle)
	}
	return times, pss
}

func medianInt(v []int) float64 {
	s := append([]int(nil), v...)
	sort.Ints(s)
	return float64(s[len(s)/2])
}
