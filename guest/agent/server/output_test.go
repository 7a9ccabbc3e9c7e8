package server

import (
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

func TestMergeAndRequestEnv(t *testing.T) {
	got := mergeEnv([]string{"A=1", "PATH=/bin", "B=2"}, map[string]string{"PATH": "/opt/bin", "C": "3"})
	want := []string{"A=1", "B=2", "C=3", "PATH=/opt/bin"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("mergeEnv: got %q, want %q", got, want)
	}
	if got := lookupEnv(append(got, "PATH=/last"), "PATH"); got != "/last" {
		t.Errorf("lookupEnv: got %q, want the last PATH /last", got)
	}
}
