package main_test

// Real-VM tests of what function developers use every day: request ids,
// the function's own logs (followed live), secrets, the OpenFaaS path and
// the faasvm CLI, against one appliance and two VMs.

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/faasvm/appliance/internal/controller"
)

const devxToken = "devx-test-token"

// devxHandler is an http-mode function reading its secret. It prints a
// line per request (never the secret) and answers with what it found.
const devxHandler = `import os, stat

def handle(req):
    rid = req["headers"].get("x-request-id", "")
    print("hello from request", rid, flush=True)
    p = "/var/openfaas/secrets/db-password"
    try:
        with open(p) as f:
            value = f.read()
        mode = oct(stat.S_IMODE(os.stat(p).st_mode))
    except OSError as e:
        value, mode = "", str(e)
    return {"path": req.get("path"), "requestId": rid, "secret": value, "mode": mode}
`

// devxExec is an exec-mode function: its stderr is its log.
const devxExec = `import os, sys
print("exec stderr for", os.environ.get("Http_X_Request_Id", ""), file=sys.stderr)
print("exec says hi")
`

func (a *appliance) apiGet(t *testing.T, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, a.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+devxToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (a *appliance) apiStatus(t *testing.T, name string) controller.Status {
	t.Helper()
	_, body := a.apiGet(t, "/api/functions/"+name)
	var s controller.Status
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("status of %s: %v (%q)", name, err, body)
	}
	return s
}

type devxAnswer struct {
	Path, RequestID, Secret, Mode string
}

func (a *appliance) invokeDevx(t *testing.T, path, requestID string) (devxAnswer, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, a.base+path, nil)
	if requestID != "" {
		req.Header.Set("X-Request-Id", requestID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	var ans devxAnswer
	if err := json.Unmarshal(b, &ans); err != nil {
		t.Fatalf("GET %s: %v (%q)", path, err, b)
	}
	return ans, resp.Header
}

func TestDevX(t *testing.T) {
	secrets := t.TempDir()
	const secretValue = "s3cr3t-value-one"
	writeFile(t, filepath.Join(secrets, "db-password"), secretValue)
	a := startAppliance(t, "FAAS_SECRETS_DIR="+secrets, "FAAS_API_TOKEN="+devxToken)

	writeFile(t, filepath.Join(a.functions, "devx", "handler.py"), devxHandler)
	writeFile(t, filepath.Join(a.functions, "devx", "function.yaml"), "mode: http\nsecrets: [db-password]\n")
	writeFile(t, filepath.Join(a.functions, "devx-exec", "handler.py"), devxExec)
	writeFile(t, filepath.Join(a.functions, "devx-missing", "handler.py"), "print('never runs')\n")
	writeFile(t, filepath.Join(a.functions, "devx-missing", "function.yaml"), "secrets: [no-such-secret]\n")
	a.waitFor(t, "/invoke/devx", 180*time.Second, is200)
	a.waitFor(t, "/invoke/devx-exec", 180*time.Second, is200)

	t.Run("logs follow sees the request's line with its id", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, a.base+"/api/functions/devx/logs?follow=1&lines=1", nil)
		req.Header.Set("Authorization", "Bearer "+devxToken)
		req.Header.Set("Accept", "text/event-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("follow: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		ans, h := a.invokeDevx(t, "/invoke/devx", "devx-follow-1")
		if ans.RequestID != "devx-follow-1" || h.Get("X-Request-Id") != "devx-follow-1" {
			t.Errorf("request id: function saw %q, answer header %q; want devx-follow-1 both", ans.RequestID, h.Get("X-Request-Id"))
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var e struct{ Instance, Stream, RequestID, Line string }
			if err := json.Unmarshal([]byte(data), &e); err != nil {
				t.Fatalf("event %q: %v", data, err)
			}
			if strings.Contains(e.Line, "devx-follow-1") {
				if e.RequestID != "devx-follow-1" || e.Stream != "stdout" || e.Instance == "" {
					t.Errorf("line %+v, want stdout tagged devx-follow-1 with an instance", e)
				}
				cancel() // leaving ends the stream cleanly
				return
			}
		}
		t.Fatalf("the follow stream ended without the request's line: %v", sc.Err())
	})

	t.Run("a generated request id reaches the exec-mode log", func(t *testing.T) {
		resp, err := http.Get(a.base + "/invoke/devx-exec")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		id := resp.Header.Get("X-Request-Id")
		if len(id) != 36 {
			t.Fatalf("X-Request-Id %q, want a generated uuid", id)
		}
		_, body := a.waitForAPI(t, "/api/functions/devx-exec/logs?format=json", 20*time.Second, func(_ int, b string) bool {
			return strings.Contains(b, "exec stderr for "+id)
		})
		for _, line := range strings.Split(strings.TrimSpace(body), "\n") {
			var e struct{ Stream, RequestID, Line string }
			_ = json.Unmarshal([]byte(line), &e)
			if strings.Contains(e.Line, id) && (e.RequestID != id || e.Stream != "stderr") {
				t.Errorf("line %+v, want stderr tagged %s", e, id)
			}
			if strings.Contains(e.Line, "exec says hi") {
				t.Errorf("stdout (the answer) reached the log: %+v", e)
			}
		}
		if !strings.Contains(a.logText(), `request_id=`+id) {
			t.Errorf("the access log lacks request_id=%s", id)
		}
	})

	t.Run("the OpenFaaS path serves like invoke", func(t *testing.T) {
		for path, want := range map[string]string{"/function/devx": "/", "/function/devx/a/b": "/a/b", "/function/devx/health": "/health"} {
			if ans, _ := a.invokeDevx(t, path, ""); ans.Path != want {
				t.Errorf("%s: function saw path %q, want %q", path, ans.Path, want)
			}
		}
		if code, _ := a.get(t, "/function/no-such-fn"); code != 404 {
			t.Errorf("/function/no-such-fn: %d, want 404", code)
		}
	})

	t.Run("the secret is a 0400 file, never in the API or logs", func(t *testing.T) {
		ans, _ := a.invokeDevx(t, "/invoke/devx", "")
		if ans.Secret != secretValue || ans.Mode != "0o400" {
			t.Errorf("secret %q mode %q, want %q 0o400", ans.Secret, ans.Mode, secretValue)
		}
		for _, p := range []string{"/api/functions", "/api/functions/devx", "/api/functions/devx/logs?lines=5000", "/api/functions/devx/console?lines=5000"} {
			if _, body := a.apiGet(t, p); strings.Contains(body, secretValue) {
				t.Errorf("%s shows the secret's value", p)
			}
		}
		if strings.Contains(a.logText(), secretValue) {
			t.Error("the appliance log shows the secret's value")
		}
		s := a.apiStatus(t, "devx-missing")
		if s.State != controller.StateInvalid || !strings.Contains(s.LastError, "no-such-secret") {
			t.Errorf("missing secret: state %q reason %q, want invalid naming no-such-secret", s.State, s.LastError)
		}
	})

	t.Run("changing the secret redeploys; logs survive the old VM", func(t *testing.T) {
		before := a.apiStatus(t, "devx")
		writeFile(t, filepath.Join(secrets, "db-password"), "s3cr3t-value-two")
		deadline := time.Now().Add(120 * time.Second)
		for {
			if ans, _ := a.invokeDevx(t, "/invoke/devx", ""); ans.Secret == "s3cr3t-value-two" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the function still reads the old secret 120s after the change")
			}
			time.Sleep(500 * time.Millisecond)
		}
		after := a.apiStatus(t, "devx")
		if after.Version == before.Version || after.VMID == before.VMID {
			t.Errorf("version %s→%s, vm %s→%s: want both new", before.Version, after.Version, before.VMID, after.VMID)
		}
		_, body := a.apiGet(t, "/api/functions/devx/logs?instance="+before.VMID)
		if !strings.Contains(body, "devx-follow-1") {
			t.Errorf("the replaced VM's lines are gone: %q", body)
		}
	})

	t.Run("the CLI against the live appliance", func(t *testing.T) {
		bin := filepath.Join(t.TempDir(), "faasvm")
		if out, err := exec.Command("go", "build", "-o", bin, "../faasvm").CombinedOutput(); err != nil {
			t.Fatalf("building faasvm: %v\n%s", err, out)
		}
		cli := func(args ...string) (string, string, error) {
			cmd := exec.Command(bin, args...)
			cmd.Env = append(os.Environ(), "FAAS_URL="+a.base, "FAAS_API_TOKEN="+devxToken)
			var out, errOut strings.Builder
			cmd.Stdout, cmd.Stderr = &out, &errOut
			err := cmd.Run()
			return out.String(), errOut.String(), err
		}
		if out, errOut, err := cli("ls"); err != nil || !strings.Contains(out, "devx-exec") || !strings.Contains(out, "devx-missing  invalid") {
			t.Errorf("ls: %v %q %q", err, out, errOut)
		}
		if out, _, err := cli("status", "devx"); err != nil || !strings.Contains(out, "state:       ready") {
			t.Errorf("status: %v %q", err, out)
		}
		if _, errOut, err := cli("status", "devx-missing"); err == nil || !strings.Contains(errOut, "no-such-secret") {
			t.Errorf("status of an invalid function: %v %q, want exit 1 naming the secret", err, errOut)
		}
		payload := filepath.Join(t.TempDir(), "body.txt")
		writeFile(t, payload, "from a file")
		out, errOut, err := cli("invoke", "devx-exec", "-d", "@"+payload, "-H", "X-Request-Id:cli-req-1")
		if err != nil || out != "exec says hi\n" || !strings.Contains(errOut, "request id: cli-req-1") {
			t.Errorf("invoke: %v %q %q", err, out, errOut)
		}
		if out, _, err := cli("logs", "devx-exec"); err != nil || !strings.Contains(out, "[cli-req-1] exec stderr for cli-req-1") {
			t.Errorf("logs: %v %q", err, out)
		}
		if _, errOut, err := cli("invoke", "no-such-fn"); err == nil || !strings.Contains(errOut, "404") {
			t.Errorf("invoke of a missing function: %v %q", err, errOut)
		}
		// logs -f prints a new line, then is interrupted.
		cmd := exec.Command(bin, "logs", "-f", "-n", "1", "devx-exec")
		cmd.Env = append(os.Environ(), "FAAS_URL="+a.base, "FAAS_API_TOKEN="+devxToken)
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
		time.Sleep(300 * time.Millisecond) // let it connect; a missed line would show up in the backlog anyway
		if _, _, err := cli("invoke", "devx-exec", "-H", "X-Request-Id:cli-follow-2"); err != nil {
			t.Fatal(err)
		}
		found := make(chan bool, 1)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				if strings.Contains(sc.Text(), "[cli-follow-2]") {
					found <- true
					return
				}
			}
			found <- false
		}()
		select {
		case ok := <-found:
			if !ok {
				t.Error("logs -f ended without the new line")
			}
		case <-time.After(30 * time.Second):
			t.Error("logs -f did not print the new line within 30s")
		}
		_ = cmd.Process.Signal(os.Interrupt)
	})
}

func (a *appliance) logText() string {
	a.logMu.Lock()
	defer a.logMu.Unlock()
	return a.log.String()
}

func (a *appliance) waitForAPI(t *testing.T, path string, bound time.Duration, cond func(int, string) bool) (int, string) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		code, body := a.apiGet(t, path)
		if cond(code, body) {
			return code, body
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: condition not met within %s; last %d %q", path, bound, code, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
