package main_test

// The host memory budget with real microVMs: room for two 128 MB VMs. A
// third function's deploy scales the least recently used idle one to zero;
// with both VMs busy a start is refused with 503 + Retry-After and the
// status says why; once they are idle again the refused function starts.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/faasvm/appliance/internal/controller"
)

// napper sleeps ?sleep=<seconds> (at most 20) and says who it is.
const napper = `#!/bin/bash
case "${Http_Query:-}" in
sleep=[0-9]|sleep=1[0-9]|sleep=20) sleep "${Http_Query#sleep=}" ;;
esac
echo "awake"
`

func (a *appliance) limits(t *testing.T) struct {
	Memory controller.MemoryState `json:"memory"`
} {
	t.Helper()
	code, body := a.get(t, "/api/limits")
	var l struct {
		Memory controller.MemoryState `json:"memory"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(body), &l) != nil {
		t.Fatalf("GET /api/limits: %d %q", code, body)
	}
	return l
}

func TestMemoryBudget(t *testing.T) {
	const vm = (128 + controller.VMOverhead>>20) << 20 // one VM's reservation
	a := startAppliance(t, fmt.Sprintf("FAAS_MEMORY_BUDGET=%dMiB", 2*vm>>20), "FAAS_SNAPSHOTS=false")
	deploy := func(name string) {
		writeFile(t, filepath.Join(a.functions, name, "handler.sh"), napper)
		writeFile(t, filepath.Join(a.functions, name, "function.yaml"),
			"runtime: bash\nmemory: 128MB\nminReplicas: 0\nmaxReplicas: 1\nconcurrency: 2\nidleTimeout: 1h\n")
		a.waitFor(t, "/invoke/"+name, 120*time.Second, is200)
	}
	deploy("m1")
	deploy("m2")
	a.waitFor(t, "/invoke/m2", 10*time.Second, is200) // m1 is the least recently used
	if l := a.limits(t).Memory; l.BudgetBytes != 2*vm || l.CommittedBytes != 2*vm || l.VMs != 2 {
		t.Fatalf("/api/limits memory with two VMs: %+v, want budget = committed = %d", l, 2*vm)
	}

	t.Run("a deploy scales the least recently used idle function to zero", func(t *testing.T) {
		deploy("m3")
		if s := a.status(t, "m1"); s.Replicas.Ready != 0 || s.State != controller.StateIdle {
			t.Errorf("m1 (least recently used): %s with %+v, want idle at zero", s.State, s.Replicas)
		}
		if s := a.status(t, "m2"); s.Replicas.Ready != 1 {
			t.Errorf("m2 lost its VM: %+v", s.Replicas)
		}
		if !strings.Contains(a.logText(), "scaling an idle function to zero to make memory room") {
			t.Error("the eviction is not logged")
		}
		if l := a.limits(t).Memory; l.Evictions != 1 || l.CommittedBytes != 2*vm {
			t.Errorf("/api/limits memory: %+v, want 1 eviction and two VMs committed", l)
		}
		if got := a.metrics(t)[`faasvm_memory_evictions_total{function_name="m1"}`]; got != 1 {
			t.Errorf("faasvm_memory_evictions_total for m1: %v, want 1", got)
		}
	})

	t.Run("with every VM busy a start is refused with 503 and Retry-After, then served once one is idle", func(t *testing.T) {
		var wg sync.WaitGroup
		for _, name := range []string{"m2", "m3"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if code, _, body := a.call(t, "/invoke/"+name+"?sleep=12"); code != http.StatusOK {
					t.Errorf("long request to %s: %d %q", name, code, body)
				}
			}()
		}
		defer wg.Wait()
		eventually(t, "both long requests in flight", 10*time.Second, func() (bool, string) {
			s2, s3 := a.status(t, "m2"), a.status(t, "m3")
			return s2.InFlight == 1 && s3.InFlight == 1, fmt.Sprintf("in flight m2 %d m3 %d", s2.InFlight, s3.InFlight)
		})
		code, retry, body := a.call(t, "/invoke/m1")
		if code != http.StatusServiceUnavailable || retry == "" || !strings.Contains(body, "memory") {
			t.Fatalf("request to m1 with no room: %d Retry-After %q %q, want 503 with Retry-After naming memory", code, retry, body)
		}
		if s := a.status(t, "m1"); !strings.Contains(s.LastError, "waiting for memory") {
			t.Errorf("m1's status does not say it waits for memory: %q", s.LastError)
		}
		l := a.limits(t).Memory
		if l.Refusals == 0 || len(l.Waiting) != 1 || l.Waiting[0] != "m1" || l.CommittedBytes != 2*vm {
			t.Errorf("/api/limits memory after the refusal: %+v", l)
		}
		if got := a.metrics(t)[`faasvm_memory_refusals_total{function_name="m1"}`]; got < 1 {
			t.Errorf("faasvm_memory_refusals_total for m1: %v, want ≥ 1", got)
		}
		// When the long requests end, m1 gets room (its retry evicts the
		// least recently used of m2 and m3) without anyone touching it.
		wg.Wait()
		eventually(t, "m1 started once the others were idle", 60*time.Second, func() (bool, string) {
			s := a.status(t, "m1")
			return s.Replicas.Ready == 1, fmt.Sprintf("m1 %s %+v %q", s.State, s.Replicas, s.LastError)
		})
		if code, _, body := a.call(t, "/invoke/m1"); code != http.StatusOK || !strings.Contains(body, "awake") {
			t.Errorf("m1 after the retry: %d %q", code, body)
		}
		ready := a.status(t, "m2").Replicas.Ready + a.status(t, "m3").Replicas.Ready
		if l := a.limits(t).Memory; ready != 1 || l.CommittedBytes != 2*vm || len(l.Waiting) != 0 {
			t.Errorf("after the retry: %d of m2/m3 ready (want 1), memory %+v", ready, l)
		}
	})
}
