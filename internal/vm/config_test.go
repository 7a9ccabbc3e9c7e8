package vm

import (
	"testing"
	"time"
)

func TestValidateDirs(t *testing.T) {
	tests := []struct {
		name     string
		state    string
		keepLogs string
		wantErr  string // "" for valid
	}{
		{name: "state dir only", state: "/var/lib/faas"},
		{name: "with keep-logs dir", state: "/var/lib/faas", keepLogs: "/var/log/faas"},
		{name: "no state dir", wantErr: "qemu config: state dir is empty"},
		{name: "relative state dir", state: "state", wantErr: `qemu config: state dir "state" is not an absolute path`},
		{name: "relative keep-logs dir", state: "/s", keepLogs: "logs", wantErr: `qemu config: keep-logs dir "logs" is not an absolute path`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkErr(t, ValidateDirs("qemu", tt.state, tt.keepLogs), tt.wantErr)
		})
	}
}

func TestValidateDurations(t *testing.T) {
	tests := []struct {
		name    string
		ds      []NamedDuration
		wantErr string // "" for valid
	}{
		{name: "none"},
		{name: "zero means default", ds: []NamedDuration{{"boot timeout", 0}, {"stop timeout", time.Second}}},
		{name: "negative", ds: []NamedDuration{{"boot timeout", time.Second}, {"stop timeout", -time.Second}},
			wantErr: "ignite config: stop timeout -1s is negative"},
		{name: "first negative reported", ds: []NamedDuration{{"a", -1}, {"b", -2}}, wantErr: "ignite config: a -1ns is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkErr(t, ValidateDurations("ignite", tt.ds...), tt.wantErr)
		})
	}
}

// checkErr fails t unless err is nil (want "") or its message is want.
func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("got %v, want no error", err)
	case want != "" && (err == nil || err.Error() != want):
		t.Errorf("got %v, want %q", err, want)
	}
}
