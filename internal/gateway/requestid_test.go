package gateway

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"
)

func TestSaneRequestID(t *testing.T) {
	tests := []struct {
		name string
		id   string
		want bool
	}{
		{name: "uuid", id: "0b6f5c8e-6a4f-4c1e-9d55-2b1f0c3d4e5f", want: true},
		{name: "trace style", id: "trace:abc/1+2=3@x_y.z", want: true},
		{name: "empty", id: "", want: false},
		{name: "longest", id: strings.Repeat("a", maxRequestIDLen), want: true},
		{name: "too long", id: strings.Repeat("a", maxRequestIDLen+1), want: false},
		{name: "space", id: "a b", want: false},
		{name: "newline", id: "a\nmsg=forged", want: false},
		{name: "quote", id: `a"b`, want: false},
		{name: "non ascii", id: "é", want: false},
		{name: "shell", id: "$(reboot)", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := saneRequestID(tt.id); got != tt.want {
				t.Errorf("saneRequestID(%q) = %v, want %v", tt.id, got, tt.want)
			}
		})
	}
}

// TestRequestID: the function, the client and the access log all see the
// same id, the client's when sane; the function cannot replace it.
func TestRequestID(t *testing.T) {
	var seen []string
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.Header.Values(RequestIDHeader)
		w.Header().Set(RequestIDHeader, "from-the-function")
		_, _ = w.Write([]byte("ok"))
	})
	tests := []struct {
		name     string
		path     string
		sent     []string // X-Request-Id values the client sends
		wantKept bool     // the client's first value is kept
	}{
		{name: "client id kept", path: "/invoke/hello", sent: []string{"req-42"}, wantKept: true},
		{name: "none sent", path: "/invoke/hello"},
		{name: "unsafe replaced", path: "/invoke/hello", sent: []string{"a b\"c"}},
		{name: "too long replaced", path: "/invoke/hello", sent: []string{strings.Repeat("x", 200)}},
		{name: "two values replaced", path: "/invoke/hello", sent: []string{"a", "b"}},
		{name: "openfaas path", path: "/function/hello/sub", sent: []string{"of-1"}, wantKept: true},
		{name: "error answer", path: "/invoke/", sent: []string{"err-1"}, wantKept: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Options{}, upstream, nil)
			seen = nil
			req := h.newRequest(t, "GET", tt.path, nil)
			for _, v := range tt.sent {
				req.Header.Add(RequestIDHeader, v)
			}
			_, header, _ := h.do(t, req)
			got := header.Values(RequestIDHeader)
			if len(got) != 1 {
				t.Fatalf("answer carries X-Request-Id %q, want exactly one", got)
			}
			id := got[0]
			if tt.wantKept && id != tt.sent[0] {
				t.Errorf("got id %q, want the client's %q", id, tt.sent[0])
			}
			if !tt.wantKept {
				if _, err := uuid.Parse(id); err != nil {
					t.Errorf("got id %q, want a generated uuid: %v", id, err)
				}
			}
			if tt.path != "/invoke/" && (len(seen) != 1 || seen[0] != id) {
				t.Errorf("function saw X-Request-Id %q, want [%q]", seen, id)
			}
			lines := h.logs.requests(t)
			if len(lines) != 1 || lines[0]["request_id"] != id {
				t.Errorf("access log %v, want one line with request_id %q", lines, id)
			}
		})
	}
}

// TestOpenFaaSPath: /function/<name>[/<path>] reaches the function like
// /invoke/<name>[/<path>], with the same path rewriting.
func TestOpenFaaSPath(t *testing.T) {
	var gotPath, gotQuery string
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotPath, gotQuery = r.URL.EscapedPath(), r.URL.RawQuery
		_, _ = w.Write([]byte("ok"))
	})
	tests := []struct {
		name, path, wantPath, wantQuery string
		wantStatus                      int
	}{
		{name: "bare", path: "/function/hello", wantPath: "/", wantStatus: 200},
		{name: "slash", path: "/function/hello/", wantPath: "/", wantStatus: 200},
		{name: "sub path and query", path: "/function/hello/a/b?x=1", wantPath: "/a/b", wantQuery: "x=1", wantStatus: 200},
		{name: "health path goes to the function", path: "/function/hello/health", wantPath: "/health", wantStatus: 200},
		{name: "escaped", path: "/function/hello/a%2Fb", wantPath: "/a%2Fb", wantStatus: 200},
		{name: "no name", path: "/function/", wantStatus: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Options{}, upstream, nil)
			gotPath, gotQuery = "", ""
			status, _, body := h.do(t, h.newRequest(t, "POST", tt.path, nil))
			if status != tt.wantStatus {
				t.Fatalf("status %d (%s), want %d", status, body, tt.wantStatus)
			}
			if status == 200 && (gotPath != tt.wantPath || gotQuery != tt.wantQuery) {
				t.Errorf("function saw path %q query %q, want %q %q", gotPath, gotQuery, tt.wantPath, tt.wantQuery)
			}
		})
	}
}
