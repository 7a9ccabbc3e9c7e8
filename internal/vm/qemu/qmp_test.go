package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// qmpGreeting is what QEMU 7.2 sends first.
const qmpGreeting = `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}`

// qmpExchange is one step of a fake QMP server's script: wait for a command
// named expect (if not empty), then send the lines of reply, where "{id}"
// is replaced by the id of the command received.
type qmpExchange struct {
	expect string
	reply  []string
}

// fakeQMP serves one connection on a unix socket in a temp dir, following
// script, and returns the socket path. After the script it hangs up if
// hangUp is set, as QEMU does after "quit"; otherwise it waits for the
// client to close. Protocol violations fail the test.
func fakeQMP(t *testing.T, script []qmpExchange, hangUp bool) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { l.Close(); <-done })
	go func() {
		defer close(done)
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		r := bufio.NewReader(conn)
		for _, ex := range script {
			id := ""
			if ex.expect != "" {
				line, err := r.ReadBytes('\n')
				if err != nil {
					t.Errorf("fake qmp: reading command %s: %v", ex.expect, err)
					return
				}
				var cmd struct {
					Execute string          `json:"execute"`
					ID      json.RawMessage `json:"id"`
				}
				if err := json.Unmarshal(line, &cmd); err != nil {
					t.Errorf("fake qmp: bad command %q: %v", line, err)
					return
				}
				if cmd.Execute != ex.expect {
					t.Errorf("fake qmp: got command %q, want %q", cmd.Execute, ex.expect)
					return
				}
				id = string(cmd.ID)
			}
			for _, rep := range ex.reply {
				if _, err := conn.Write([]byte(strings.ReplaceAll(rep, "{id}", id) + "\r\n")); err != nil {
					return
				}
			}
		}
		if !hangUp {
			r.ReadBytes(0) // until the client closes
		}
	}()
	return path
}

var capabilitiesOK = qmpExchange{expect: "qmp_capabilities", reply: []string{`{"return": {}, "id": {id}}`}}

func TestQMP(t *testing.T) {
	const event = `{"timestamp": {"seconds": 1795640096, "microseconds": 879415}, "event": "RTC_CHANGE", "data": {"offset": 0}}`
	tests := []struct {
		name       string
		script     []qmpExchange
		command    string
		timeout    time.Duration
		wantDial   string // substring of the dial error; "" if dial must work
		wantReturn string
		wantErr    string // substring of execute's error
		wantIs     error
		wantQMPErr string // class of the expected *qmpError
		hangUp     bool
	}{
		{
			name: "command ok",
			script: []qmpExchange{{reply: []string{qmpGreeting}}, capabilitiesOK,
				{expect: "query-status", reply: []string{`{"return": {"status": "running", "running": true}, "id": {id}}`}}},
			command:    "query-status",
			wantReturn: `{"status": "running", "running": true}`,
		},
		{
			name: "error reply",
			script: []qmpExchange{{reply: []string{qmpGreeting}}, capabilitiesOK,
				{expect: "nosuch", reply: []string{`{"error": {"class": "CommandNotFound", "desc": "The command nosuch has not been found"}, "id": {id}}`}}},
			command:    "nosuch",
			wantErr:    "The command nosuch has not been found",
			wantQMPErr: "CommandNotFound",
		},
		{
			name: "events interleaved",
			script: []qmpExchange{{reply: []string{qmpGreeting, event}},
				{expect: "qmp_capabilities", reply: []string{event, `{"return": {}, "id": {id}}`, event}},
				{expect: "query-status", reply: []string{event, event, `{"return": {"status": "paused"}, "id": {id}}`}}},
			command:    "query-status",
			wantReturn: `{"status": "paused"}`,
		},
		{
			name: "reply to another id is skipped",
			script: []qmpExchange{{reply: []string{qmpGreeting}}, capabilitiesOK,
				{expect: "query-status", reply: []string{`{"return": {"stale": true}, "id": 999}`, `{"return": {"status": "running"}, "id": {id}}`}}},
			command:    "query-status",
			wantReturn: `{"status": "running"}`,
		},
		{
			name: "ctx timeout",
			script: []qmpExchange{{reply: []string{qmpGreeting}}, capabilitiesOK,
				{expect: "query-status"}}, // never answers
			command: "query-status",
			timeout: 50 * time.Millisecond,
			wantErr: "query-status",
			wantIs:  context.DeadlineExceeded,
		},
		{
			name: "connection closed mid-command",
			script: []qmpExchange{{reply: []string{qmpGreeting}}, capabilitiesOK,
				{expect: "quit", reply: []string{`{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}`}}},
			command: "quit",
			hangUp:  true,
			wantErr: "EOF",
		},
		{
			name:     "not a greeting",
			script:   []qmpExchange{{reply: []string{`{"return": {}}`}}},
			wantDial: "first message is not a greeting",
		},
		{
			name:     "capabilities refused",
			script:   []qmpExchange{{reply: []string{qmpGreeting}}, {expect: "qmp_capabilities", reply: []string{`{"error": {"class": "GenericError", "desc": "no"}, "id": {id}}`}}},
			wantDial: "qmp qmp_capabilities: qmp error GenericError: no",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := fakeQMP(t, tt.script, tt.hangUp)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := dialQMP(ctx, path)
			if tt.wantDial != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantDial) {
					t.Fatalf("dialQMP: got error %v, want one containing %q", err, tt.wantDial)
				}
				return
			}
			if err != nil {
				t.Fatalf("dialQMP: %v", err)
			}
			defer c.Close()
			cctx := ctx
			if tt.timeout > 0 {
				var ccancel context.CancelFunc
				cctx, ccancel = context.WithTimeout(ctx, tt.timeout)
				defer ccancel()
			}
			ret, err := c.execute(cctx, tt.command, nil)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("execute %s: %v", tt.command, err)
				}
				if !jsonEqual(t, ret, tt.wantReturn) {
					t.Errorf("execute %s: got %s, want %s", tt.command, ret, tt.wantReturn)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("execute %s: got error %v, want one containing %q", tt.command, err, tt.wantErr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("execute %s: got error %v, want one wrapping %v", tt.command, err, tt.wantIs)
			}
			if tt.wantQMPErr != "" {
				var qe *qmpError
				if !errors.As(err, &qe) || qe.Class != tt.wantQMPErr {
					t.Errorf("execute %s: got error %v, want a *qmpError of class %s", tt.command, err, tt.wantQMPErr)
				}
				// An error reply leaves the session usable.
				if c.broken != nil {
					t.Errorf("session broken after an error reply: %v", c.broken)
				}
			}
		})
	}
}

func jsonEqual(t *testing.T, got json.RawMessage, want string) bool {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("decoding %s: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("decoding %s: %v", want, err)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	return string(gb) == string(wb)
}
