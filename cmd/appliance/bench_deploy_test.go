package main_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"
)

// BenchmarkDeployBurst copies N exec-mode functions (functions/bash-hello)
// into the functions folder at once (FAAS_BENCH_DEPLOY_N, default 6) and
// measures, from the copy, the time to the first and to the median function
// answering 200, and to the last, within FAAS_BENCH_DEPLOY_WINDOW (5m), and
// how many answered in it. FAAS_MAX_CONCURRENT_BOOTS from the
// environment applies (scripts/bench-deploy.sh runs it with the limit off
// and with the default).
func BenchmarkDeployBurst(b *testing.B) {
	n := 6
	if v := os.Getenv("FAAS_BENCH_DEPLOY_N"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			b.Fatalf("FAAS_BENCH_DEPLOY_N=%q: want a positive number", v)
		}
	}
	window := 5 * time.Minute
	if v := os.Getenv("FAAS_BENCH_DEPLOY_WINDOW"); v != "" {
		var err error
		if window, err = time.ParseDuration(v); err != nil || window <= 0 {
			b.Fatalf("FAAS_BENCH_DEPLOY_WINDOW=%q: want a positive duration", v)
		}
	}
	round := 0
	for b.Loop() {
		round++
		a := startAppliance(b)
		// Staged next to the folder, then renamed in: all appear at once.
		stage := b.TempDir()
		names := make([]string, n)
		for i := range n {
			names[i] = fmt.Sprintf("burst-%d-%d", round, i)
			copyDir(b, "../../functions/bash-hello", filepath.Join(stage, names[i]))
		}
		start := time.Now()
		for _, name := range names {
			if err := os.Rename(filepath.Join(stage, name), filepath.Join(a.functions, name)); err != nil {
				// Another file system: copy instead.
				copyDir(b, filepath.Join(stage, name), filepath.Join(a.functions, name))
			}
		}
		// Each function's time to its first 200; 0: none within the window
		// (with every VM booting at once, some miss their boot timeout and
		// wait out a backoff: that is what the "before" run shows).
		times := make([]time.Duration, n)
		var wg sync.WaitGroup
		client := &http.Client{Timeout: 10 * time.Second}
		for i, name := range names {
			wg.Add(1)
			go func() {
				defer wg.Done()
				deadline := start.Add(window)
				for time.Now().Before(deadline) {
					resp, err := client.Get(a.base + "/invoke/" + name)
					if err == nil {
						resp.Body.Close()
						if resp.StatusCode == http.StatusOK {
							times[i] = time.Since(start)
							return
						}
					}
					time.Sleep(100 * time.Millisecond)
				}
			}()
		}
		wg.Wait()
		var answered []time.Duration
		for _, t := range times {
			if t > 0 {
				answered = append(answered, t)
			}
		}
		if len(answered) == 0 {
			b.Fatalf("none of %d functions answered 200 within %v", n, window)
		}
		sort.Slice(answered, func(i, j int) bool { return answered[i] < answered[j] })
		// The median and the last over all n functions: missing ones count
		// as later than the window.
		at := func(k int) string {
			if k < len(answered) {
				return fmt.Sprintf("%.1fs", answered[k].Seconds())
			}
			return fmt.Sprintf("not within %v", window)
		}
		b.ReportMetric(float64(len(answered)), "answered")
		b.ReportMetric(answered[0].Seconds(), "s-first")
		if n/2 < len(answered) {
			b.ReportMetric(answered[n/2].Seconds(), "s-median")
		}
		if len(answered) == n {
			b.ReportMetric(answered[n-1].Seconds(), "s-last")
		}
		b.Logf("%d functions, FAAS_MAX_CONCURRENT_BOOTS=%q: %d answered within %v; first %s median %s last %s (answered: %v)",
			n, os.Getenv("FAAS_MAX_CONCURRENT_BOOTS"), len(answered), window, at(0), at(n/2), at(n-1), answered)
		a.stop(b)
	}
}
