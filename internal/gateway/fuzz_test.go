package gateway

import (
	"strings"
	"testing"
)

// FuzzSplitInvokePath: any escaped path splits without a panic; a name it
// accepts is not empty and the rest it returns starts with "/".
func FuzzSplitInvokePath(f *testing.F) {
	for _, s := range []string{"/invoke/f", "/invoke/f/a/b?c", "/invoke/%2e%2e/x", "/invoke/", "/invoke//x", "/invoke/%zz", "/other/f", "/invoke/a%2Fb/c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, escaped string) {
		name, rest, ok := splitInvokePath(escaped)
		if !ok {
			return
		}
		if name == "" {
			t.Fatalf("splitInvokePath(%q) accepted an empty name", escaped)
		}
		if !strings.HasPrefix(rest, "/") {
			t.Fatalf("splitInvokePath(%q) rest %q does not start with /", escaped, rest)
		}
	})
}
