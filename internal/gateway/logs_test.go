package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/faasvm/appliance/internal/controller"
	"github.com/faasvm/appliance/internal/logs"
)

func newLogHarness(t *testing.T) (*harness, *logs.Store) {
	t.Helper()
	store, err := logs.Open(t.TempDir(), logs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	fns := &fakeFunctions{statuses: []controller.Status{{Name: "hello", State: controller.StateReady}}}
	return newHarness(t, Options{Logs: store}, nil, fns), store
}

func TestAPILogs(t *testing.T) {
	h, store := newLogHarness(t)
	base := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	for i, e := range []logs.Entry{
		{Instance: "vm-a", Stream: "stdout", Line: "starting"},
		{Instance: "vm-a", Stream: "stderr", RequestID: "r1", Line: "<script>one</script>"},
		{Instance: "vm-b", Stream: "stderr", RequestID: "r2", Line: "two"},
	} {
		e.Time = base.Add(time.Duration(i) * time.Second)
		if err := store.Append("hello", e); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name       string
		query      string
		wantStatus int
		wantBody   string // exact, for 200s
		wantError  string // part of the error, for others
	}{
		{name: "text", query: "", wantStatus: 200, wantBody: "2026-12-02T12:00:00Z vm-a stdout starting\n" +
			"2026-12-02T12:00:01Z vm-a stderr [r1] <script>one</script>\n2026-12-02T12:00:02Z vm-b stderr [r2] two\n"},
		{name: "lines", query: "?lines=1", wantStatus: 200, wantBody: "2026-12-02T12:00:02Z vm-b stderr [r2] two\n"},
		{name: "instance", query: "?instance=vm-b", wantStatus: 200, wantBody: "2026-12-02T12:00:02Z vm-b stderr [r2] two\n"},
		{name: "since", query: "?since=2026-12-02T12:00:01Z&lines=1", wantStatus: 200, wantBody: "2026-12-02T12:00:02Z vm-b stderr [r2] two\n"},
		{name: "json", query: "?format=json&lines=1", wantStatus: 200,
			wantBody: `{"time":"2026-12-02T12:00:02Z","instance":"vm-b","stream":"stderr","requestId":"r2","line":"two"}` + "\n"},
		{name: "sse", query: "?format=sse&lines=1", wantStatus: 200,
			wantBody: `data: {"time":"2026-12-02T12:00:02Z","instance":"vm-b","stream":"stderr","requestId":"r2","line":"two"}` + "\n\n"},
		{name: "bad lines", query: "?lines=0", wantStatus: 400, wantError: "lines must be"},
		{name: "bad since", query: "?since=yesterday", wantStatus: 400, wantError: "since must be"},
		{name: "negative since", query: "?since=-5m", wantStatus: 400, wantError: "since must be"},
		{name: "bad instance", query: "?instance=../../x", wantStatus: 400, wantError: "instance must be"},
		{name: "bad follow", query: "?follow=yes", wantStatus: 400, wantError: "follow must be"},
		{name: "bad format", query: "?format=xml", wantStatus: 400, wantError: "format must be"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, header, body := h.do(t, h.newRequest(t, "GET", "/api/functions/hello/logs"+tt.query, nil))
			if status != tt.wantStatus {
				t.Fatalf("got %d (%s), want %d", status, body, tt.wantStatus)
			}
			if status == 200 {
				if body != tt.wantBody {
					t.Errorf("body:\n got %q\nwant %q", body, tt.wantBody)
				}
				if header.Get("X-Content-Type-Options") != "nosniff" {
					t.Error("no X-Content-Type-Options: nosniff")
				}
				return
			}
			if e := errorJSON(t, body); !strings.Contains(e.Error, tt.wantError) {
				t.Errorf("error %q, want it to contain %q", e.Error, tt.wantError)
			}
		})
	}
	t.Run("unknown function", func(t *testing.T) {
		status, _, body := h.do(t, h.newRequest(t, "GET", "/api/functions/nope/logs", nil))
		if status != 404 {
			t.Errorf("got %d %s, want 404", status, body)
		}
	})
	t.Run("not collected", func(t *testing.T) {
		fns := &fakeFunctions{statuses: []controller.Status{{Name: "hello", State: controller.StateReady}}}
		h := newHarness(t, Options{}, nil, fns)
		if status, _, body := h.do(t, h.newRequest(t, "GET", "/api/functions/hello/logs", nil)); status != 501 {
			t.Errorf("got %d %s, want 501", status, body)
		}
	})
}

// TestAPILogsFollow: follow=1 sends the backlog, then each new line as it
// is stored, and ends cleanly when the client leaves.
func TestAPILogsFollow(t *testing.T) {
	for _, format := range []string{"json", "sse"} {
		t.Run(format, func(t *testing.T) {
			h, store := newLogHarness(t)
			_ = store.Append("hello", logs.Entry{Time: time.Now(), Instance: "vm-a", Stream: "stdout", Line: "before"})
			req := h.newRequest(t, "GET", "/api/functions/hello/logs?follow=1", nil)
			if format == "sse" {
				req.Header.Set("Accept", "text/event-stream")
			} else {
				q := req.URL.Query()
				q.Set("format", "json")
				req.URL.RawQuery = q.Encode()
			}
			ctx, cancel := context.WithCancel(req.Context())
			res, err := http.DefaultClient.Do(req.WithContext(ctx))
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			if format == "sse" && res.Header.Get("Content-Type") != "text/event-stream" {
				t.Errorf("Content-Type %q, want text/event-stream", res.Header.Get("Content-Type"))
			}
			sc := bufio.NewScanner(res.Body)
			next := func() logs.Entry {
				t.Helper()
				for sc.Scan() {
					line := strings.TrimPrefix(sc.Text(), "data: ")
					if line == "" {
						continue
					}
					var e logs.Entry
					if err := json.Unmarshal([]byte(line), &e); err != nil {
						t.Fatalf("line %q: %v", sc.Text(), err)
					}
					return e
				}
				t.Fatalf("stream ended: %v", sc.Err())
				return logs.Entry{}
			}
			if e := next(); e.Line != "before" {
				t.Errorf("backlog: got %+v", e)
			}
			_ = store.Append("hello", logs.Entry{Time: time.Now(), Instance: "vm-a", Stream: "stderr", RequestID: "r9", Line: "after"})
			if e := next(); e.Line != "after" || e.RequestID != "r9" {
				t.Errorf("followed: got %+v", e)
			}
			cancel()
			h.wait(t, 1) // the gateway's handler returned once the client left
		})
	}
}
