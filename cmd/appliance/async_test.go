package main_test

// Asynchronous calls with real microVMs and the real binary: retries, dead
// letters, the callback allowlist, 200 calls surviving a SIGKILL of the
// appliance, and an external nats-server (FAAS_NATS_URL).

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/faasvm/appliance/internal/async"
	"github.com/faasvm/appliance/internal/async/natstest"
)

// worker answers "done <body> <sha256(body)[:16]>" after 0.2s: computed
// inside the VM, so a callback carrying it proves the function ran on
// that very input.
const asyncWorker = `import hashlib, time


def handle(req):
    time.sleep(0.2)
    text = req["text"]
    return "done %s %s" % (text, hashlib.sha256(text.encode()).hexdigest()[:16])
`

// flaky fails with 503 twice per body, then succeeds; on /always it never
// does. Its memory lives as long as its VM (one replica, http mode).
const asyncFlaky = `TRIES = {}


def handle(req):
    key = req["text"]
    TRIES[key] = TRIES.get(key, 0) + 1
    if req["path"] == "/always" or TRIES[key] <= 2:
        return (503, "not yet: try %d" % TRIES[key])
    return "ok after %d tries" % TRIES[key]
`

func workerAnswer(body string) string {
	sum := sha256.Sum256([]byte(body))
	return "done " + body + " " + hex.EncodeToString(sum[:])[:16]
}

// callbackSink is the test's own callback receiver on 127.0.0.1. It
// outlives the appliances, so it counts every completion however often
// the appliance dies.
type callbackSink struct {
	url string
	mu  sync.Mutex
	got map[string][]string // call id → the bodies posted for it
	n   int
}

func newCallbackSink(t *testing.T) *callbackSink {
	s := &callbackSink{got: map[string][]string{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		id := r.Header.Get("X-Call-Id")
		s.got[id] = append(s.got[id], r.Header.Get("X-Function-Status")+" "+string(b))
		s.n++
		s.mu.Unlock()
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	s.url = "http://" + ln.Addr().String() + "/done"
	return s
}

func (s *callbackSink) distinct() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got)
}

// submit sends one async call and returns the status and the call id.
func (a *appliance) submit(t *testing.T, path, body string, header map[string]string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, a.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("X-Call-Id"), string(b)
}

// callResult reads GET /api/calls/<id>.
func (a *appliance) callResult(t *testing.T, id string) (int, async.Result) {
	t.Helper()
	code, body := a.get(t, "/api/calls/"+id)
	var r async.Result
	if code == http.StatusOK {
		if err := json.Unmarshal([]byte(body), &r); err != nil {
			t.Fatalf("call %s: %v (%q)", id, err, body)
		}
	}
	return code, r
}

func (a *appliance) waitCall(t *testing.T, id string, bound time.Duration, cond func(async.Result) bool) async.Result {
	t.Helper()
	var last async.Result
	eventually(t, "call "+id, bound, func() (bool, string) {
		code, r := a.callResult(t, id)
		last = r
		return code == http.StatusOK && cond(r), fmt.Sprintf("%d %+v", code, r)
	})
	return last
}

var natsAddrRE = regexp.MustCompile(`msg="nats listening".* addr=(\S+)`)

// natsAddr is the embedded server's client address, from the log.
func (a *appliance) natsAddr(t *testing.T) string {
	t.Helper()
	a.logMu.Lock()
	defer a.logMu.Unlock()
	m := natsAddrRE.FindStringSubmatch(a.log.String())
	if m == nil {
		t.Fatalf("no \"nats listening\" line in the appliance log")
	}
	return m[1]
}

func TestAsync(t *testing.T) {
	sink := newCallbackSink(t)
	env := []string{
		"FAAS_CALLBACK_HOSTS=127.0.0.1", "FAAS_ASYNC_MAX_RETRIES=3", "FAAS_ASYNC_RETRY_BACKOFF=200ms",
		"FAAS_NATS_LISTEN=127.0.0.1:0",
	}
	a := startAppliance(t, env...)
	writeFile(t, filepath.Join(a.functions, "worker", "handler.py"), asyncWorker)
	writeFile(t, filepath.Join(a.functions, "worker", "function.yaml"), "mode: http\nminReplicas: 1\nmaxReplicas: 1\nconcurrency: 8\n")
	writeFile(t, filepath.Join(a.functions, "flaky", "handler.py"), asyncFlaky)
	writeFile(t, filepath.Join(a.functions, "flaky", "function.yaml"), "mode: http\nminReplicas: 1\nmaxReplicas: 1\nconcurrency: 4\n")
	a.waitFor(t, "/invoke/worker", 180*time.Second, is200)
	a.waitFor(t, "/api/functions/flaky", 120*time.Second, func(code int, body string) bool {
		return code == http.StatusOK && strings.Contains(body, `"state":"ready"`)
	})

	t.Run("what fails synchronously is refused at submit", func(t *testing.T) {
		tests := []struct {
			name, path string
			header     map[string]string
			wantCode   int
			wantErr    string
		}{
			{name: "callback to the metadata address", path: "/async-function/worker",
				header: map[string]string{"X-Callback-Url": "http://169.254.169.254/latest/meta-data"}, wantCode: 400, wantErr: "callback_hosts"},
			{name: "callback to a host not on the list", path: "/async-function/worker",
				header: map[string]string{"X-Callback-Url": "http://localhost:1/x"}, wantCode: 400, wantErr: "callback_hosts"},
			{name: "callback that is no URL", path: "/async-function/worker",
				header: map[string]string{"X-Callback-Url": "javascript:alert(1)"}, wantCode: 400, wantErr: "callback url refused"},
			{name: "unknown function", path: "/async-function/nope", wantCode: 404, wantErr: "not found"},
			{name: "unknown function with Prefer", path: "/invoke/nope", header: map[string]string{"Prefer": "respond-async"}, wantCode: 404},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				code, id, body := a.submit(t, tt.path, "x", tt.header)
				if code != tt.wantCode || id != "" || !strings.Contains(body, tt.wantErr) {
					t.Errorf("got %d id %q %q, want %d mentioning %q", code, id, body, tt.wantCode, tt.wantErr)
				}
			})
		}
	})

	t.Run("a function that fails twice is retried and ends done", func(t *testing.T) {
		code, id, body := a.submit(t, "/async-function/flaky", "key-1", nil)
		if code != http.StatusAccepted || id == "" {
			t.Fatalf("submit: got %d %q", code, body)
		}
		r := a.waitCall(t, id, 60*time.Second, func(r async.Result) bool { return r.State == async.StateDone })
		if r.Attempts != 3 || r.StatusCode != 200 || r.Body != "ok after 3 tries" || r.Error != "" {
			t.Errorf("result: got %+v, want done after 3 attempts with the third answer", r)
		}
	})

	t.Run("a function that always fails ends dead-lettered", func(t *testing.T) {
		code, id, body := a.submit(t, "/async-function/flaky/always", "key-2", nil)
		if code != http.StatusAccepted {
			t.Fatalf("submit: got %d %q", code, body)
		}
		r := a.waitCall(t, id, 60*time.Second, func(r async.Result) bool { return r.State == async.StateDeadLettered })
		if r.Attempts != 4 || r.MaxAttempts != 4 || r.StatusCode != 503 || !strings.Contains(r.Error, "not yet: try 4") {
			t.Errorf("result: got %+v, want dead-lettered after 4 attempts with the last 503", r)
		}
		// The dead letter itself, read from the embedded server's port.
		nc, err := nats.Connect("nats://" + a.natsAddr(t))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		s, err := js.Stream(context.Background(), "FAAS_DEAD")
		if err != nil {
			t.Fatal(err)
		}
		m, err := s.GetLastMsgForSubject(context.Background(), "faas.dead.flaky")
		if err != nil || m.Header.Get("Nats-Msg-Id") != id || !strings.Contains(m.Header.Get("Faas-Error"), "503") {
			t.Errorf("dead letter: got %v (err %v), want call %s with its 503", m, err, id)
		}
		mets := a.metrics(t)
		if mets[`faasvm_async_dead_letters_total{function_name="flaky"}`] != 1 || mets[`faasvm_async_retries_total{function_name="flaky"}`] != 5 {
			t.Errorf("metrics: dead letters %v, retries %v; want 1 and 5 (2 + 3)",
				mets[`faasvm_async_dead_letters_total{function_name="flaky"}`], mets[`faasvm_async_retries_total{function_name="flaky"}`])
		}
	})

	t.Run("200 calls survive a SIGKILL of the appliance", func(t *testing.T) {
		const n = 200
		ids := make([]string, n)
		var wg sync.WaitGroup
		sem := make(chan struct{}, 16)
		for i := range n {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				path, header := "/async-function/worker", map[string]string{"X-Callback-Url": sink.url}
				if i%10 == 0 { // the other way in
					path, header["Prefer"] = "/invoke/worker", "respond-async"
				}
				code, id, body := a.submit(t, path, fmt.Sprintf("call-%d", i), header)
				if code != http.StatusAccepted || id == "" {
					t.Errorf("submit %d: got %d %q", i, code, body)
				}
				ids[i] = id
			}()
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		_, q := a.get(t, "/api/queue")
		t.Logf("all %d queued; /api/queue: %s", n, q)

		// Mid-way: some callbacks are in, most calls still wait.
		eventually(t, "the first 30 calls done", 120*time.Second, func() (bool, string) {
			return sink.distinct() >= 30, fmt.Sprintf("%d done", sink.distinct())
		})
		if err := a.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		_ = a.cmd.Wait()
		atKill := sink.distinct()
		if atKill >= n {
			t.Fatalf("all %d calls were done before the kill: the test proves nothing (make the worker slower)", n)
		}
		t.Logf("SIGKILL with %d of %d calls done", atKill, n)

		b := startAppliance(t, append(env, "FAAS_STATE_DIR="+a.stateDir, "FAAS_FUNCTIONS_DIR="+a.functions)...)
		b.stateDir, b.functions = a.stateDir, a.functions
		eventually(t, "every call done after the restart", 240*time.Second, func() (bool, string) {
			return sink.distinct() == n, fmt.Sprintf("%d of %d done", sink.distinct(), n)
		})

		sink.mu.Lock()
		defer sink.mu.Unlock()
		duplicates := 0
		for i, id := range ids {
			posts := sink.got[id]
			want := "200 " + workerAnswer(fmt.Sprintf("call-%d", i))
			for _, p := range posts {
				if p != want {
					t.Errorf("call %d (%s): callback %q, want %q", i, id, p, want)
				}
			}
			duplicates += len(posts) - 1
		}
		if len(sink.got) != n {
			t.Errorf("callbacks for %d call ids, want exactly the %d submitted", len(sink.got), n)
		}
		t.Logf("%d calls, %d callbacks, %d duplicates (at least once)", n, sink.n, duplicates)
		for i, id := range ids {
			code, r := b.callResult(t, id)
			if code != http.StatusOK || r.State != async.StateDone || r.StatusCode != 200 || r.Callback == nil || r.Callback.State != async.CallbackSent {
				t.Errorf("call %d: got %d %+v, want done with its callback sent", i, code, r)
			}
		}
	})
}

// TestAsyncExternalNATS runs the appliance against a separate nats-server
// process (FAAS_NATS_URL): calls are queued there and delivered.
func TestAsyncExternalNATS(t *testing.T) {
	url := natstest.Start(t)
	a := startAppliance(t, "FAAS_NATS_URL="+url)
	copyDir(t, "../../functions/echo", filepath.Join(a.functions, "echo"))
	a.waitFor(t, "/invoke/echo", 180*time.Second, is200)

	code, id, body := a.submit(t, "/async-function/echo/sub?q=1", "over nats", map[string]string{"X-Custom": "yes"})
	if code != http.StatusAccepted {
		t.Fatalf("submit: got %d %q", code, body)
	}
	r := a.waitCall(t, id, 60*time.Second, func(r async.Result) bool { return r.State == async.StateDone })
	var echoed struct {
		Method, Path, Query, Body string
		Headers                   map[string]string
	}
	if err := json.Unmarshal([]byte(r.Body), &echoed); err != nil {
		t.Fatalf("echo answer %q: %v", r.Body, err)
	}
	if echoed.Method != "POST" || echoed.Path != "/sub" || echoed.Query != "q=1" || echoed.Body != "over nats" ||
		echoed.Headers["x-custom"] != "yes" || echoed.Headers["x-call-id"] != id {
		t.Errorf("the function saw %+v", echoed)
	}

	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	s, err := js.Stream(context.Background(), "FAAS_CALLS")
	if err != nil {
		t.Fatalf("stream FAAS_CALLS on the external server: %v", err)
	}
	if _, err := s.Consumer(context.Background(), "calls-echo"); err != nil {
		t.Errorf("consumer calls-echo on the external server: %v", err)
	}
	if _, err := os.Stat(filepath.Join(a.stateDir, "nats")); !os.IsNotExist(err) {
		t.Errorf("an embedded store exists under the state dir with FAAS_NATS_URL set (err %v)", err)
	}
}
