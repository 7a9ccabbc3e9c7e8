package main_test

// The state disk and faults, with the real appliance and real VMs: the
// state directory on a small tmpfs of the test's own, a Docker engine
// reached through a socket proxy the test can take away, and a QEMU killed
// under load.
//
//   - garbage collection: after keep+1 edits the first version's code disk
//     is gone, the serving one and the kept one stay;
//   - the state budget: /healthz says over budget, /api/disk names the
//     largest users;
//   - a corrupted cached root filesystem is detected at the next deploy and
//     made again;
//   - the disk full: a redeploy fails with a status that says so and
//     retries, the version already serving keeps answering, and once space
//     is freed the new version deploys by itself;
//   - the Docker engine unreachable: a deploy fails saying so and retries;
//     it deploys once the engine answers again;
//   - QEMU killed during a stream of requests: only requests in flight
//     fail, each with a clean 502; every other one succeeds.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/faasvm/appliance/internal/controller"
	"github.com/faasvm/appliance/internal/vmtest"
)

// tmpfsStateDir mounts a tmpfs of size bytes in a fresh directory (removed,
// unmounted, at the end of the test) holding the bash runtime's root
// filesystem copied from the shared cache, and returns it.
func tmpfsStateDir(t *testing.T, size int64) string {
	t.Helper()
	// The shared cache's bash root filesystem is copied in below: make sure
	// it exists (vmtest.Load also fails, with what to run, when the real-VM
	// assets are missing).
	assets := vmtest.Load(t)
	if _, err := assets.Disks.RootFS(context.Background(), "bash", ""); err != nil {
		t.Fatalf("building the bash root filesystem in the shared cache: %v", err)
	}
	shared := assets.StateDir
	dir := vmtest.ShortDir(t)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0755", size), "faasvm-test", dir).CombinedOutput(); err != nil {
		t.Fatalf("mounting a tmpfs on %s (the test needs root): %v %s", dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("unmounting %s: %v %s", dir, err, out)
		}
	})
	record := filepath.Join(shared, "images", "rootfs", "runtime-bash.id")
	b, err := os.ReadFile(record)
	if err != nil {
		t.Fatalf("the shared cache has no bash root filesystem (run a real-VM test once, e.g. make test): %v", err)
	}
	id := strings.TrimPrefix(strings.TrimSpace(string(b)), "sha256:")
	rootfs := filepath.Join(dir, "images", "rootfs")
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "--sparse=always", filepath.Join(shared, "images", "rootfs", id+".ext4"), record, rootfs).CombinedOutput(); err != nil {
		t.Fatalf("copying the bash root filesystem: %v %s", err, out)
	}
	return dir
}

// dockerProxy forwards a unix socket of its own to the real Docker engine
// until stopped; start serves again on the same path.
type dockerProxy struct {
	path, target string
	mu           sync.Mutex
	ln           net.Listener
	conns        []net.Conn
}

func newDockerProxy(t *testing.T) *dockerProxy {
	target := "/var/run/docker.sock"
	if h := os.Getenv("DOCKER_HOST"); strings.HasPrefix(h, "unix://") {
		target = strings.TrimPrefix(h, "unix://")
	}
	p := &dockerProxy{path: filepath.Join(vmtest.ShortDir(t), "docker.sock"), target: target}
	p.start(t)
	t.Cleanup(p.stop)
	return p
}

func (p *dockerProxy) start(t *testing.T) {
	t.Helper()
	os.Remove(p.path)
	ln, err := net.Listen("unix", p.path)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("unix", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
}

// stop closes the socket and every connection through it: the engine is
// unreachable for the appliance.
func (p *dockerProxy) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	os.Remove(p.path)
}

func bashHandler(word string) string {
	return "#!/bin/bash\ncat >/dev/null\necho \"" + word + "\"\n"
}

// codeDisks lists the code disks in the state directory's cache.
func codeDisks(t *testing.T, stateDir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(stateDir, "images", "code", "*.ext4"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return m
}

// newOnes is what after holds that before did not.
func newOnes(before, after []string) []string {
	var out []string
	for _, p := range after {
		if !slices.Contains(before, p) {
			out = append(out, p)
		}
	}
	return out
}

func TestStateDiskAndFaults(t *testing.T) {
	state := tmpfsStateDir(t, 640<<20)
	proxy := newDockerProxy(t)
	a := startAppliance(t,
		"FAAS_STATE_DIR="+state,
		// No VM snapshots: a builder VM's RAM file (up to the guest's
		// memory, on this tmpfs) would grow and shrink the free space
		// while the test fills the disk and waits for the deploy to fail.
		"FAAS_SNAPSHOTS=false",
		"DOCKER_HOST=unix://"+proxy.path,
		"FAAS_KEEP_VERSIONS=1",
		"FAAS_STATE_BUDGET=40MiB",
		"FAAS_MIN_REPLICAS=1",
		// JetStream refuses a stream larger than the disk it is on.
		"FAAS_ASYNC_MAX_BYTES=32MiB",
	)
	a.stateDir = state
	fn := filepath.Join(a.functions, "disk")
	say := func(word string) {
		writeFile(t, filepath.Join(fn, "handler.sh"), bashHandler(word))
		if err := os.Chmod(filepath.Join(fn, "handler.sh"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	answers := func(word string, bound time.Duration) {
		t.Helper()
		a.waitFor(t, "/invoke/disk", bound, func(code int, body string) bool {
			return code == http.StatusOK && strings.TrimSpace(body) == word
		})
	}

	// Garbage collection: v0, then keep+1 = 2 edits.
	var disks [][]string // the code disks each version added
	seen := codeDisks(t, state)
	for i, w := range []string{"v0", "v1", "v2"} {
		say(w)
		answers(w, 3*time.Minute)
		now := codeDisks(t, state)
		added := newOnes(seen, now)
		if len(added) != 1 {
			t.Fatalf("version %d added code disks %v, want one", i, added)
		}
		disks = append(disks, added)
		seen = now
	}
	eventually(t, "v0's code disk removed after keep+1 edits", 90*time.Second, func() (bool, string) {
		_, err := os.Stat(disks[0][0])
		return errors.Is(err, os.ErrNotExist), fmt.Sprintf("%s: %v", disks[0][0], err)
	})
	for i, d := range disks[1:] {
		if _, err := os.Stat(d[0]); err != nil {
			t.Errorf("version %d's code disk (kept or serving) is gone: %v", i+1, err)
		}
	}
	if code, body := a.get(t, "/invoke/disk"); code != 200 || strings.TrimSpace(body) != "v2" {
		t.Errorf("after collection: got %d %q, want v2", code, body)
	}

	// The state budget (40 MiB; the root filesystem alone is more).
	_, health := a.waitFor(t, "/healthz", 90*time.Second, func(code int, body string) bool {
		return code == 200 && strings.Contains(body, `"overBudget":true`)
	})
	if strings.Contains(health, "images/") {
		t.Errorf("/healthz names paths (it is public): %s", health)
	}
	code, body := a.get(t, "/api/disk?fresh=1")
	var rep struct {
		Over    bool `json:"overBudget"`
		Largest []struct {
			Path  string `json:"path"`
			Bytes int64  `json:"bytes"`
		} `json:"largest"`
	}
	if err := json.Unmarshal([]byte(body), &rep); err != nil || code != 200 || !rep.Over || len(rep.Largest) == 0 ||
		!strings.HasPrefix(rep.Largest[0].Path, "images/rootfs/") {
		t.Errorf("/api/disk: %d %s (%v), want over budget with the root filesystem first", code, body, err)
	}
	if !strings.Contains(a.logText(), "largest_1") {
		t.Errorf("no warning naming the largest users in the log")
	}

	// A corrupted root filesystem: replaced by a truncated copy (the VM
	// serving keeps its open file), detected at the next deploy, made again.
	rootfs, _ := filepath.Glob(filepath.Join(state, "images", "rootfs", "*.ext4"))
	if len(rootfs) != 1 {
		t.Fatalf("root filesystems on the tmpfs: %v, want one", rootfs)
	}
	corrupt := rootfs[0] + ".corrupt"
	if out, err := exec.Command("cp", "--sparse=always", rootfs[0], corrupt).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	if err := os.Truncate(corrupt, 8<<20); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(corrupt, rootfs[0]); err != nil {
		t.Fatal(err)
	}
	say("v3")
	answers("v3", 4*time.Minute)
	if fi, err := os.Stat(rootfs[0]); err != nil || fi.Size() <= 8<<20 {
		t.Errorf("the root filesystem was not made again: %v %v", fi, err)
	}
	if !strings.Contains(a.logText(), "cache entry corrupted") {
		t.Errorf("no log line about the corrupted entry")
	}

	// The disk full.
	var st syscall.Statfs_t
	if err := syscall.Statfs(state, &st); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(state, "filler")
	if out, err := exec.Command("fallocate", "-l", fmt.Sprint(int64(st.Bavail)*st.Bsize), filler).CombinedOutput(); err != nil {
		t.Fatalf("filling the tmpfs: %v %s", err, out)
	}
	say("v4")
	var failed controller.Status
	eventually(t, "the redeploy fails for want of space", 2*time.Minute, func() (bool, string) {
		failed = a.status(t, "disk")
		return strings.Contains(failed.LastError, "disk is full"), failed.LastError
	})
	if !strings.Contains(failed.LastError, "retrying in") || !strings.Contains(failed.LastError, "previous version still serving") {
		t.Errorf("status: %q, want it to say the previous version serves and when it retries", failed.LastError)
	}
	for range 10 {
		if code, body := a.get(t, "/invoke/disk"); code != 200 || strings.TrimSpace(body) != "v3" {
			t.Fatalf("with the disk full: got %d %q, want v3 still serving", code, body)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(state, "images", "tmp", "*")); len(left) != 0 {
		t.Errorf("the failed deploy left work in the cache: %v", left)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	answers("v4", 3*time.Minute)

	// The Docker engine unreachable.
	proxy.stop()
	say("v5")
	eventually(t, "the redeploy fails for want of the engine", 2*time.Minute, func() (bool, string) {
		s := a.status(t, "disk")
		return strings.Contains(s.LastError, "docker engine does not answer"), s.LastError
	})
	if code, body := a.get(t, "/invoke/disk"); code != 200 || strings.TrimSpace(body) != "v4" {
		t.Errorf("without the engine: got %d %q, want v4 still serving", code, body)
	}
	proxy.start(t)
	answers("v5", 3*time.Minute)

	// QEMU killed during a stream of requests.
	killDuringStream(t, a)
}

// killDuringStream sends requests from a few workers, kills the function's
// QEMU in the middle, and checks that only requests in flight failed, each
// with a 502.
func killDuringStream(t *testing.T, a *appliance) {
	t.Helper()
	pids := vmtest.ProcessesWith(a.stateDir)
	if len(pids) == 0 {
		t.Fatalf("no QEMU process under %s", a.stateDir)
	}
	const workers = 4
	var (
		mu       sync.Mutex
		ok       int
		failed   = map[int]int{}
		stop     = make(chan struct{})
		wg       sync.WaitGroup
		client   = &http.Client{Timeout: 2 * time.Minute}
		killedAt time.Time
		// failures of requests sent after the kill: none reached the dead
		// VM, so each must wait for the replacement and succeed.
		lateFailed = map[string]int{}
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				late := !killedAt.IsZero()
				mu.Unlock()
				resp, err := client.Post(a.base+"/invoke/disk", "text/plain", strings.NewReader("x"))
				code, why := 0, ""
				if err != nil {
					why = err.Error()
				} else {
					body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
					resp.Body.Close()
					why = string(body)
					code = resp.StatusCode
				}
				mu.Lock()
				if code == http.StatusOK {
					ok++
				} else {
					failed[code]++
					if late {
						lateFailed[fmt.Sprintf("%d %s", code, why)]++
					}
				}
				mu.Unlock()
			}
		}()
	}
	time.Sleep(3 * time.Second)
	mu.Lock()
	before := ok
	mu.Unlock()
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	mu.Lock()
	killedAt = time.Now() // a request sent from now on cannot be in flight on the killed VM
	mu.Unlock()
	// Until a new VM answers, and a little longer.
	a.waitFor(t, "/invoke/disk", 2*time.Minute, is200)
	time.Sleep(3 * time.Second)
	close(stop)
	wg.Wait()
	t.Logf("QEMU killed after %d answers; %d answers in all, failures by status %v, back in %s",
		before, ok, failed, time.Since(killedAt).Round(time.Millisecond))
	total := 0
	for code, n := range failed {
		total += n
		if code != http.StatusBadGateway {
			t.Errorf("%d requests failed with %d, want only 502s", n, code)
		}
	}
	// Each client may lose only the request in flight on the killed VM. One
	// sent in the moment before the appliance saw QEMU exit is refused by
	// the dead VM's port and waits for the replacement; the burst of them
	// let go onto the fresh VM must not be reset (slirp's backlog of 1).
	if total > workers {
		t.Errorf("%d requests failed, more than the %d in flight", total, workers)
	}
	if len(lateFailed) > 0 {
		t.Errorf("requests sent after the kill failed (status and error: count): %v; want each to wait for the replacement", lateFailed)
	}
	if ok <= before {
		t.Errorf("no request succeeded after the kill")
	}
}
