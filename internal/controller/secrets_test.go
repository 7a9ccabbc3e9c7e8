package controller

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadSecrets(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "outside")
	for name, content := range map[string]string{"db-password": "hunter2", "api-key": "k", "big": strings.Repeat("x", maxSecretBytes+1)} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(outside, []byte("not yours"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o700); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		dir     string
		names   []string
		want    map[string]string
		wantErr string
		missing bool
	}{
		{name: "none", dir: dir},
		{name: "two", dir: dir, names: []string{"db-password", "api-key"}, want: map[string]string{"db-password": "hunter2", "api-key": "k"}},
		{name: "missing names it", dir: dir, names: []string{"db-password", "nope"}, wantErr: `secret "nope"`, missing: true},
		{name: "no secrets dir", dir: "", names: []string{"db-password"}, wantErr: "FAAS_SECRETS_DIR", missing: true},
		{name: "symlink out of the dir", dir: dir, names: []string{"escape"}, wantErr: `secret "escape"`},
		{name: "directory", dir: dir, names: []string{"adir"}, wantErr: "not a regular file"},
		{name: "too big", dir: dir, names: []string{"big"}, wantErr: "larger than"},
		{name: "bad name", dir: dir, names: []string{"../x"}, wantErr: "not a valid name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := loadSecrets(tt.dir, tt.names)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tt.wantErr)
				}
				if errors.Is(err, errSecretMissing) != tt.missing {
					t.Errorf("errors.Is(err, errSecretMissing) = %v, want %v", !tt.missing, tt.missing)
				}
				if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "not yours") {
					t.Errorf("error %q shows a secret's value", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d secrets, want %d", len(got), len(tt.want))
			}
			for n, v := range tt.want {
				if string(got[n]) != v {
					t.Errorf("%s: got %q, want %q", n, got[n], v)
				}
			}
		})
	}
}

func TestWithSecrets(t *testing.T) {
	a := withSecrets("d", map[string][]byte{"x": []byte("1")})
	if withSecrets("d", nil) != "d" {
		t.Error("no secrets changed the digest")
	}
	if a == "d" || a != withSecrets("d", map[string][]byte{"x": []byte("1")}) {
		t.Error("the digest with secrets is not a stable new value")
	}
	if a == withSecrets("d", map[string][]byte{"x": []byte("2")}) {
		t.Error("a changed secret did not change the digest")
	}
	if len(a) != 64 {
		t.Errorf("digest %q is not a hex sha256", a)
	}
}
