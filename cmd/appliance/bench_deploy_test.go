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
// answering 200, and to the last. FAAS_MAX_CONCURRENT_BOOTS from the
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
		times := make([]time.Duration, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		client := &http.Client{Timeout: 10 * time.Second}
		for i, name := range names {
			wg.Add(1)
			go func() {
				defer wg.Done()
				deadline := start.Add(5 * time.Minute)
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
				errs[i] = fmt.Errorf("%s: no 200 within 5m", name)
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
		sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
		b.ReportMetric(times[0].Seconds(), "s-first")
		b.ReportMetric(times[len(times)/2].Seconds(), "s-median")
		b.ReportMetric(times[len(times)-1].Seconds(), "s-last")
		b.Logf("%d functions, FAAS_MAX_CONCURRENT_BOOTS=%q: first %.1fs median %.1fs last %.1fs (all: %v)",
			n, os.Getenv("FAAS_MAX_CONCURRENT_BOOTS"), times[0].Seconds(), times[len(times)/2].Seconds(),
			times[len(times)-1].Seconds(), times)
		a.stop(b)
	}
}
