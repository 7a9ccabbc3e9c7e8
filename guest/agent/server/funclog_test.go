package server

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/faasvm/appliance/guest/protocol"
)

// readLogs follows the agent's log stream from after and returns entries
// until want of them were read or the timeout passed.
func (a *agent) readLogs(t *testing.T, after string, want int, timeout time.Duration) []protocol.LogEntry {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.controlURL+protocol.LogsPath+"?after="+after, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(protocol.ControlHeader, testControlSecret)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", protocol.LogsPath, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d", protocol.LogsPath, res.StatusCode)
	}
	var out []protocol.LogEntry
	sc := bufio.NewScanner(res.Body)
	for len(out) < want && sc.Scan() {
		var e protocol.LogEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		out = append(out, e)
	}
	return out
}

func TestFunctionLogExecMode(t *testing.T) {
	a := newAgent(t, protocol.Config{Mode: protocol.ModeExec, Command: []string{"./h.sh"}}, map[string]string{
		"h.sh": "#!/bin/sh\necho \"err one $Http_X_Request_Id\" >&2\necho body\nprintf 'err two' >&2\n",
	}, nil)
	for _, id := range []string{"req-a", "req-b"} {
		if r := a.do(t, "POST", "/", "", map[string]string{protocol.RequestIDHeader: id}); r.status != 200 || string(r.body) != "body\n" {
			t.Fatalf("invoke: %d %q", r.status, r.body)
		}
	}
	got := a.readLogs(t, "0", 4, 5*time.Second)
	want := []struct{ line, id string }{{"err one req-a", "req-a"}, {"err two", "req-a"}, {"err one req-b", "req-b"}, {"err two", "req-b"}}
	if len(got) != len(want) {
		t.Fatalf("got %d entries %+v, want %d", len(got), got, len(want))
	}
	for i, w := range want {
		e := got[i]
		if e.Line != w.line || e.RequestID != w.id || e.Stream != protocol.StreamStderr || e.Seq != uint64(i+1) || e.Time.IsZero() {
			t.Errorf("entry %d: got %+v, want line %q request %q on stderr, seq %d", i, e, w.line, w.id, i+1)
		}
	}
	// Resuming after a seq skips what was read; stdout (the body) is never a log line.
	if rest := a.readLogs(t, "3", 1, 5*time.Second); len(rest) != 1 || rest[0].Seq != 4 {
		t.Errorf("after=3: got %+v, want entry 4 only", rest)
	}
	if r := a.control(t, "GET", protocol.LogsPath+"?after=x", nil); r.status != http.StatusBadRequest {
		t.Errorf("after=x: status %d, want 400", r.status)
	}
	if r := a.control(t, "GET", protocol.LogsPath, map[string]string{protocol.ControlHeader: ""}); r.status != http.StatusForbidden {
		t.Errorf("no control secret: status %d, want 403", r.status)
	}
	if r := a.do(t, "GET", protocol.LogsPath, "", nil); r.status != 200 || string(r.body) != "body\n" {
		t.Errorf("data port %s: got %d %q, want the function's answer", protocol.LogsPath, r.status, r.body)
	}
}

func TestFunctionLogHTTPMode(t *testing.T) {
	a := newAgent(t, protocol.Config{Mode: protocol.ModeHTTP, Runtime: "python3", Handler: "handler.py"}, map[string]string{
		"handler.py": "import sys\nprint('starting')\ndef handle(req):\n    print('hello from', req.headers.get('x-request-id'))\n    print('oops', file=sys.stderr)\n    return 'ok'\n",
	}, nil)
	a.waitHealth(t, StateReady, 20*time.Second)
	if r := a.do(t, "GET", "/", "", map[string]string{protocol.RequestIDHeader: "rid-7"}); r.status != 200 {
		t.Fatalf("invoke: %d %q", r.status, r.body)
	}
	// starting, the bootstrap's own "serving" line, then the request's two.
	got := a.readLogs(t, "0", 4, 5*time.Second)
	if len(got) != 4 {
		t.Fatalf("got %+v, want 4 entries", got)
	}
	if got[0].Line != "starting" || got[0].RequestID != "" || got[0].Stream != protocol.StreamStdout {
		t.Errorf("startup line: got %+v, want stdout \"starting\" without a request id", got[0])
	}
	byLine := map[string]protocol.LogEntry{}
	for _, e := range got[1:] {
		byLine[e.Line] = e
	}
	if e := byLine["hello from rid-7"]; e.RequestID != "rid-7" || e.Stream != protocol.StreamStdout {
		t.Errorf("request line: got %+v, want stdout tagged rid-7 (all: %+v)", e, got)
	}
	if e := byLine["oops"]; e.RequestID != "rid-7" || e.Stream != protocol.StreamStderr {
		t.Errorf("stderr line: got %+v, want stderr tagged rid-7 (all: %+v)", e, got)
	}
	if !strings.Contains(a.console.String(), "hello from rid-7") {
		t.Errorf("console lacks the handler's line: %q", a.console.String())
	}
}

func TestRequestTracker(t *testing.T) {
	now := time.Unix(1000, 0)
	tr := newRequestTracker()
	tr.now = func() time.Time { return now }
	if got := tr.current(); got != "" {
		t.Errorf("idle: got %q, want none", got)
	}
	endA := tr.begin("a")
	if got := tr.current(); got != "a" {
		t.Errorf("one in flight: got %q, want a", got)
	}
	endB := tr.begin("b")
	if got := tr.current(); got != "" {
		t.Errorf("two in flight: got %q, want none", got)
	}
	endA()
	if got := tr.current(); got != "b" {
		t.Errorf("b alone: got %q, want b", got)
	}
	endB()
	if got := tr.current(); got != "b" {
		t.Errorf("just after b ended: got %q, want b (lines still in the pipe)", got)
	}
	now = now.Add(lingerAfterRequest)
	if got := tr.current(); got != "" {
		t.Errorf("linger over: got %q, want none", got)
	}
}

func TestFuncLogBounds(t *testing.T) {
	l := newFuncLog()
	for range funcLogMaxEntries + 10 {
		l.add(protocol.StreamStderr, "", []byte("x"))
	}
	got, _ := l.since(0)
	if len(got) != funcLogMaxEntries || got[0].Seq != 11 {
		t.Errorf("kept %d entries from seq %d, want %d from 11", len(got), got[0].Seq, funcLogMaxEntries)
	}
	big := strings.Repeat("y", funcLogMaxBytes/2+1)
	l.add(protocol.StreamStdout, "", []byte(big))
	l.add(protocol.StreamStdout, "", []byte(big))
	got, _ = l.since(0)
	total := 0
	for _, e := range got {
		total += len(e.Line)
	}
	if total > funcLogMaxBytes {
		t.Errorf("kept %d bytes, want at most %d", total, funcLogMaxBytes)
	}
}
