package cli

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/faasvm/appliance/internal/upload"
)

// fakeAppliance takes uploads like the appliance's API: it extracts them
// with the upload package and reports the function ready after two polls.
type fakeAppliance struct {
	t       *testing.T
	mu      sync.Mutex
	got     string // extracted folder
	polls   int
	auth    string
	refuse  bool
	version string
}

func (f *fakeAppliance) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.auth = r.Header.Get("Authorization")
	switch {
	case r.Method == http.MethodPut && r.URL.Path == "/api/functions/myfn":
		if f.refuse {
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":"archive entry \"x\": FIFOs are not allowed","entry":"x"}`)
			return
		}
		dir := f.t.TempDir()
		src := filepath.Join(dir, "a")
		b, _ := io.ReadAll(r.Body)
		os.WriteFile(src, b, 0o600)
		f.got = filepath.Join(dir, "x")
		os.Mkdir(f.got, 0o700)
		if err := upload.Extract(context.Background(), src, f.got, upload.Limits{MaxSize: 1 << 20}); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":"`+err.Error()+`"}`)
			return
		}
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"name":"myfn","created":true,"version":"abc"}`)
	case r.Method == http.MethodGet && r.URL.Path == "/api/functions/myfn":
		f.polls++
		if f.polls < 2 {
			io.WriteString(w, `{"name":"myfn","state":"deploying"}`)
			return
		}
		io.WriteString(w, `{"name":"myfn","state":"ready","version":"abc"}`)
	default:
		http.NotFound(w, r)
	}
}

func TestDeploy(t *testing.T) {
	folder := filepath.Join(t.TempDir(), "myfn")
	for name, body := range map[string]string{"handler.py": "print(1)\n", "lib/x.py": "X=1\n", ".git/HEAD": "ref"} {
		os.MkdirAll(filepath.Dir(filepath.Join(folder, name)), 0o755)
		os.WriteFile(filepath.Join(folder, name), []byte(body), 0o644)
	}
	os.Symlink("lib/x.py", filepath.Join(folder, "link.py"))

	tests := []struct {
		name     string
		refuse   bool
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{name: "deploys and waits", wantCode: 0, wantOut: "serves at", wantErr: "myfn: deploying"},
		{name: "refused", refuse: true, wantCode: 1, wantErr: "FIFOs are not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := &fakeAppliance{t: t, refuse: tt.refuse}
			srv := httptest.NewServer(fake)
			defer srv.Close()
			var stdout, stderr bytes.Buffer
			env := &Env{Stdout: &stdout, Stderr: &stderr, Getenv: func(k string) string {
				return map[string]string{"FAAS_URL": srv.URL, "FAAS_API_TOKEN": "tok"}[k]
			}}
			code := Run(context.Background(), []string{"deploy", folder}, env)
			if code != tt.wantCode {
				t.Fatalf("got exit %d, want %d; stderr %s", code, tt.wantCode, stderr.String())
			}
			if !strings.Contains(stdout.String(), tt.wantOut) {
				t.Errorf("stdout: got %q, want it to contain %q", stdout.String(), tt.wantOut)
			}
			if !strings.Contains(stderr.String(), tt.wantErr) {
				t.Errorf("stderr: got %q, want it to contain %q", stderr.String(), tt.wantErr)
			}
			if fake.auth != "Bearer tok" {
				t.Errorf("got Authorization %q, want Bearer tok", fake.auth)
			}
			if tt.refuse {
				return
			}
			if b, err := os.ReadFile(filepath.Join(fake.got, "link.py")); err != nil || string(b) != "X=1\n" {
				t.Errorf("link.py in the upload: got %q, %v", b, err)
			}
			if _, err := os.Stat(filepath.Join(fake.got, ".git")); err == nil {
				t.Errorf(".git was uploaded")
			}
		})
	}
}

func TestDeployUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	env := &Env{Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }}
	if code := Run(context.Background(), []string{"deploy"}, env); code != 2 {
		t.Errorf("no folder: got exit %d, want 2", code)
	}
	if code := Run(context.Background(), []string{"deploy", filepath.Join(t.TempDir(), "missing")}, env); code != 1 {
		t.Errorf("missing folder: got exit %d, want 1", code)
	}
}
