package ignite

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseInspect(t *testing.T) {
	const uid = "0123456789abcdef"
	tests := []struct {
		name          string
		out           string
		wantIP        string
		wantContainer string
		wantErr       string
	}{
		{name: "running vm", out: inspectJSON(t, uid, "10.61.0.7", "d3adb33f"), wantIP: "10.61.0.7", wantContainer: "d3adb33f"},
		{name: "ipv6 only", out: inspectJSON(t, uid, "fd00::7", "c"), wantErr: "no IPv4 address"},
		{name: "other vm", out: inspectJSON(t, "ffffffffffffffff", "10.61.0.7", "c"), wantErr: "answered for vm"},
		{name: "empty", out: "\n", wantErr: "printed nothing"},
		{name: "table instead of json", out: "VM ID\tIMAGE\n", wantErr: "parsing ignite inspect output"},
		{name: "truncated json", out: inspectJSON(t, uid, "10.61.0.7", "c")[:40], wantErr: "parsing ignite inspect output"},
		{name: "a kernel object", out: `{"kind":"Kernel","apiVersion":"ignite.weave.works/v1alpha4","metadata":{"uid":"` + uid + `"}}`,
			wantErr: "parsing ignite inspect output"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info, err := parseInspect([]byte(tt.out), uid)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("got %+v, %v; want an error mentioning %q", info, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if info.IP.String() != tt.wantIP || info.ContainerID != tt.wantContainer {
				t.Errorf("got %+v, want ip %s container %s", info, tt.wantIP, tt.wantContainer)
			}
		})
	}
}

func TestParseStatus(t *testing.T) {
	tests := []struct {
		out     string
		want    vmState
		wantErr string
	}{
		{out: "true\n", want: stateRunning},
		{out: "false\n\n", want: stateStopped},
		{out: "", want: stateGone},
		{out: "\n", want: stateGone},
		{out: "true\ntrue\n", wantErr: "matched 2 vms"},
		{out: "<no value>\n", wantErr: "is not true or false"},
		{out: "false\ntime=\"2026-11-25T21:18:27Z\" level=warning msg=\"The symbol * on the VM status ...\"\n", want: stateStopped},
	}
	for _, tt := range tests {
		t.Run(strings.TrimSpace(tt.out), func(t *testing.T) {
			got, err := parseStatus([]byte(tt.out))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("got %v, %v; want an error mentioning %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestParseList(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    []string
		wantErr string
	}{
		{name: "mixed owners", out: "aaaaaaaaaaaaaaaa me\nbbbbbbbbbbbbbbbb you\ncccccccccccccccc \n\ndddddddddddddddd me\n",
			want: []string{"aaaaaaaaaaaaaaaa", "dddddddddddddddd"}},
		{name: "none", out: "", want: nil},
		{name: "with a log line", out: "aaaaaaaaaaaaaaaa me\ntime=\"2026-11-25T21:18:27Z\" level=warning msg=\"failed to inspect container\"\n",
			want: []string{"aaaaaaaaaaaaaaaa"}},
		{name: "not ps output", out: "VM ID IMAGE\n", wantErr: "does not start with a vm uid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseList([]byte(tt.out), "me")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("got %q, %v; want an error mentioning %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// script writes an executable shell script and returns its path.
func script(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ignite")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRunner(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		path     string // instead of a script
		ctx      func(t *testing.T) context.Context
		timeout  time.Duration
		want     string
		wantErr  []string
		wantCode int
		wantIs   error
	}{
		{name: "success", body: `echo "$@"; echo noise >&2`, want: "inspect vm x\n"},
		{name: "non-zero exit", body: `echo partial; echo 'level=fatal msg="boom"' >&2; exit 3`,
			wantErr: []string{"ignite inspect: exit status 3", `level=fatal msg="boom"`}, wantCode: 3},
		{name: "timeout", body: `sleep 30`, timeout: 200 * time.Millisecond,
			wantErr: []string{"ignite inspect: killed after context deadline exceeded"}, wantCode: -1, wantIs: context.DeadlineExceeded},
		{name: "grandchild keeps the pipes", body: `sleep 30 & sleep 30`, timeout: 200 * time.Millisecond,
			wantErr: []string{"ignite inspect: killed after"}, wantCode: -1, wantIs: context.DeadlineExceeded},
		{name: "cancelled before start", body: `echo ran`,
			ctx: func(t *testing.T) context.Context {
				ctx, cancel := context.WithCancel(t.Context())
				cancel()
				return ctx
			},
			wantErr: []string{"ignite inspect", "context canceled"}, wantIs: context.Canceled},
		{name: "missing program", path: "/nonexistent/ignite", wantErr: []string{"ignite inspect", "no such file"}, wantCode: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.path
			if path == "" {
				path = script(t, tt.body)
			}
			ctx := t.Context()
			if tt.ctx != nil {
				ctx = tt.ctx(t)
			}
			begin := time.Now()
			out, err := runner{}.run(ctx, tt.timeout, path, []string{"inspect", "vm", "x"})
			if taken := time.Since(begin); taken > 10*time.Second {
				t.Errorf("run took %s", taken)
			}
			if tt.wantErr == nil {
				if err != nil || string(out) != tt.want {
					t.Errorf("got %q, %v; want %q", out, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("got %q and no error, want one", out)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %q does not wrap %v", err, tt.wantIs)
			}
			var ce *CommandError
			if errors.As(err, &ce) && ce.ExitCode != tt.wantCode {
				t.Errorf("exit code: got %d, want %d", ce.ExitCode, tt.wantCode)
			}
		})
	}
}

func TestTail(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"short\n", 100, "short"},
		{"line one\nline two\nline three\n", 14, "line three"},
		{"  \n", 10, ""},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tail([]byte(tt.in), tt.n); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
