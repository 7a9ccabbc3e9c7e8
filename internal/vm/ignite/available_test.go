package ignite

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// fakeHost answers Available's look-ups from tables and records the
// commands it was asked to run.
type fakeHost struct {
	paths map[string]string     // program → path; missing: not found
	out   map[string]string     // "path arg..." → stdout
	fail  map[string]error      // "path arg..." → error
	kvm   func() (bool, string) // nil: Probe.KVM stays nil
	ran   []string              // commands run, "path arg..."
}

func (h *fakeHost) probe(runtime string) Probe {
	p := Probe{
		Runtime: runtime,
		LookPath: func(file string) (string, error) {
			if p, ok := h.paths[file]; ok {
				return p, nil
			}
			return "", &exec.Error{Name: file, Err: exec.ErrNotFound}
		},
		Run: func(ctx context.Context, path string, args ...string) ([]byte, error) {
			cmd := strings.Join(append([]string{path}, args...), " ")
			h.ran = append(h.ran, cmd)
			if err, ok := h.fail[cmd]; ok {
				return nil, err
			}
			out, ok := h.out[cmd]
			if !ok {
				return nil, fmt.Errorf("unexpected command %q", cmd)
			}
			return []byte(out), nil
		},
	}
	if h.kvm != nil {
		p.KVM = func(context.Context) (bool, string) { return h.kvm() }
	}
	return p
}

// goodHost has everything the ignite engine needs, with the docker runtime.
func goodHost() *fakeHost {
	return &fakeHost{
		paths: map[string]string{"ignite": "/usr/local/bin/ignite", "docker": "/usr/bin/docker", "ctr": "/usr/bin/ctr"},
		out: map[string]string{
			"/usr/local/bin/ignite version --output short":                                                       "v0.10.0\n",
			"/usr/bin/docker image inspect --format {{.Id}} weaveworks/ignite:v0.10.0":                           "sha256:abc\n",
			"/usr/bin/ctr --namespace firecracker images list --quiet name==docker.io/weaveworks/ignite:v0.10.0": "docker.io/weaveworks/ignite:v0.10.0\n",
		},
		fail: map[string]error{},
		kvm:  func() (bool, string) { return true, "a probe guest booted under KVM" },
	}
}

func TestAvailable(t *testing.T) {
	tests := []struct {
		name       string
		runtime    string
		change     func(h *fakeHost)
		wantOK     bool
		wantReason []string
		wantRan    []string
	}{
		{
			name:       "everything there",
			wantOK:     true,
			wantReason: []string{"ignite v0.10.0 at /usr/local/bin/ignite", "sandbox image weaveworks/ignite:v0.10.0 present (docker)", "kvm works"},
			wantRan: []string{"/usr/local/bin/ignite version --output short",
				"/usr/bin/docker image inspect --format {{.Id}} weaveworks/ignite:v0.10.0"},
		},
		{
			name:       "containerd runtime",
			runtime:    RuntimeContainerd,
			wantOK:     true,
			wantReason: []string{"present (containerd)"},
			wantRan: []string{"/usr/local/bin/ignite version --output short",
				"/usr/bin/ctr --namespace firecracker images list --quiet name==docker.io/weaveworks/ignite:v0.10.0"},
		},
		{
			name:       "no ignite binary",
			change:     func(h *fakeHost) { delete(h.paths, "ignite") },
			wantReason: []string{"no ignite binary", "executable file not found"},
		},
		{
			name: "another ignite release",
			change: func(h *fakeHost) {
				h.out["/usr/local/bin/ignite version --output short"] = "v0.9.0\n"
			},
			wantReason: []string{`is "v0.9.0"; this engine needs v0.10.0`},
		},
		{
			name: "ignite version fails",
			change: func(h *fakeHost) {
				h.fail["/usr/local/bin/ignite version --output short"] = errors.New("exit status 2")
			},
			wantReason: []string{"ignite version: exit status 2"},
		},
		{
			name: "sandbox image missing from docker",
			change: func(h *fakeHost) {
				h.fail["/usr/bin/docker image inspect --format {{.Id}} weaveworks/ignite:v0.10.0"] =
					&CommandError{Command: "docker image", ExitCode: 1, Stderr: "Error: No such image: weaveworks/ignite:v0.10.0", Err: errors.New("exit status 1")}
			},
			wantReason: []string{"sandbox image weaveworks/ignite:v0.10.0 not in docker", "No such image"},
		},
		{
			name:       "no docker cli",
			change:     func(h *fakeHost) { delete(h.paths, "docker") },
			wantReason: []string{"no docker cli"},
		},
		{
			name:    "sandbox image missing from containerd",
			runtime: RuntimeContainerd,
			change: func(h *fakeHost) {
				h.out["/usr/bin/ctr --namespace firecracker images list --quiet name==docker.io/weaveworks/ignite:v0.10.0"] = ""
			},
			wantReason: []string{"not in containerd namespace firecracker"},
		},
		{
			name: "kvm broken",
			change: func(h *fakeHost) {
				h.kvm = func() (bool, string) { return false, "the probe guest hit a KVM internal error" }
			},
			wantReason: []string{"kvm unusable: the probe guest hit a KVM internal error"},
		},
		{
			name:       "kvm not probed",
			change:     func(h *fakeHost) { h.kvm = nil },
			wantReason: []string{"kvm not probed"},
		},
		{
			name: "everything missing: every reason",
			change: func(h *fakeHost) {
				delete(h.paths, "ignite")
				delete(h.paths, "docker")
				h.kvm = func() (bool, string) { return false, "/dev/kvm: no such file" }
			},
			wantReason: []string{"no ignite binary", "no docker cli", "kvm unusable: /dev/kvm: no such file"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := goodHost()
			if tt.change != nil {
				tt.change(h)
			}
			ok, reason := Available(t.Context(), h.probe(tt.runtime))
			if ok != tt.wantOK {
				t.Errorf("ok: got %v, want %v (reason %q)", ok, tt.wantOK, reason)
			}
			for _, w := range tt.wantReason {
				if !strings.Contains(reason, w) {
					t.Errorf("reason %q does not mention %q", reason, w)
				}
			}
			if tt.wantRan != nil && !slices.Equal(h.ran, tt.wantRan) {
				t.Errorf("ran:\ngot  %q\nwant %q", h.ran, tt.wantRan)
			}
		})
	}
}

func TestSelect(t *testing.T) {
	broken := func(h *fakeHost) { h.kvm = func() (bool, string) { return false, "KVM internal error" } }
	tests := []struct {
		name       string
		setting    string
		change     func(h *fakeHost)
		wantEngine string
		wantReason string
		wantErr    string
	}{
		{name: "auto with ignite usable", setting: "auto", wantEngine: "ignite", wantReason: "auto: ignite v0.10.0"},
		{name: "empty means auto", setting: "", change: broken, wantEngine: "qemu", wantReason: "auto: ignite unusable: kvm unusable: KVM internal error"},
		{name: "auto without kvm", setting: "auto", change: broken, wantEngine: "qemu", wantReason: "ignite unusable"},
		{name: "qemu asked", setting: "qemu", wantEngine: "qemu", wantReason: "FAAS_ENGINE=qemu"},
		{name: "ignite asked and usable", setting: "ignite", wantEngine: "ignite", wantReason: "FAAS_ENGINE=ignite: ignite v0.10.0"},
		{name: "ignite asked but unusable", setting: "ignite", change: broken, wantErr: "FAAS_ENGINE=ignite but ignite cannot run here: kvm unusable"},
		{name: "unknown", setting: "firecracker", wantErr: `engine "firecracker" is not`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := goodHost()
			if tt.change != nil {
				tt.change(h)
			}
			engine, reason, err := Select(t.Context(), tt.setting, h.probe(""))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("got %q, %q, %v; want an error mentioning %q", engine, reason, err, tt.wantErr)
				}
				return
			}
			if err != nil || engine != tt.wantEngine || !strings.Contains(reason, tt.wantReason) {
				t.Errorf("got %q, %q, %v; want %q with a reason mentioning %q", engine, reason, err, tt.wantEngine, tt.wantReason)
			}
		})
	}
}

func TestSelectQEMUProbesNothing(t *testing.T) {
	h := goodHost()
	if _, _, err := Select(t.Context(), "qemu", h.probe("")); err != nil {
		t.Fatal(err)
	}
	if len(h.ran) != 0 {
		t.Errorf("FAAS_ENGINE=qemu ran %q, want nothing", h.ran)
	}
}
