package main_test

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The upload API against the real appliance with real VMs: refused
// archives with their statuses, an upload that answers, a re-upload that
// redeploys, a one-file POST, a delete, and a name clash with a mounted
// folder. One appliance for all of it.

const uploadToken = "upload-test-token"

func (a *appliance) api(t *testing.T, method, path string, body []byte) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, a.base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+uploadToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	if out == nil {
		out = map[string]any{"raw": string(b)}
	}
	return resp.StatusCode, out
}

type tarEntry struct {
	name string
	typ  byte
	body string
	link string
}

func tgz(t *testing.T, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Linkname: e.link}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func zipped(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range files {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, body)
	}
	zw.Close()
	return buf.Bytes()
}

func pyHandler(word string) string { return "print('upload says " + word + "')\n" }

func TestUpload(t *testing.T) {
	a := startAppliance(t, "FAAS_API_TOKEN="+uploadToken, "FAAS_MIN_REPLICAS=1")
	handler := tarEntry{name: "handler.py", typ: tar.TypeReg, body: pyHandler("v1")}

	t.Run("refused archives", func(t *testing.T) {
		var bomb bytes.Buffer
		zw := gzip.NewWriter(&bomb)
		tw := tar.NewWriter(zw)
		tw.WriteHeader(&tar.Header{Name: "zeros", Typeflag: tar.TypeReg, Mode: 0o644, Size: 64 << 20})
		tw.Write(make([]byte, 64<<20))
		tw.Close()
		zw.Close()
		tests := []struct {
			name  string
			body  []byte
			want  int
			entry string
		}{
			{"absolute path", tgz(t, handler, tarEntry{name: "/etc/cron.d/x", typ: tar.TypeReg, body: "x"}), 400, "/etc/cron.d/x"},
			{"dot dot", tgz(t, handler, tarEntry{name: "../../x", typ: tar.TypeReg, body: "x"}), 400, "../../x"},
			{"link leaving", tgz(t, handler, tarEntry{name: "l", typ: tar.TypeSymlink, link: "../../../etc/shadow"}), 400, "l"},
			{"device", tgz(t, handler, tarEntry{name: "dev", typ: tar.TypeChar}), 400, "dev"},
			{"fifo", tgz(t, handler, tarEntry{name: "pipe", typ: tar.TypeFifo}), 400, "pipe"},
			{"bomb", bomb.Bytes(), 413, "zeros"},
			{"not an archive", []byte("#!/bin/sh\necho hi\n"), 400, ""},
			{"no handler", tgz(t, tarEntry{name: "README", typ: tar.TypeReg, body: "hi"}), 422, ""},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				code, body := a.api(t, http.MethodPut, "/api/functions/refused", tt.body)
				if code != tt.want {
					t.Fatalf("got %d %v, want %d", code, body, tt.want)
				}
				if e, _ := body["entry"].(string); e != tt.entry {
					t.Errorf("got entry %q, want %q (%v)", e, tt.entry, body)
				}
			})
		}
		if code, _ := a.get(t, "/api/functions/refused"); code != http.StatusUnauthorized {
			t.Errorf("GET without the token: got %d, want 401", code)
		}
		if code, body := a.api(t, http.MethodGet, "/api/functions/refused", nil); code != http.StatusNotFound {
			t.Errorf("a refused upload must leave nothing: got %d %v, want 404", code, body)
		}
		entries, _ := os.ReadDir(filepath.Join(a.stateDir, "uploads"))
		if len(entries) != 0 {
			t.Errorf("uploads dir holds %d entries after refused uploads, want none", len(entries))
		}
	})

	t.Run("upload answers, re-upload redeploys, delete removes", func(t *testing.T) {
		start := time.Now()
		code, body := a.api(t, http.MethodPut, "/api/functions/up", tgz(t, handler))
		if code != http.StatusCreated {
			t.Fatalf("PUT: got %d %v, want 201", code, body)
		}
		_, out := a.waitFor(t, "/invoke/up", 120*time.Second, is200)
		t.Logf("upload to first 200: %s", time.Since(start).Round(10*time.Millisecond))
		if !strings.Contains(out, "upload says v1") {
			t.Errorf("got %q, want v1's answer", out)
		}
		// The dashboard's chart data counts the requests that reached it.
		code, series := a.api(t, http.MethodGet, "/api/functions/up/series", nil)
		points, _ := series["points"].([]any)
		requests := 0.0
		for _, p := range points {
			if m, ok := p.(map[string]any); ok {
				r, _ := m["requests"].(float64)
				requests += r
			}
		}
		if code != http.StatusOK || len(points) != 90 || requests < 1 {
			t.Errorf("series: got %d, %d points, %v requests; want 200, 90 points, at least 1 request", code, len(points), requests)
		}

		code, body = a.api(t, http.MethodPut, "/api/functions/up", zipped(t, map[string]string{"handler.py": pyHandler("v2")}))
		if code != http.StatusOK {
			t.Fatalf("re-upload: got %d %v, want 200", code, body)
		}
		a.waitFor(t, "/invoke/up", 120*time.Second, func(code int, body string) bool {
			return code == 200 && strings.Contains(body, "upload says v2")
		})

		if code, body := a.api(t, http.MethodDelete, "/api/functions/up", nil); code != http.StatusNoContent {
			t.Fatalf("DELETE: got %d %v, want 204", code, body)
		}
		a.waitFor(t, "/invoke/up", 60*time.Second, func(code int, _ string) bool { return code == http.StatusNotFound })
		if code, _ := a.api(t, http.MethodDelete, "/api/functions/up", nil); code != http.StatusNotFound {
			t.Errorf("second DELETE: got %d, want 404", code)
		}
	})

	t.Run("one source file", func(t *testing.T) {
		src, _ := json.Marshal(map[string]string{"name": "one", "runtime": "bash", "code": "#!/bin/bash\necho one file\n"})
		if code, body := a.api(t, http.MethodPost, "/api/functions", src); code != http.StatusCreated {
			t.Fatalf("POST: got %d %v, want 201", code, body)
		}
		_, out := a.waitFor(t, "/invoke/one", 120*time.Second, is200)
		if !strings.Contains(out, "one file") {
			t.Errorf("got %q, want the script's output", out)
		}
	})

	t.Run("a mounted folder wins", func(t *testing.T) {
		// An invalid folder boots nothing and still owns its name.
		if err := os.Mkdir(filepath.Join(a.functions, "mounted"), 0o755); err != nil {
			t.Fatal(err)
		}
		if code, body := a.api(t, http.MethodPut, "/api/functions/mounted", tgz(t, handler)); code != http.StatusConflict {
			t.Errorf("PUT: got %d %v, want 409", code, body)
		}
		if code, body := a.api(t, http.MethodDelete, "/api/functions/mounted", nil); code != http.StatusConflict {
			t.Errorf("DELETE: got %d %v, want 409", code, body)
		}
		if entries, _ := os.ReadDir(filepath.Join(a.functions, "mounted")); len(entries) != 0 {
			t.Errorf("the mounted folder was written: %v", entries)
		}
	})
}
