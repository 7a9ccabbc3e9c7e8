package bootstrap

import (
	"strings"
	"testing"
)

func TestFor(t *testing.T) {
	tests := []struct {
		runtime    string
		wantInterp string
		wantSource string // a line the embedded source must hold
		wantErr    string
	}{
		{runtime: "python3", wantInterp: "python3", wantSource: "class Handler(http.server.BaseHTTPRequestHandler):"},
		{runtime: "node", wantInterp: "node", wantSource: "http.createServer("},
		{runtime: "ruby", wantErr: `runtime "ruby" has no http-mode bootstrap`},
		{runtime: "", wantErr: "has no http-mode bootstrap"},
	}
	for _, tt := range tests {
		t.Run(tt.runtime, func(t *testing.T) {
			b, err := For(tt.runtime)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("For(%q): got error %v, want one containing %q", tt.runtime, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("For(%q): %v", tt.runtime, err)
			}
			if b.Interpreter != tt.wantInterp {
				t.Errorf("interpreter: got %q, want %q", b.Interpreter, tt.wantInterp)
			}
			src, err := b.Source()
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(src), tt.wantSource) {
				t.Errorf("source of %s: does not contain %q", b.File, tt.wantSource)
			}
		})
	}
}
