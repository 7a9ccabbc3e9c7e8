package main_test

// Passive health with real microVMs: one of a function's two ready VMs is
// killed (SIGKILL of its QEMU); requests without a body keep answering 200
// from the other VM, and a request whose body was sent to the dead VM is
// answered with an error, never replayed on the other.

import (
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/faasvm/appliance/internal/vmtest"
)

// qemuPIDs returns the QEMU processes of the appliance (its VMs).
func (a *appliance) qemuPIDs() []int {
	var pids []int
	for _, pid := range vmtest.ProcessesWith(a.stateDir) {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
		if err == nil && strings.Contains(strings.SplitN(string(b), "\x00", 2)[0], "qemu-system") {
			pids = append(pids, pid)
		}
	}
	return pids
}

type answer struct {
	code      int
	body      string
	start     time.Time
	hasBody   bool
	clientErr error
}

func (a *appliance) send(method, path, body string) answer {
	ans := answer{start: time.Now(), hasBody: body != ""}
	req, err := http.NewRequest(method, a.base+path, strings.NewReader(body))
	if err != nil {
		ans.clientErr = err
		return ans
	}
	if body == "" {
		req.Body = http.NoBody
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		ans.clientErr = err
		return ans
	}
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 4096)
	for {
		n, rerr := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if rerr != nil {
			break
		}
	}
	ans.code, ans.body = resp.StatusCode, strings.TrimSpace(sb.String())
	return ans
}

func TestPassiveHealth(t *testing.T) {
	a := startAppliance(t)
	writeFile(t, filepath.Join(a.functions, "twin", "handler.py"), sleeper)
	writeFile(t, filepath.Join(a.functions, "twin", "function.yaml"),
		"mode: http\nminReplicas: 2\nmaxReplicas: 2\nconcurrency: 4\n")
	a.waitFor(t, "/invoke/twin", 180*time.Second, is200)
	eventually(t, "two ready VMs of twin", 180*time.Second, func() (bool, string) {
		s := a.status(t, "twin")
		return s.Replicas.Ready == 2 && len(a.qemuPIDs()) == 2, "replicas " + strconv.Itoa(s.Replicas.Ready) + ", qemu " + strconv.Itoa(len(a.qemuPIDs()))
	})
	pids := a.qemuPIDs()

	// Two slow calls with a body, at once: the gateway gives each VM one
	// (fewest in flight first), so one of them is inside the VM killed below.
	payload := strings.Repeat("body byte ", 1000)
	posts := make(chan answer, 2)
	for range 2 {
		go func() { posts <- a.send(http.MethodPost, "/invoke/twin?sleep=6", payload) }()
	}
	eventually(t, "both slow calls in flight", 30*time.Second, func() (bool, string) {
		s := a.status(t, "twin")
		return s.InFlight == 2, "in flight " + strconv.Itoa(s.InFlight)
	})

	// Calls without a body, before, during and after the kill, from three
	// clients: with the slow call they stay within the other VM's concurrency.
	var (
		mu      sync.Mutex
		answers []answer
		stop    = make(chan struct{})
		wg      sync.WaitGroup
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
				ans := a.send(http.MethodGet, "/invoke/twin", "")
				mu.Lock()
				answers = append(answers, ans)
				mu.Unlock()
			}
		}()
	}
	time.Sleep(500 * time.Millisecond) // the clients' connections are warm
	killed := time.Now()
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL of QEMU %d: %v", pids[0], err)
	}
	t.Logf("SIGKILL of QEMU %d", pids[0])
	time.Sleep(3 * time.Second)
	close(stop)
	wg.Wait()

	survivors := map[string]int{}
	after := 0
	for _, ans := range answers {
		if !ans.start.After(killed) {
			continue
		}
		after++
		if ans.clientErr != nil || ans.code != http.StatusOK {
			t.Errorf("GET started %v after the kill: got %d %q (%v), want 200 from the other VM",
				ans.start.Sub(killed).Round(time.Millisecond), ans.code, ans.body, ans.clientErr)
			continue
		}
		survivors[ans.body]++
	}
	if after < 10 {
		t.Errorf("only %d GETs after the kill, want at least 10", after)
	}
	if len(survivors) != 1 {
		t.Errorf("GETs after the kill were answered by %d VMs (%v), want the one left", len(survivors), survivors)
	}

	// The call inside the killed VM had its body sent: an error, not a
	// second run on the other VM (which would answer 200 with its id).
	got := []answer{<-posts, <-posts}
	ok, failed := 0, 0
	for _, p := range got {
		switch {
		case p.clientErr == nil && p.code == http.StatusOK:
			ok++
			if survivors[p.body] == 0 {
				t.Errorf("slow POST answered 200 by VM %q, not the survivor %v", p.body, survivors)
			}
		case p.clientErr == nil && p.code == http.StatusBadGateway:
			failed++
		default:
			t.Errorf("slow POST: got %d %q (%v), want 200 (survivor) or 502 (killed VM)", p.code, p.body, p.clientErr)
		}
	}
	if ok != 1 || failed != 1 {
		t.Errorf("slow POSTs: %d answered 200 and %d 502, want 1 and 1 (the killed VM's call not replayed)", ok, failed)
	}
	a.logMu.Lock()
	retried := strings.Count(a.log.String(), "instance unreachable, retrying on another")
	a.logMu.Unlock()
	t.Logf("%d GETs after the kill, answered by %v; gateway retries logged: %d", after, survivors, retried)
	// The GETs in flight on the killed VM met its closed port: at least one
	// went to the other VM through the gateway's retry (not only because
	// the controller had dropped the dead VM already).
	if retried == 0 {
		t.Errorf("no request was retried on the other VM (no %q in the log)", "instance unreachable, retrying on another")
	}
}
