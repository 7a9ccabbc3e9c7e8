package bootstrap

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// These tests run the bootstraps with the host's python3 and node against
// the handlers in testdata, written to the OpenFaaS and Lambda contracts.
// The real-VM tests (internal/controller TestContractsRealVM) run the same
// folders in guests.

type contractCase struct {
	name, method, path, ctype, body string
	wantStatus                      int
	wantHeader                      map[string]string // lower-cased name: substring of the value
	wantJSON                        map[string]any    // fields of a JSON body
	wantBody                        string            // exact body when set
}

func TestContracts(t *testing.T) {
	tests := []struct {
		runtime, template, function, dir, handler string
		cases                                     []contractCase
	}{
		{runtime: "python3", template: "openfaas-http", dir: "py-http", handler: "handler.py", cases: []contractCase{
			{name: "dict result", method: "POST", path: "/p?name=a&name=b", ctype: "text/plain", body: "hi",
				wantStatus: 201, wantHeader: map[string]string{"x-handler": "python3-http", "content-type": "application/json"},
				wantJSON: map[string]any{"method": "POST", "path": "/p", "name": "a", "all": []any{"a", "b"}, "body": "hi", "bodyType": "bytes", "ctype": "text/plain", "hostname": true}},
			{name: "status and text", method: "GET", path: "/teapot", wantStatus: 418, wantHeader: map[string]string{"content-type": "text/plain"}, wantBody: "short and stout"},
			{name: "none is an empty 200", method: "GET", path: "/none", wantStatus: 200, wantBody: ""},
		}},
		{runtime: "python3", template: "", dir: "py-http", handler: "handler.py", cases: []contractCase{
			{name: "two-argument handle is python3-http without a template", method: "GET", path: "/teapot", wantStatus: 418, wantBody: "short and stout"},
		}},
		{runtime: "node", template: "openfaas-node", dir: "node20", handler: "handler.js", cases: []contractCase{
			{name: "json body parsed", method: "POST", path: "/x?a=1&a=2&b=3", ctype: "application/json", body: `{"k":[1,2]}`,
				wantStatus: 202, wantHeader: map[string]string{"x-handler": "node20", "content-type": "application/json"},
				wantJSON: map[string]any{"method": "POST", "path": "/x", "query": map[string]any{"a": []any{"1", "2"}, "b": "3"}, "body": map[string]any{"k": []any{1.0, 2.0}}, "bodyType": "object"}},
			{name: "text body as string", method: "PUT", path: "/", ctype: "text/plain", body: "words",
				wantStatus: 202, wantJSON: map[string]any{"body": "words", "bodyType": "string"}},
			{name: "no content type is text", method: "POST", path: "/", body: "raw",
				wantStatus: 202, wantJSON: map[string]any{"body": "raw", "bodyType": "string"}},
			{name: "urlencoded parsed", method: "POST", path: "/", ctype: "application/x-www-form-urlencoded", body: "a=1&b=two",
				wantStatus: 202, wantJSON: map[string]any{"body": map[string]any{"a": "1", "b": "two"}}},
			{name: "other types give {}", method: "POST", path: "/", ctype: "application/octet-stream", body: "\x00\x01",
				wantStatus: 202, wantJSON: map[string]any{"body": map[string]any{}, "bodyType": "object"}},
			{name: "bad json is 400", method: "POST", path: "/", ctype: "application/json", body: "{", wantStatus: 400},
			{name: "string result", method: "GET", path: "/text", wantStatus: 200, wantBody: "plain GET"},
			{name: "fail keeps the status", method: "GET", path: "/fail", wantStatus: 503, wantBody: "out of coffee"},
		}},
		{runtime: "python3", template: "lambda", function: "lambda_handler", dir: "py-lambda", handler: "lambda_function.py", cases: []contractCase{
			{name: "payload 2.0", method: "POST", path: "/orders/7?x=1&x=2", ctype: "text/plain", body: "order",
				wantStatus: 200, wantHeader: map[string]string{"x-handler": "lambda-python", "set-cookie": "seen=1"},
				wantJSON: map[string]any{"version": "2.0", "method": "POST", "rawPath": "/orders/7", "query": map[string]any{"x": "1,2"},
					"body": "order", "b64": false, "requestId": "req-123", "function": "fn", "memory": 256.0}},
			{name: "binary body is base64", method: "POST", path: "/", body: "\xff\xfe", wantStatus: 200, wantJSON: map[string]any{"body": "fffe", "b64": true}},
			{name: "no statusCode is a JSON 200", method: "GET", path: "/plain", wantStatus: 200,
				wantHeader: map[string]string{"content-type": "application/json"}, wantJSON: map[string]any{"hello": "lambda"}},
		}},
		{runtime: "python3", template: "lambda", function: "lambda_handler", dir: "py-async", handler: "lambda_function.py", cases: []contractCase{
			{name: "async handler awaited", method: "GET", path: "/twice", wantStatus: 200,
				wantHeader: map[string]string{"x-handler": "lambda-python-async"}, wantBody: "awaited 42 /twice"},
		}},
		{runtime: "node", template: "lambda", function: "handler", dir: "node-lambda", handler: "index.js", cases: []contractCase{
			{name: "payload 2.0", method: "DELETE", path: "/things/1?q=z", wantStatus: 200, wantHeader: map[string]string{"x-handler": "lambda-node"},
				wantJSON: map[string]any{"version": "2.0", "method": "DELETE", "rawPath": "/things/1", "query": map[string]any{"q": "z"},
					"requestId": "req-123", "function": "fn", "memory": "256"}},
			{name: "base64 result decoded", method: "GET", path: "/binary", wantStatus: 200, wantBody: "\x00\x01\x02"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.dir+"/"+cmpOr(tt.template, "detected"), func(t *testing.T) {
			url := startBootstrap(t, tt.runtime, tt.template, tt.function, tt.dir, tt.handler)
			for _, c := range tt.cases {
				t.Run(c.name, func(t *testing.T) {
					req, err := http.NewRequest(c.method, url+c.path, strings.NewReader(c.body))
					if err != nil {
						t.Fatal(err)
					}
					if c.ctype != "" {
						req.Header.Set("Content-Type", c.ctype)
					}
					req.Header.Set("X-Request-Id", "req-123")
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != c.wantStatus {
						t.Fatalf("status: got %d (%s), want %d", resp.StatusCode, body, c.wantStatus)
					}
					for k, v := range c.wantHeader {
						if got := strings.Join(resp.Header.Values(k), "; "); !strings.Contains(got, v) {
							t.Errorf("header %s: got %q, want it to contain %q", k, got, v)
						}
					}
					if c.wantBody != "" || (c.wantJSON == nil && c.wantBody == "") {
						if c.wantJSON == nil && string(body) != c.wantBody && c.wantStatus != 400 {
							t.Errorf("body: got %q, want %q", body, c.wantBody)
						}
					}
					if c.wantJSON != nil {
						var got map[string]any
						if err := json.Unmarshal(body, &got); err != nil {
							t.Fatalf("body %q: %v", body, err)
						}
						for k, want := range c.wantJSON {
							if g, _ := json.Marshal(got[k]); string(g) != mustJSON(want) {
								t.Errorf("body field %s: got %s, want %s (body %s)", k, g, mustJSON(want), body)
							}
						}
					}
				})
			}
		})
	}
}

func TestLambdaRemainingTime(t *testing.T) {
	for _, tt := range []struct{ runtime, dir, handler, function string }{
		{"python3", "py-lambda", "lambda_function.py", "lambda_handler"},
		{"node", "node-lambda", "index.js", "handler"},
	} {
		t.Run(tt.runtime, func(t *testing.T) {
			url := startBootstrap(t, tt.runtime, "lambda", tt.function, tt.dir, tt.handler)
			resp, err := http.Get(url + "/")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var got struct {
				Remaining float64 `json:"remaining"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			// FAAS_TIMEOUT_MS is 5000: the handler runs well within it.
			if got.Remaining <= 1000 || got.Remaining > 5000 {
				t.Errorf("remaining time: got %v ms, want between 1000 and 5000", got.Remaining)
			}
		})
	}
}

func TestClassicRunners(t *testing.T) {
	tests := []struct {
		interp, runner, dir, handler, in, want string
	}{
		{"python3", ClassicPython, "py-classic", "handler.py", "ping", "classic python got: ping\n"},
		{"node", ClassicNode, "node-classic", "handler.js", "pong", `{"classic":"node","got":"pong"}` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.dir, func(t *testing.T) {
			src, err := ClassicSource(tt.runner)
			if err != nil {
				t.Fatal(err)
			}
			run := t.TempDir()
			p := filepath.Join(run, tt.runner)
			if err := os.WriteFile(p, src, 0o644); err != nil {
				t.Fatal(err)
			}
			code, _ := filepath.Abs(filepath.Join("testdata", tt.dir))
			cmd := exec.Command(interp(t, tt.interp), p, tt.handler)
			cmd.Dir = code
			cmd.Stdin = strings.NewReader(tt.in)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%v: %s", err, stderr.String())
			}
			if string(out) != tt.want {
				t.Errorf("stdout: got %q, want %q", out, tt.want)
			}
		})
	}
	if _, err := ClassicSource("bootstrap.py"); err == nil {
		t.Error("ClassicSource(bootstrap.py): got no error, want one")
	}
}

func interp(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s is not installed on this host (scripts/prepare.sh installs it): %v", name, err)
	}
	return p
}

// startBootstrap runs runtime's bootstrap over testdata/dir and returns
// its base URL once it listens.
func startBootstrap(t *testing.T, runtime, template, function, dir, handler string) string {
	t.Helper()
	b, err := For(runtime)
	if err != nil {
		t.Fatal(err)
	}
	src, err := b.Source()
	if err != nil {
		t.Fatal(err)
	}
	run := t.TempDir()
	script := filepath.Join(run, b.File)
	if err := os.WriteFile(script, src, 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	code, _ := filepath.Abs(filepath.Join("testdata", dir))
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, interp(t, b.Interpreter), append(b.Flags, script)...)
	cmd.Dir = code
	cmd.Env = append(os.Environ(), b.Env...)
	cmd.Env = append(cmd.Env, "FAAS_BOOTSTRAP_PORT="+strconv.Itoa(port), "FAAS_HANDLER="+handler, "FAAS_CODE_DIR="+code,
		"FAAS_TEMPLATE="+template, "FAAS_FUNCTION="+function, "FAAS_FUNCTION_NAME=fn", "FAAS_MEMORY_MB=256", "FAAS_TIMEOUT_MS=5000")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("bootstrap output:\n%s", out.String())
		}
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return "http://" + addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("bootstrap did not listen on %s: %s", addr, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
