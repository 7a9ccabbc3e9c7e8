package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestWriteCPIOParseBack(t *testing.T) {
	tests := []struct {
		name    string
		entries []cpioEntry
		want    []string // names in archive order, trailer excluded
	}{
		{
			name:    "empty archive has only the trailer",
			entries: nil,
			want:    nil,
		},
		{
			name: "entries come out sorted by name",
			entries: []cpioEntry{
				{Name: "lib/modules/b.ko", Mode: cpioTypeRegular | 0o644, Data: []byte("bb")},
				{Name: "init", Mode: cpioTypeRegular | 0o755, Data: []byte("x")},
				{Name: "lib", Mode: cpioTypeDir | 0o755},
				{Name: "lib/modules", Mode: cpioTypeDir | 0o755},
				{Name: "lib/modules/a.ko", Mode: cpioTypeRegular | 0o644, Data: []byte("aaaa")},
			},
			want: []string{"init", "lib", "lib/modules", "lib/modules/a.ko", "lib/modules/b.ko"},
		},
		{
			name: "every padding length",
			entries: []cpioEntry{
				{Name: "a", Mode: cpioTypeRegular | 0o644, Data: []byte("1")},
				{Name: "bb", Mode: cpioTypeRegular | 0o644, Data: []byte("12")},
				{Name: "ccc", Mode: cpioTypeRegular | 0o644, Data: []byte("123")},
				{Name: "dddd", Mode: cpioTypeRegular | 0o644, Data: []byte("1234")},
				{Name: "e", Mode: cpioTypeRegular | 0o644},
			},
			want: []string{"a", "bb", "ccc", "dddd", "e"},
		},
		{
			name: "device node and symlink",
			entries: []cpioEntry{
				{Name: "dev/console", Mode: cpioTypeChar | 0o600, RdevMajor: 5, RdevMinor: 1},
				{Name: "dev", Mode: cpioTypeDir | 0o755},
				{Name: "bin", Mode: cpioTypeSymlink | 0o777, Data: []byte("usr/bin")},
			},
			want: []string{"bin", "dev", "dev/console"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := writeCPIO(&buf, tt.entries); err != nil {
				t.Fatalf("writeCPIO: %v", err)
			}
			got, err := readCPIO(buf.Bytes())
			if err != nil {
				t.Fatalf("reading back: %v", err)
			}
			if last := got[len(got)-1]; last.name != cpioTrailer || last.ino != 0 {
				t.Fatalf("last entry: got %q ino %d, want %q ino 0", last.name, last.ino, cpioTrailer)
			}
			got = got[:len(got)-1]
			var names []string
			for _, e := range got {
				names = append(names, e.name)
			}
			if !slices.Equal(names, tt.want) {
				t.Fatalf("names: got %q, want %q", names, tt.want)
			}
			byName := map[string]cpioEntry{}
			for _, e := range tt.entries {
				byName[e.Name] = e
			}
			for i, g := range got {
				w := byName[g.name]
				if g.ino != uint32(i+1) {
					t.Errorf("%s: inode got %d, want %d", g.name, g.ino, i+1)
				}
				if g.mode != w.Mode {
					t.Errorf("%s: mode got %o, want %o", g.name, g.mode, w.Mode)
				}
				if !bytes.Equal(g.data, w.Data) {
					t.Errorf("%s: data got %q, want %q", g.name, g.data, w.Data)
				}
				if g.uid != 0 || g.gid != 0 || g.mtime != 0 {
					t.Errorf("%s: uid/gid/mtime got %d/%d/%d, want 0/0/0", g.name, g.uid, g.gid, g.mtime)
				}
				if g.rdevMajor != w.RdevMajor || g.rdevMinor != w.RdevMinor {
					t.Errorf("%s: rdev got %d:%d, want %d:%d", g.name, g.rdevMajor, g.rdevMinor, w.RdevMajor, w.RdevMinor)
				}
				wantLinks := uint32(1)
				if w.Mode&0o170000 == cpioTypeDir {
					wantLinks = 2
				}
				if g.nlink != wantLinks {
					t.Errorf("%s: nlink got %d, want %d", g.name, g.nlink, wantLinks)
				}
			}
		})
	}
}

func TestWriteCPIORejects(t *testing.T) {
	tests := []struct {
		name    string
		entries []cpioEntry
		want    string
	}{
		{"absolute name", []cpioEntry{{Name: "/init"}}, "invalid"},
		{"empty name", []cpioEntry{{Name: ""}}, "invalid"},
		{"dot-dot", []cpioEntry{{Name: "../x"}}, "invalid"},
		{"unclean", []cpioEntry{{Name: "lib//x"}}, "invalid"},
		{"trailer name", []cpioEntry{{Name: cpioTrailer}}, "invalid"},
		{"duplicate", []cpioEntry{{Name: "a"}, {Name: "a"}}, "twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := writeCPIO(&bytes.Buffer{}, tt.entries)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// initramfsFixture writes an agent and a kernel dir and loads the kernel.
func initramfsFixture(t *testing.T) (agent string, k *Kernel) {
	t.Helper()
	agent = filepath.Join(t.TempDir(), "agent")
	mustWrite(t, agent, string(fakeELF(t, elf.EM_X86_64, false)), 0o755)
	k, err := LoadKernel(writeKernelDir(t, defaultKernelFixture(t)))
	if err != nil {
		t.Fatalf("LoadKernel: %v", err)
	}
	return agent, k
}

func TestWriteInitramfsContent(t *testing.T) {
	agentPath, k := initramfsFixture(t)
	var buf bytes.Buffer
	if err := WriteInitramfs(&buf, agentPath, k); err != nil {
		t.Fatalf("WriteInitramfs: %v", err)
	}
	entries, err := readCPIO(buf.Bytes())
	if err != nil {
		t.Fatalf("reading back: %v", err)
	}
	agent, _ := os.ReadFile(agentPath)
	want := []struct {
		name string
		mode uint32
		data string
	}{
		{"dev", cpioTypeDir | 0o755, ""},
		{"dev/console", cpioTypeChar | 0o600, ""},
		{"init", cpioTypeRegular | 0o755, string(agent)},
		{"lib", cpioTypeDir | 0o755, ""},
		{"lib/modules", cpioTypeDir | 0o755, ""},
		{"lib/modules/modules.list", cpioTypeRegular | 0o644, "virtio_ring.ko\nvirtio.ko\noverlay.ko\n"},
		{"lib/modules/overlay.ko", cpioTypeRegular | 0o644, "overlay"},
		{"lib/modules/virtio.ko", cpioTypeRegular | 0o644, "virtio"},
		{"lib/modules/virtio_ring.ko", cpioTypeRegular | 0o644, "ring"},
		{"mnt", cpioTypeDir | 0o755, ""},
		{"newroot", cpioTypeDir | 0o755, ""},
		{"proc", cpioTypeDir | 0o755, ""},
		{"sys", cpioTypeDir | 0o755, ""},
		{cpioTrailer, 0, ""},
	}
	if len(entries) != len(want) {
		var names []string
		for _, e := range entries {
			names = append(names, e.name)
		}
		t.Fatalf("got %d entries %q, want %d", len(entries), names, len(want))
	}
	for i, w := range want {
		t.Run(w.name, func(t *testing.T) {
			g := entries[i]
			if g.name != w.name || g.mode != w.mode || string(g.data) != w.data {
				t.Fatalf("got %q mode %o %d bytes, want %q mode %o %d bytes", g.name, g.mode, len(g.data), w.name, w.mode, len(w.data))
			}
		})
	}
	if c := entries[1]; c.rdevMajor != 5 || c.rdevMinor != 1 {
		t.Errorf("dev/console: got %d:%d, want 5:1", c.rdevMajor, c.rdevMinor)
	}
}

func TestWriteInitramfsReproducible(t *testing.T) {
	render := func(t *testing.T, touch func(dir, agent string)) []byte {
		agent, k := initramfsFixture(t)
		touch(k.Dir, agent)
		var buf bytes.Buffer
		if err := WriteInitramfs(&buf, agent, k); err != nil {
			t.Fatalf("WriteInitramfs: %v", err)
		}
		return buf.Bytes()
	}
	base := render(t, func(string, string) {})
	tests := []struct {
		name  string
		touch func(dir, agent string)
		same  bool
	}{
		{"same inputs", func(string, string) {}, true},
		{"other mtimes", func(dir, agent string) {
			old := time.Unix(1e9, 0)
			for _, p := range []string{agent, filepath.Join(dir, "modules", "virtio.ko"), filepath.Join(dir, "modules")} {
				if err := os.Chtimes(p, old, old); err != nil {
					t.Fatal(err)
				}
			}
		}, true},
		{"other file modes", func(dir, agent string) {
			if err := os.Chmod(agent, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(filepath.Join(dir, "modules", "overlay.ko"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"module content changed", func(dir, _ string) {
			mustWrite(t, filepath.Join(dir, "modules", "virtio.ko"), "virtio2", 0o644)
		}, false},
		{"agent changed", func(_, agent string) {
			mustWrite(t, agent, string(fakeELF(t, elf.EM_X86_64, false))+"v2", 0o755)
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := render(t, tt.touch)
			if bytes.Equal(got, base) != tt.same {
				t.Fatalf("identical output: got %v, want %v", bytes.Equal(got, base), tt.same)
			}
		})
	}
}

func TestReadAgentRejects(t *testing.T) {
	tests := []struct {
		name    string
		content []byte
		want    string
	}{
		{"not an ELF", []byte("#!/bin/sh\necho hi\n"), "not an ELF"},
		{"dynamically linked", fakeELF(t, elf.EM_X86_64, true), "CGO_ENABLED=0"},
		{"other architecture", fakeELF(t, elf.EM_AARCH64, false), "not an x86-64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "agent")
			mustWrite(t, p, string(tt.content), 0o755)
			_, err := readAgent(p)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestCacheInitramfs(t *testing.T) {
	agent, k := initramfsFixture(t)
	c := newTestCache(t, "", nil)
	ctx := context.Background()
	first, err := c.Initramfs(ctx, agent, k)
	if err != nil {
		t.Fatalf("Initramfs: %v", err)
	}
	content, err := os.ReadFile(first)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(content)
	if want := filepath.Join(c.Dir(), "initramfs", hex.EncodeToString(sum[:])+".cpio"); first != want {
		t.Errorf("path: got %s, want %s", first, want)
	}
	if fi, err := os.Stat(first); err != nil || fi.Mode().Perm() != 0o444 {
		t.Errorf("mode: got %v (%v), want -r--r--r--", fi.Mode(), err)
	}
	again, err := c.Initramfs(ctx, agent, k)
	if err != nil || again != first {
		t.Errorf("second call: got %s, %v, want %s", again, err, first)
	}
	mustWrite(t, agent, string(fakeELF(t, elf.EM_X86_64, false))+"v2", 0o755)
	changed, err := c.Initramfs(ctx, agent, k)
	if err != nil || changed == first {
		t.Errorf("after the agent changed: got %s, %v, want a new path", changed, err)
	}
	if left, _ := os.ReadDir(filepath.Join(c.Dir(), "tmp")); len(left) != 0 {
		t.Errorf("tmp: got %d leftovers, want 0", len(left))
	}
}

func TestNewSweepsStaleWork(t *testing.T) {
	dir := t.TempDir()
	tmp := filepath.Join(dir, "tmp")
	mustWrite(t, filepath.Join(tmp, "export-old", "usr", "bin", "x"), "x", 0o644)
	mustWrite(t, filepath.Join(tmp, "rootfs-old.ext4"), "x", 0o644)
	mustWrite(t, filepath.Join(tmp, "rootfs-fresh.ext4"), "x", 0o644)
	old := time.Now().Add(-2 * staleAfter)
	for _, p := range []string{"export-old", "rootfs-old.ext4"} {
		if err := os.Chtimes(filepath.Join(tmp, p), old, old); err != nil {
			t.Fatal(err)
		}
	}
	newTestCache(t, dir, nil)
	left, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range left {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"rootfs-fresh.ext4"}) {
		t.Errorf("tmp after New: got %q, want [rootfs-fresh.ext4]", names)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no dir", Config{}, "no directory"},
		{"negative limit", Config{Dir: "x", CodeSizeLimit: -1}, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got error %v, want one containing %q", err, tt.want)
			}
		})
	}
}
