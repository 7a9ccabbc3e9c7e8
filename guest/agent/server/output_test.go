package server

import (
	"net/http/httptest"

	"github.com/faasvm/appliance/guest/protocol"

	"strings"
	"testing"
)

func TestTailBuffer(t *testing.T) {
	tests := []struct {
		name   string
		max    int
		writes []string
		want   string
	}{
		{name: "under the limit", max: 8, writes: []string{"ab", "cd"}, want: "abcd"},
		{name: "trims the oldest bytes", max: 4, writes: []string{"abc", "def"}, want: "cdef"},
		{name: "one write larger than the limit", max: 3, writes: []string{"x", "abcdef"}, want: "def"},
		{name: "exactly the limit", max: 3, writes: []string{"abc"}, want: "abc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTailBuffer(tt.max)
			for _, w := range tt.writes {
				if n, err := tb.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write(%q): got %d, %v; want %d, nil", w, n, err, len(w))
				}
			}
			if got := tb.String(); got != tt.want {
				t.Errorf("tail: got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestLineWriter(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		want   string
	}{
		{name: "whole lines", writes: []string{"a\nb\n"}, want: "[f] a\n[f] b\n"},
		{name: "lines split across writes", writes: []string{"he", "llo\nwor", "ld\n"}, want: "[f] hello\n[f] world\n"},
		{name: "CRLF and a last partial line", writes: []string{"dos\r\n", "tail"}, want: "[f] dos\n[f] tail\n"},
		{name: "overlong line is split", writes: []string{strings.Repeat("x", maxConsoleLine+2) + "\n"},
			want: "[f] " + strings.Repeat("x", maxConsoleLine) + "\n[f] xx\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out strings.Builder
			lw := &lineWriter{c: &console{w: &out}, prefix: "[f] "}
			for _, w := range tt.writes {
				if _, err := lw.Write([]byte(w)); err != nil {
					t.Fatal(err)
				}
			}
			if err := lw.Close(); err != nil {
				t.Fatal(err)
			}
			if got := out.String(); got != tt.want {
				t.Errorf("console: got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCappedBuffer(t *testing.T) {
	overflows := 0
	c := &cappedBuffer{max: 5, overflow: func() { overflows++ }}
	if _, err := c.Write([]byte("abc")); err != nil {
		t.Fatalf("first write: %v", err)
	}
	if _, err := c.Write([]byte("def")); err != errOutputTooLarge {
		t.Errorf("write past the limit: got %v, want errOutputTooLarge", err)
	}
	if _, err := c.Write([]byte("g")); err != errOutputTooLarge {
		t.Errorf("write after overflow: got %v, want errOutputTooLarge", err)
	}
	if overflows != 1 {
		t.Errorf("overflow calls: got %d, want 1", overflows)
	}
	if got := c.buf.String(); got != "abc" {
		t.Errorf("kept: got %q, want %q", got, "abc")
	}
}

func TestMergeEnv(t *testing.T) {
	got := mergeEnv([]string{"A=1", "PATH=/bin", "B=2"}, map[string]string{"PATH": "/opt/bin", "C": "3"})
	want := []string{"A=1", "B=2", "C=3", "PATH=/opt/bin"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("mergeEnv: got %q, want %q", got, want)
	}
	if got := lookupEnv(append(got, "PATH=/last"), "PATH"); got != "/last" {
		t.Errorf("lookupEnv: got %q, want the last PATH /last", got)
	}
}

// lastValues resolves an environment as exec does: the last value wins.
func lastValues(env []string) map[string]string {
	m := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

func TestRequestEnv(t *testing.T) {
	tests := []struct {
		name    string
		target  string
		headers map[string]string
		want    map[string]string
		absent  []string
	}{
		{
			name:    "request and headers",
			target:  "/a/b?x=1&y=2",
			headers: map[string]string{"X-Request-Id": "r1", "Content-Type": "text/plain"},
			want: map[string]string{"Http_Method": "POST", "Http_Path": "/a/b", "Http_Query": "x=1&y=2",
				"Http_ContentLength": "4", "Http_X_Request_Id": "r1", "Http_Content_Type": "text/plain"},
		},
		{
			name:    "headers cannot override the request's own variables",
			target:  "/public",
			headers: map[string]string{"Method": "DELETE", "Path": "/admin", "Query": "evil=1", "Contentlength": "9"},
			want:    map[string]string{"Http_Method": "POST", "Http_Path": "/public", "Http_Query": "", "Http_ContentLength": "4"},
		},
		{
			name:    "the secret is not passed on",
			target:  "/",
			headers: map[string]string{protocol.SecretHeader: "s3cret"},
			absent:  []string{"Http_X_Faas_Secret"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", tt.target, nil)
			for k, v := range tt.headers {
				r.Header.Set(k, v)
			}
			got := lastValues(requestEnv([]string{"PATH=/bin"}, r, 4))
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s: got %q, want %q", k, got[k], v)
				}
			}
			for _, k := range tt.absent {
				if _, ok := got[k]; ok {
					t.Errorf("%s is in the environment, want it absent", k)
				}
			}
		})
	}
}
