package main_test

// Scaling with real microVMs: a burst scales a function out, idleness
// scales it to zero, the next request boots it again, and past the queue
// bound the gateway answers 429. Counters are checked in /api/functions and
// /metrics.

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/faasvm/appliance/internal/controller"
)

// sleeper answers with an id drawn once per VM (the Python process starts
// once per VM in http mode) after sleeping ?sleep=<seconds>.
const sleeper = `import time, uuid
from urllib.parse import parse_qs

VM = uuid.uuid4().hex


def handle(req):
    q = parse_qs(req.get("query") or "")
    time.sleep(float(q.get("sleep", ["0"])[0]))
    return VM
`

// metrics fetches /metrics as series (name{labels} exactly as exposed) →
// value.
func (a *appliance) metrics(t *testing.T) map[string]float64 {
	t.Helper()
	code, body := a.get(t, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: got %d %q", code, body)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("/metrics line %q: not `series value`", line)
		}
		out[line[:i]] = v
	}
	return out
}

// eventually polls cond every 100ms until it holds, bounded; cond also
// says what it saw, for the failure message.
func eventually(t *testing.T, what string, bound time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		ok, saw := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; last saw %s", what, bound, saw)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// call invokes a function and returns the status, the Retry-After header
// and the body.
func (a *appliance) call(t *testing.T, path string) (int, string, string) {
	resp, err := http.Get(a.base + path)
	if err != nil {
		t.Errorf("GET %s: %v", path, err)
		return 0, "", ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After"), string(b)
}

func TestScale(t *testing.T) {
	// Three requests may wait per function: enough for the burst below to
	// wait for boots from zero, small enough to reach in the 429 test.
	// Snapshots on (the product's default), as the one appliance-level test
	// of the snapshot builder running beside real traffic: the start from
	// zero below is a boot or a restore.
	a := startAppliance(t, "FAAS_QUEUE=3", "FAAS_SNAPSHOTS=true")
	writeFile(t, filepath.Join(a.functions, "scaler", "handler.py"), sleeper)
	writeFile(t, filepath.Join(a.functions, "scaler", "function.yaml"),
		"mode: http\nminReplicas: 0\nmaxReplicas: 3\nconcurrency: 1\ntargetUtilization: 1\nidleTimeout: 3s\n")
	writeFile(t, filepath.Join(a.functions, "narrow", "handler.py"), sleeper)
	writeFile(t, filepath.Join(a.functions, "narrow", "function.yaml"),
		"mode: http\nminReplicas: 1\nmaxReplicas: 1\nconcurrency: 1\n")
	a.waitFor(t, "/invoke/scaler", 120*time.Second, is200)
	a.waitFor(t, "/invoke/narrow", 120*time.Second, is200)

	// The subtests are independent of each other; in this order the 429
	// test runs while the scaler idles to zero.
	t.Run("a burst scales out to maxReplicas and every request is answered and counted", func(t *testing.T) {
		s0 := a.status(t, "scaler").Invocations
		m0 := a.metrics(t)[`gateway_function_invocation_total{code="200",function_name="scaler"}`]

		// Three clients call at once and again, a slot per VM: the
		// function scales out to maxReplicas 3.
		start := time.Now()
		var (
			mu        sync.Mutex
			vms       = map[string]int{}
			sent, bad int
			stop      = make(chan struct{})
			wg        sync.WaitGroup
		)
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					code, _, body := a.call(t, "/invoke/scaler?sleep=1")
					mu.Lock()
					sent++
					ok := code == http.StatusOK
					if ok {
						vms[body]++
					} else {
						bad++
					}
					mu.Unlock()
					if !ok {
						t.Errorf("burst request: got %d %q, want 200", code, body)
						return
					}
				}
			}()
		}
		maxReady := 0
		deadline := time.Now().Add(90 * time.Second)
		for {
			maxReady = max(maxReady, a.status(t, "scaler").Replicas.Ready)
			mu.Lock()
			distinct := len(vms)
			mu.Unlock()
			if (maxReady == 3 && distinct == 3) || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		close(stop)
		wg.Wait()
		t.Logf("burst: %d requests in %s, per VM %v", sent, time.Since(start).Round(100*time.Millisecond), vms)
		if maxReady != 3 || len(vms) != 3 || bad != 0 {
			t.Fatalf("burst: got at most %d ready, %d VMs answering, %d failures; want 3, 3, 0", maxReady, len(vms), bad)
		}
		eventually(t, "invocation counters equal to the requests sent", 5*time.Second, func() (bool, string) {
			total := a.status(t, "scaler").Invocations.Total - s0.Total
			m := a.metrics(t)[`gateway_function_invocation_total{code="200",function_name="scaler"}`] - m0
			return total == uint64(sent) && m == float64(sent), fmt.Sprintf("api +%d, metrics +%v, sent %d", total, m, sent)
		})
	})

	t.Run("past the queue bound the answer is 429", func(t *testing.T) {
		const n = 7 // one runs, FAAS_QUEUE=3 wait, three are refused
		before := a.status(t, "narrow").Invocations
		type answer struct {
			code  int
			retry string
		}
		answers := make([]answer, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				code, retry, _ := a.call(t, "/invoke/narrow?sleep=1.5")
				answers[i] = answer{code, retry}
			}()
		}
		close(start)
		wg.Wait()
		counts := map[int]int{}
		for _, ans := range answers {
			counts[ans.code]++
			if ans.code == http.StatusTooManyRequests && ans.retry == "" {
				t.Errorf("a 429 without Retry-After")
			}
		}
		if counts[200] != 4 || counts[429] != 3 {
			t.Errorf("answers: got %v, want 4×200 and 3×429", counts)
		}
		eventually(t, "counters of 4 answered and 3 refused", 5*time.Second, func() (bool, string) {
			got := a.status(t, "narrow").Invocations
			m := a.metrics(t)[`gateway_function_invocation_total{code="429",function_name="narrow"}`]
			return got.Rejected-before.Rejected == 3 && got.Total-before.Total == 4 && m == 3,
				fmt.Sprintf("api %+v (before %+v), metrics 429s %v", got, before, m)
		})
	})

	t.Run("idleness scales to zero and the next request cold-starts", func(t *testing.T) {
		// minReplicas 0, idleTimeout 3s: back to zero.
		idleStart := time.Now()
		eventually(t, "scaled to zero", 30*time.Second, func() (bool, string) {
			s := a.status(t, "scaler")
			return s.State == controller.StateIdle && s.Replicas.Ready+s.Replicas.Booting+s.Replicas.Draining == 0,
				fmt.Sprintf("state %s replicas %+v", s.State, s.Replicas)
		})
		t.Logf("at zero after %s", time.Since(idleStart).Round(100*time.Millisecond))
		if got := a.metrics(t)[`gateway_service_count{function_name="scaler"}`]; got != 0 {
			t.Errorf("gateway_service_count at zero: got %v, want 0", got)
		}

		// The next request starts a VM (a boot, or a restore once the
		// version's snapshot is made), waits for it and succeeds.
		cold0 := a.status(t, "scaler").Invocations.ColdStarts
		starts := func() float64 { // boots and snapshot restores
			m := a.metrics(t)
			return m[`faasvm_vm_start_seconds_count{function_name="scaler",method="boot"}`] +
				m[`faasvm_vm_start_seconds_count{function_name="scaler",method="restore"}`]
		}
		starts0 := starts()
		callStart := time.Now()
		if code, _, body := a.call(t, "/invoke/scaler"); code != http.StatusOK {
			t.Fatalf("request from zero: got %d %q, want 200", code, body)
		}
		t.Logf("request from zero answered in %s", time.Since(callStart).Round(10*time.Millisecond))
		eventually(t, "a cold start counted", 5*time.Second, func() (bool, string) {
			s := a.status(t, "scaler")
			m := a.metrics(t)[`faasvm_cold_starts_total{function_name="scaler"}`]
			return s.Invocations.ColdStarts == cold0+1 && m == float64(cold0+1),
				fmt.Sprintf("api %d (before %d), metrics %v", s.Invocations.ColdStarts, cold0, m)
		})
		s := a.status(t, "scaler")
		if s.State != controller.StateReady || s.Replicas.Ready != 1 || s.Latency.Samples == 0 || s.Latency.P99Ms < s.Latency.P50Ms {
			t.Errorf("status after the cold start: got %s, replicas %+v, latency %+v; want ready, 1, a latency summary", s.State, s.Replicas, s.Latency)
		}
		if got := starts(); got != starts0+1 {
			t.Errorf("faasvm_vm_start_seconds_count (boot+restore): got %v, want %v (one more VM start)", got, starts0+1)
		}
		t.Logf("latency over %d invocations: p50 %.0fms p99 %.0fms mean %.0fms",
			s.Latency.Samples, s.Latency.P50Ms, s.Latency.P99Ms, s.Latency.MeanMs)
	})
}
