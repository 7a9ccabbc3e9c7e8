package server

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

	"github.com/faasvm/appliance/guest/protocol"
)

// FuzzServeHTTP: the agent's data handler takes any request a gateway (or
// whoever reaches the guest) sends: without the data secret it is refused
// with 403, with it the exec handler (cat) runs and echoes the body, or the
// request is refused as a client error; the agent never panics nor answers
// 500 for a request's shape.
func FuzzServeHTTP(f *testing.F) {
	f.Add("POST", "/", "X-Test", "1", []byte("hello"), true)
	f.Add("GET", "/a/../b?x=%00", "Content-Type", "text/plain", []byte{}, true)
	f.Add("PUT", "//x", "X-Faas-Control", "c0ntrol-for-tests", []byte("x"), false)
	f.Add("DELETE", "/%2e%2e/", "Http-Foo", "a\x00b", bytes.Repeat([]byte("z"), 70000), true)
	f.Add("PATCH", "/p", "X-Weird-Ünï", "\xff", []byte("b"), true)

	code := f.TempDir()
	if err := os.WriteFile(filepath.Join(code, "h.sh"), []byte("#!/bin/sh\nexec cat\n"), 0o755); err != nil {
		f.Fatal(err)
	}
	cfg := &protocol.Config{
		Name: "fuzz", Secret: testSecret, ControlSecret: testControlSecret,
		Mode: protocol.ModeExec, Command: []string{"./h.sh"}, Timeout: protocol.Duration(10 * time.Second),
	}
	srv, err := New(cfg, Options{
		CodeDir: code, RunDir: f.TempDir(), Console: io.Discard,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), StopGrace: time.Second,
	})
	if err != nil {
		f.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv.Start(ctx)
	f.Cleanup(func() {
		cancel()
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		_ = srv.Stop(sctx)
	})

	f.Fuzz(func(t *testing.T, method, target, hname, hvalue string, body []byte, withSecret bool) {
		if method == "" || strings.ContainsAny(method, " \t\r\n()<>@,;:\\\"/[]?={}") || len(method) > 16 {
			return // no HTTP server hands such a method to a handler
		}
		req := httptest.NewRequest(http.MethodGet, "/", bytes.NewReader(body))
		req.Method = method
		if u, err := req.URL.Parse(target); err == nil && strings.HasPrefix(target, "/") {
			req.URL = u
			req.RequestURI = target
		}
		if hname != "" && !strings.ContainsAny(hname, " \t\r\n:\x00") {
			req.Header.Set(hname, hvalue)
		}
		if withSecret {
			req.Header.Set(protocol.SecretHeader, testSecret)
		} else {
			req.Header.Del(protocol.SecretHeader)
		}
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		switch {
		case !withSecret && http.CanonicalHeaderKey(hname) != protocol.SecretHeader:
			if rec.Code != http.StatusForbidden {
				t.Fatalf("without the secret: got %d, want 403", rec.Code)
			}
		case rec.Code >= 500 && rec.Code != http.StatusBadGateway:
			t.Fatalf("%s %q (%s: %q, %d bytes): got %d %s", method, target, hname, hvalue, len(body), rec.Code, rec.Body)
		case rec.Code == http.StatusOK && method != http.MethodHead && !bytes.Equal(rec.Body.Bytes(), body):
			t.Fatalf("%s %q: cat echoed %d bytes, sent %d", method, target, rec.Body.Len(), len(body))
		}
	})
}
