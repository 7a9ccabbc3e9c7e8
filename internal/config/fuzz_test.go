package config

import "testing"

// FuzzParseSize: any string parses to a non-negative size or an error,
// never a panic, and a parsed size survives String and ParseSize again.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"10MB", "1GiB", "0", " 512 kb ", "9223372036854775807", "9223372036854775807T", "", "MB", "1.5GB", "-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d, a negative size", s, n)
		}
		again, err := ParseSize(n.String())
		if err != nil || again != n {
			t.Fatalf("ParseSize(%q) = %d, rendered %q, parsed back %d, %v", s, n, n.String(), again, err)
		}
	})
}
