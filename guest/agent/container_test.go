package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/faasvm/appliance/guest/agent/server"
	"github.com/faasvm/appliance/guest/protocol"
)

// containerUnderTest is container mode's two listeners around a real agent
// server running an exec-mode bash handler.
type containerUnderTest struct {
	data, control string // base URLs
	srv           *server.Server
}

func startContainer(t *testing.T, script string, maxBody int64) *containerUnderTest {
	t.Helper()
	code := t.TempDir()
	if err := os.WriteFile(filepath.Join(code, "handler.sh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(t.TempDir(), "function.json")
	if err := os.WriteFile(cfgPath, []byte(`{"name":"fn","mode":"exec","runtime":"bash","handler":"handler.sh","command":["bash","handler.sh"],"timeout":"5s"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := readContainerConfig(cfgPath)
	if err != nil {
		t.Fatalf("readContainerConfig: %v", err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := server.New(cfg, server.Options{CodeDir: code, RunDir: t.TempDir(), Env: containerEnv(os.Environ(), nil), Logger: log, Console: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		sctx, done := context.WithTimeout(context.Background(), 5*time.Second)
		defer done()
		_ = srv.Stop(sctx)
	})
	srv.Start(ctx)
	c := newContainer(cfg, srv, srv.Control(), maxBody)
	data := httptest.NewServer(http.HandlerFunc(c.serveData))
	control := httptest.NewServer(http.HandlerFunc(c.serveControl))
	t.Cleanup(data.Close)
	t.Cleanup(control.Close)
	return &containerUnderTest{data: data.URL, control: control.URL, srv: srv}
}

func do(t *testing.T, method, url string, body string, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestContainerListeners(t *testing.T) {
	c := startContainer(t, `echo "path=$Http_Path method=$Http_Method secret=${Http_X_Faas_Secret:-none} body=$(cat)"`, 64)

	tests := []struct {
		name     string
		method   string
		url      string
		body     string
		hdr      map[string]string
		wantCode int
		want     string // substring of the body
	}{
		{name: "data reaches the function", method: "POST", url: c.data + "/orders/1", body: "hi",
			wantCode: 200, want: "path=/orders/1 method=POST secret=none body=hi"},
		{name: "a client's secret header is dropped", method: "GET", url: c.data + "/", hdr: map[string]string{protocol.SecretHeader: "guess"},
			wantCode: 200, want: "secret=none"},
		{name: "/health on the data port is the function's", method: "GET", url: c.data + "/health",
			wantCode: 200, want: "path=/health"},
		{name: "poweroff paths are the function's", method: "POST", url: c.data + "/poweroff",
			wantCode: 200, want: "path=/poweroff method=POST"},
		{name: "so are the old reserved ones", method: "POST", url: c.data + "/_/poweroff",
			wantCode: 200, want: "path=/_/poweroff"},
		{name: "a client's control header is dropped", method: "GET", url: c.data + "/", hdr: map[string]string{protocol.ControlHeader: "guess"},
			wantCode: 200, want: "secret=none"},
		{name: "body over the limit", method: "POST", url: c.data + "/", body: strings.Repeat("x", 65),
			wantCode: 413, want: "over the 64-byte limit"},
		{name: "health on the control port", method: "GET", url: c.control + "/health",
			wantCode: 200, want: `"status":"ready"`},
		{name: "control takes no POST", method: "POST", url: c.control + "/health",
			wantCode: 405, want: "only answers GET"},
		{name: "control has no poweroff", method: "GET", url: c.control + "/poweroff",
			wantCode: 404, want: "serves /health and /metrics"},
		{name: "control does not reach the function", method: "GET", url: c.control + "/orders/1",
			wantCode: 404, want: "serves /health and /metrics"},
		{name: "control paths are exact", method: "GET", url: c.control + "/%68ealth",
			wantCode: 404, want: "serves /health and /metrics"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := do(t, tt.method, tt.url, tt.body, tt.hdr)
			if code != tt.wantCode || !strings.Contains(body, tt.want) {
				t.Errorf("got %d %q, want %d containing %q", code, body, tt.wantCode, tt.want)
			}
		})
	}

	// After all that the handler still serves (nothing stopped it).
	if code, body := do(t, "GET", c.data+"/again", "", nil); code != 200 || !strings.Contains(body, "path=/again") {
		t.Errorf("after the control requests: got %d %q, want 200 from the function", code, body)
	}
	_, metrics := do(t, "GET", c.control+"/metrics", "", nil)
	for _, want := range []string{
		`gateway_function_invocation_started{function_name="fn"} 8`,
		`gateway_function_invocation_total{code="200",function_name="fn"} 7`,
		`gateway_function_invocation_total{code="413",function_name="fn"} 1`,
		`gateway_functions_seconds_count{function_name="fn"} 8`,
		`gateway_functions_seconds_bucket{function_name="fn",le="+Inf"} 8`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics: missing %q in\n%s", want, metrics)
		}
	}
}

func TestContainerEnv(t *testing.T) {
	got := containerEnv([]string{"PATH=/bin", "GREETING=from-platform"}, map[string]string{"GREETING": "from-image", "LEVEL": "3"})
	want := []string{"PATH=/bin", "GREETING=from-platform", "LANG=C.UTF-8", "LEVEL=3"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestParseContainerFlags(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		wantListen string
		wantErr    string
	}{
		{name: "defaults", wantListen: ":8080"},
		{name: "knative's PORT", env: map[string]string{"PORT": "9000"}, wantListen: ":9000"},
		{name: "flag beats PORT", args: []string{"-listen", ":7000"}, env: map[string]string{"PORT": "9000"}, wantListen: ":7000"},
		{name: "same port twice", args: []string{"-listen", ":8081"}, wantErr: "data and control both on port 8081"},
		{name: "PORT on the control port", env: map[string]string{"PORT": "8081"}, wantErr: "data and control both on port 8081"},
		{name: "bad port", args: []string{"-listen", ":x"}, wantErr: `data port "x" is not 1-65535`},
		{name: "extra argument", args: []string{"python3"}, wantErr: `unexpected argument "python3"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := parseContainerFlags(tt.args, env(tt.env))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || f.listen != tt.wantListen || f.control != ":8081" || f.config != containerConfigPath {
				t.Errorf("got %+v, %v; want listen %s, control :8081, config %s", f, err, tt.wantListen, containerConfigPath)
			}
		})
	}
}

func TestReadContainerConfig(t *testing.T) {
	tests := []struct {
		name    string
		json    string
		wantErr string
	}{
		{name: "valid", json: `{"name":"fn","mode":"http","runtime":"python3","handler":"handler.py","timeout":"30s"}`},
		{name: "unknown field", json: `{"name":"fn","mode":"http","handler":"h.py","timeout":"30s","extra":1}`, wantErr: `unknown field "extra"`},
		{name: "no timeout", json: `{"name":"fn","mode":"http","handler":"h.py"}`, wantErr: "timeout must be positive"},
		{name: "exec without command", json: `{"name":"fn","mode":"exec","timeout":"1s"}`, wantErr: "exec mode needs a command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "c.json")
			if err := os.WriteFile(p, []byte(tt.json), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg, err := readContainerConfig(p)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.Secret) != 64 || len(cfg.ControlSecret) != 64 || cfg.Secret == cfg.ControlSecret {
				t.Errorf("secrets: got %d and %d hex digits, equal %v; want two fresh, different 64", len(cfg.Secret), len(cfg.ControlSecret), cfg.Secret == cfg.ControlSecret)
			}
			again, _ := readContainerConfig(p)
			if again.Secret == cfg.Secret {
				t.Errorf("two reads gave the same secret; want a new one each start")
			}
		})
	}
}

func TestRunHealth(t *testing.T) {
	tests := []struct {
		name    string
		code    int
		body    string
		live    bool
		wantErr bool
	}{
		{name: "ready", code: 200, body: `{"status":"ready"}`},
		{name: "starting", code: 503, body: `{"status":"starting"}`, wantErr: true},
		{name: "starting is alive", code: 503, body: `{"status":"starting"}`, live: true},
		{name: "failed is not alive", code: 503, body: `{"status":"failed","error":"x"}`, live: true, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != containerHealthPath {
					http.NotFound(w, r)
					return
				}
				w.WriteHeader(tt.code)
				io.WriteString(w, tt.body)
			}))
			defer srv.Close()
			args := []string{"-addr", strings.TrimPrefix(srv.URL, "http://")}
			if tt.live {
				args = append(args, "-live")
			}
			var out bytes.Buffer
			err := runHealth(args, &out)
			if (err != nil) != tt.wantErr {
				t.Errorf("got %v, want error %v", err, tt.wantErr)
			}
			if !strings.Contains(out.String(), tt.body) {
				t.Errorf("output: got %q, want the answer %q", out.String(), tt.body)
			}
		})
	}
	t.Run("nothing listens", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		addr := strings.TrimPrefix(srv.URL, "http://")
		srv.Close()
		if err := runHealth([]string{"-addr", addr}, io.Discard); err == nil {
			t.Errorf("got nil, want an error")
		}
	})
}
