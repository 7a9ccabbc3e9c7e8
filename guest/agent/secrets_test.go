package main

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestWriteSecrets(t *testing.T) {
	tests := []struct {
		name      string
		secrets   map[string][]byte
		wantNames []string
		wantErr   bool
		mounted   bool
	}{
		{name: "none", secrets: nil},
		{name: "two", secrets: map[string][]byte{"db-password": []byte("hunter2\n"), "api-key": {0, 1, 2}},
			wantNames: []string{"api-key", "db-password"}, mounted: true},
		{name: "traversal", secrets: map[string][]byte{"../x": []byte("x")}, wantErr: true, mounted: true},
		{name: "dot", secrets: map[string][]byte{"..": []byte("x")}, wantErr: true, mounted: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "secrets")
			mounted := false
			names, err := writeSecrets(tt.secrets, dir, func(d string) error { mounted = true; return os.MkdirAll(d, 0o755) })
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, want error %v", err, tt.wantErr)
			}
			if mounted != tt.mounted {
				t.Errorf("mounted %v, want %v", mounted, tt.mounted)
			}
			if tt.wantErr {
				return
			}
			if !slices.Equal(names, tt.wantNames) {
				t.Errorf("names %v, want %v", names, tt.wantNames)
			}
			for name, want := range tt.secrets {
				p := filepath.Join(dir, name)
				got, err := os.ReadFile(p)
				if err != nil || string(got) != string(want) {
					t.Errorf("%s: got %q, %v; want %q", name, got, err, want)
				}
				st, _ := os.Stat(p)
				if st.Mode().Perm() != 0o400 {
					t.Errorf("%s: mode %v, want 0400", name, st.Mode().Perm())
				}
			}
		})
	}
	t.Run("mount fails", func(t *testing.T) {
		_, err := writeSecrets(map[string][]byte{"a": nil}, t.TempDir(), func(string) error { return errors.New("no tmpfs") })
		if err == nil {
			t.Fatal("no error")
		}
	})
}
