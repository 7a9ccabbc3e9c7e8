package image

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
)

func TestRebaseTar(t *testing.T) {
	build := func(entries ...[2]string) *bytes.Buffer {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		for _, e := range entries {
			if strings.HasSuffix(e[0], "/") {
				tw.WriteHeader(&tar.Header{Name: e[0], Typeflag: tar.TypeDir, Mode: 0o700, Uid: 65534})
				continue
			}
			tw.WriteHeader(&tar.Header{Name: e[0], Typeflag: tar.TypeReg, Mode: 0o600, Size: int64(len(e[1])), Uid: 65534})
			tw.Write([]byte(e[1]))
		}
		tw.Close()
		return &b
	}
	tests := []struct {
		name    string
		in      *bytes.Buffer
		limit   int64
		want    []string
		wantErr error
	}{
		{name: "top stripped, owners and modes fixed", in: build([2]string{"faas-deps/", ""}, [2]string{"faas-deps/python/", ""}, [2]string{"faas-deps/python/m.py", "x=1"}),
			limit: 100, want: []string{"python/ 0 744", "python/m.py 0 644"}},
		{name: "over the limit", in: build([2]string{"faas-deps/big", "0123456789"}), limit: 5, wantErr: ErrDepsTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := rebaseTar(&out, tt.in, "faas-deps", tt.limit)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			tr := tar.NewReader(&out)
			for {
				h, err := tr.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, h.Name+" "+strconv.Itoa(h.Uid)+" "+strconv.FormatInt(h.Mode, 8))
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestInstallScript(t *testing.T) {
	house := t.TempDir()
	mustWrite(t, house+"/p-1-py3-none-any.whl", "", 0o644)
	tests := []struct {
		name    string
		runtime string
		ms      []depsManifest
		cfg     DepsConfig
		want    []string
	}{
		{"pip from PyPI", "python3", []depsManifest{{name: "requirements.txt"}}, DepsConfig{}, []string{"--target /tmp/faas-deps/python -r requirements.txt"}},
		{"pip index", "python3", nil, DepsConfig{PipIndexURL: "https://mirror/simple"}, []string{"--index-url 'https://mirror/simple'"}},
		{"pip wheel folder", "python3", nil, DepsConfig{PipIndexURL: "file://" + house}, []string{"--no-index --find-links /tmp/faas-index"}},
		{"pip file index", "python3", nil, DepsConfig{PipIndexURL: "file://" + t.TempDir()}, []string{"--index-url file:///tmp/faas-index"}},
		{"npm install", "node", []depsManifest{{name: "package.json"}}, DepsConfig{}, []string{"npm install --omit=dev"}},
		{"npm ci with a lockfile", "node", []depsManifest{{name: "package.json"}, {name: "package-lock.json"}}, DepsConfig{NpmRegistry: "http://r'x"}, []string{"npm ci --omit=dev", `--registry 'http://r'\''x'`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := strings.Join(installScript(tt.runtime, tt.ms, tt.cfg), " ")
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("got %q, want it to contain %q", got, w)
				}
			}
		})
	}
}
