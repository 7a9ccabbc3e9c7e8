package image

import (
	"debug/elf"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadKernel(t *testing.T) {
	f := defaultKernelFixture(t)
	dir := writeKernelDir(t, f)
	k, err := LoadKernel(dir)
	if err != nil {
		t.Fatalf("LoadKernel: %v", err)
	}
	if k.VMLinux != filepath.Join(dir, "vmlinux") {
		t.Errorf("VMLinux: got %s, want %s", k.VMLinux, filepath.Join(dir, "vmlinux"))
	}
	if k.Package != "linux-image-test" || k.Version != "1.0-1" || k.Release != "6.1.0-test" {
		t.Errorf("version: got %q %q %q, want linux-image-test 1.0-1 6.1.0-test", k.Package, k.Version, k.Release)
	}
	var names []string
	for _, m := range k.Modules {
		names = append(names, m.Name)
		if m.Path != filepath.Join(dir, "modules", m.Name) {
			t.Errorf("module %s: path got %s, want it in %s/modules", m.Name, m.Path, dir)
		}
	}
	if got, want := strings.Join(names, " "), "virtio_ring.ko virtio.ko overlay.ko"; got != want {
		t.Errorf("module order: got %q, want %q", got, want)
	}
	if got := string(k.ModulesList()); got != f.list {
		t.Errorf("ModulesList: got %q, want %q", got, f.list)
	}
}

func TestLoadKernelErrors(t *testing.T) {
	tests := []struct {
		name   string
		change func(t *testing.T, f *kernelFixture)
		after  func(t *testing.T, dir string) // changes to the written dir
		want   string
	}{
		{
			name:   "no vmlinux",
			change: func(_ *testing.T, f *kernelFixture) { f.vmlinux = nil },
			want:   "opening vmlinux",
		},
		{
			name:   "compressed vmlinuz instead of vmlinux",
			change: func(_ *testing.T, f *kernelFixture) { f.vmlinux = []byte("MZ\x00\x00bzImage...........") },
			want:   "is not an ELF",
		},
		{
			name:   "truncated vmlinux",
			change: func(_ *testing.T, f *kernelFixture) { f.vmlinux = []byte("\x7fELF") },
			want:   "reading header",
		},
		{
			name:   "arm64 kernel",
			change: func(t *testing.T, f *kernelFixture) { f.vmlinux = fakeELF(t, elf.EM_AARCH64, false) },
			want:   "not an x86-64 ELF",
		},
		{
			name:   "no VERSION",
			change: func(_ *testing.T, f *kernelFixture) { f.version = "" },
			want:   "reading VERSION",
		},
		{
			name:   "VERSION without release",
			change: func(_ *testing.T, f *kernelFixture) { f.version = "package=p\nversion=1\n" },
			want:   "lacks a package=, version= or release= line",
		},
		{
			name:   "no modules.list",
			change: func(_ *testing.T, f *kernelFixture) { f.list = "" },
			want:   "reading module list",
		},
		{
			name:   "listed module missing",
			change: func(_ *testing.T, f *kernelFixture) { f.list += "virtio_net.ko\n" },
			want:   "line 4",
		},
		{
			name:   "path in module list",
			change: func(_ *testing.T, f *kernelFixture) { f.list = "../virtio.ko\n" },
			want:   "is not a module file name",
		},
		{
			name:   "not a .ko",
			change: func(_ *testing.T, f *kernelFixture) { f.list = "virtio\n" },
			want:   "is not a module file name",
		},
		{
			name:   "module listed twice",
			change: func(_ *testing.T, f *kernelFixture) { f.list = "virtio.ko\nvirtio.ko\n" },
			want:   "listed twice",
		},
		{
			name:   "empty module list",
			change: func(_ *testing.T, f *kernelFixture) { f.list = "\n\n" },
			want:   "names no module",
		},
		{
			name:   "module is a directory",
			change: func(_ *testing.T, f *kernelFixture) { delete(f.modules, "overlay.ko") },
			after: func(t *testing.T, dir string) {
				mustMkdir(t, filepath.Join(dir, "modules", "overlay.ko"))
			},
			want: "is not a regular file",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := defaultKernelFixture(t)
			tt.change(t, &f)
			dir := writeKernelDir(t, f)
			if tt.after != nil {
				tt.after(t, dir)
			}
			k, err := LoadKernel(dir)
			if err == nil {
				t.Fatalf("got kernel %+v, want an error containing %q", k, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), dir) {
				t.Fatalf("got error %q, want one naming %s and containing %q", err, dir, tt.want)
			}
		})
	}
}

func TestLoadKernelFetched(t *testing.T) {
	dir := os.Getenv("FAAS_KERNEL_DIR")
	if dir == "" {
		if testing.Short() {
			t.Skip("FAAS_KERNEL_DIR unset; `make test` fetches the kernel and sets it")
		}
		t.Fatal("FAAS_KERNEL_DIR is not set: run `make test`, which fetches the kernel (scripts/fetch-kernel.sh) and sets it")
	}
	k, err := LoadKernel(dir)
	if err != nil {
		t.Fatalf("LoadKernel(%s): %v", dir, err)
	}
	var names []string
	for _, m := range k.Modules {
		names = append(names, m.Name)
	}
	want := "virtio_ring.ko virtio.ko virtio_mmio.ko virtio_blk.ko failover.ko net_failover.ko virtio_net.ko overlay.ko"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("modules: got %q, want %q", got, want)
	}
}
