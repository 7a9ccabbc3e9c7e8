package gateway

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/faasvm/appliance/internal/upload"
)

// testTarGz packs name → content pairs (a "->" prefix makes a symlink).
func testTarGz(t *testing.T, files ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for i := 0; i+1 < len(files); i += 2 {
		name, body := files[i], files[i+1]
		h := &tar.Header{Name: name, Mode: 0o644, Typeflag: tar.TypeReg, Size: int64(len(body))}
		if target, ok := strings.CutPrefix(body, "->"); ok {
			h.Typeflag, h.Linkname, h.Size = tar.TypeSymlink, target, 0
			body = ""
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func uploadGateway(t *testing.T, token string, uploadsOn bool) (*httptest.Server, *upload.Store, []string) {
	t.Helper()
	var changed []string
	store := &upload.Store{
		Dir: filepath.Join(t.TempDir(), "uploads"), FunctionsDir: t.TempDir(),
		Limits: upload.Limits{MaxSize: 1 << 20, MaxFiles: 10},
		Validate: func(dir string) (string, error) {
			if _, err := os.Stat(filepath.Join(dir, "handler.py")); err != nil {
				return "", errors.New("no handler.py")
			}
			return "v1", nil
		},
		Changed: func(name string) { changed = append(changed, name) },
	}
	if err := store.Prepare(); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(store.FunctionsDir, "mounted"), 0o755); err != nil {
		t.Fatal(err)
	}
	opts := Options{APIToken: token, MaxUpload: 1 << 20}
	if uploadsOn {
		opts.Uploads = store
	}
	srv := httptest.NewServer(New(opts, &fakeFunctions{}, nil).Handler())
	t.Cleanup(srv.Close)
	return srv, store, changed
}

func do(t *testing.T, method, url, token string, body []byte) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func TestUploadAPIStatuses(t *testing.T) {
	srv, store, _ := uploadGateway(t, "tok", true)
	good := testTarGz(t, "handler.py", "print(1)\n")
	source := func(name, runtime, mode, code string) []byte {
		b, _ := json.Marshal(upload.Source{Name: name, Runtime: runtime, Mode: mode, Code: code})
		return b
	}
	tests := []struct {
		name, method, path, token string
		body                      []byte
		want                      int
		wantInError               string
		wantEntry                 string
	}{
		{name: "no token", method: http.MethodPut, path: "/api/functions/a", body: good, want: 401},
		{name: "wrong token", method: http.MethodPut, path: "/api/functions/a", token: "nope", body: good, want: 401},
		{name: "bad name", method: http.MethodPut, path: "/api/functions/Bad_Name", token: "tok", body: good, want: 400, wantInError: "not a valid function name"},
		{name: "not an archive", method: http.MethodPut, path: "/api/functions/a", token: "tok", body: []byte("hello"), want: 400, wantInError: ".tar.gz or .zip"},
		{name: "dot dot", method: http.MethodPut, path: "/api/functions/a", token: "tok",
			body: testTarGz(t, "handler.py", "x", "../escape", "x"), want: 400, wantEntry: "../escape"},
		{name: "absolute link", method: http.MethodPut, path: "/api/functions/a", token: "tok",
			body: testTarGz(t, "handler.py", "x", "l", "->/etc/passwd"), want: 400, wantEntry: "l"},
		{name: "too large archive", method: http.MethodPut, path: "/api/functions/a", token: "tok",
			body: bytes.Repeat([]byte{0x1f}, 2<<20), want: 413, wantInError: "function size limit"},
		{name: "too many files", method: http.MethodPut, path: "/api/functions/a", token: "tok",
			body: testTarGz(t, "handler.py", "x", "1", "", "2", "", "3", "", "4", "", "5", "", "6", "", "7", "", "8", "", "9", "", "10", ""),
			want: 413, wantEntry: "10"},
		{name: "invalid function", method: http.MethodPut, path: "/api/functions/a", token: "tok",
			body: testTarGz(t, "readme.txt", "x"), want: 422, wantInError: "no handler.py"},
		{name: "mounted name", method: http.MethodPut, path: "/api/functions/mounted", token: "tok", body: good, want: 409},
		{name: "delete mounted", method: http.MethodDelete, path: "/api/functions/mounted", token: "tok", want: 409},
		{name: "delete unknown", method: http.MethodDelete, path: "/api/functions/nothing", token: "tok", want: 404},
		{name: "put new", method: http.MethodPut, path: "/api/functions/a", token: "tok", body: good, want: 201},
		{name: "put again", method: http.MethodPut, path: "/api/functions/a", token: "tok", body: testTarGz(t, "a/handler.py", "print(2)\n"), want: 200},
		{name: "post bad runtime", method: http.MethodPost, path: "/api/functions", token: "tok", body: source("b", "cobol", "", "x"), want: 400, wantInError: "runtime"},
		{name: "post bad mode", method: http.MethodPost, path: "/api/functions", token: "tok", body: source("b", "python3", "fast", "x"), want: 400, wantInError: "mode"},
		{name: "post empty code", method: http.MethodPost, path: "/api/functions", token: "tok", body: source("b", "python3", "", " "), want: 400, wantInError: "empty"},
		{name: "post not json", method: http.MethodPost, path: "/api/functions", token: "tok", body: []byte("{"), want: 400, wantInError: "JSON"},
		{name: "post", method: http.MethodPost, path: "/api/functions", token: "tok", body: source("b", "python3", "http", "def handle(req):\n  return 'hi'\n"), want: 201},
		{name: "delete", method: http.MethodDelete, path: "/api/functions/a", token: "tok", want: 204},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := do(t, tt.method, srv.URL+tt.path, tt.token, tt.body)
			if code != tt.want {
				t.Fatalf("got %d %v, want %d", code, body, tt.want)
			}
			if msg, _ := body["error"].(string); !strings.Contains(msg, tt.wantInError) {
				t.Errorf("got error %q, want it to contain %q", msg, tt.wantInError)
			}
			if entry, _ := body["entry"].(string); entry != tt.wantEntry {
				t.Errorf("got entry %q, want %q", entry, tt.wantEntry)
			}
		})
	}
	// What is left: b only, never a work folder, and the mounted folder untouched.
	entries, err := os.ReadDir(store.Dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, ",") != "b" {
		t.Errorf("uploads dir holds %v, want only [b]", names)
	}
	if code, err := os.ReadFile(filepath.Join(store.Dir, "b", "handler.py")); err != nil || !strings.Contains(string(code), "def handle") {
		t.Errorf("b/handler.py: got %q, %v", code, err)
	}
	if entries, _ := os.ReadDir(filepath.Join(store.FunctionsDir, "mounted")); len(entries) != 0 {
		t.Errorf("the mounted folder was written: %v", entries)
	}
}

func TestUploadsOff(t *testing.T) {
	srv, _, _ := uploadGateway(t, "", false)
	code, body := do(t, http.MethodPut, srv.URL+"/api/functions/a", "", testTarGz(t, "handler.py", "x"))
	if code != http.StatusForbidden || !strings.Contains(body["error"].(string), "FAAS_UPLOADS=on") {
		t.Errorf("got %d %v, want 403 naming FAAS_UPLOADS=on", code, body)
	}
}
