package main

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/faasvm/appliance/guest/protocol"
)

// superblock returns a synthetic 2 KiB disk head with an ext4 magic and label.
func superblock(magic uint16, label string) []byte {
	b := make([]byte, 2048)
	binary.LittleEndian.PutUint16(b[ext4MagicOffset:], magic)
	copy(b[ext4LabelOffset:ext4LabelOffset+ext4LabelSize], label)
	return b
}

func configDisk(t *testing.T) []byte {
	t.Helper()
	b, err := protocol.EncodeDisk(&protocol.Config{
		Name: "fn", Secret: "s", ControlSecret: "c", Mode: protocol.ModeExec, Command: []string{"true"}, Timeout: protocol.Duration(time.Second),
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestExt4Label(t *testing.T) {
	full := superblock(ext4Magic, "exactly16bytes!!")
	tests := []struct {
		name      string
		head      []byte
		wantLabel string
		wantOK    bool
	}{
		{name: "rootfs label", head: superblock(ext4Magic, protocol.RootFSLabel), wantLabel: protocol.RootFSLabel, wantOK: true},
		{name: "code label", head: superblock(ext4Magic, protocol.CodeLabel), wantLabel: protocol.CodeLabel, wantOK: true},
		{name: "label using all 16 bytes", head: full, wantLabel: "exactly16bytes!!", wantOK: true},
		{name: "no label", head: superblock(ext4Magic, ""), wantLabel: "", wantOK: true},
		{name: "wrong magic", head: superblock(0x1234, protocol.RootFSLabel), wantOK: false},
		{name: "magic byte-swapped", head: superblock(0x53EF, protocol.RootFSLabel), wantOK: false},
		{name: "too short", head: superblock(ext4Magic, protocol.RootFSLabel)[:1500], wantOK: false},
		{name: "zeros", head: make([]byte, 4096), wantOK: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			label, ok := ext4Label(tt.head)
			if label != tt.wantLabel || ok != tt.wantOK {
				t.Errorf("ext4Label: got %q %v, want %q %v", label, ok, tt.wantLabel, tt.wantOK)
			}
		})
	}
}

func TestIdentifyDisk(t *testing.T) {
	tests := []struct {
		name string
		head []byte
		want diskKind
	}{
		{name: "rootfs", head: superblock(ext4Magic, protocol.RootFSLabel), want: diskRoot},
		{name: "code", head: superblock(ext4Magic, protocol.CodeLabel), want: diskCode},
		{name: "config", head: configDisk(t), want: diskConfig},
		{name: "other ext4", head: superblock(ext4Magic, "data"), want: diskUnknown},
		{name: "label prefix is not the label", head: superblock(ext4Magic, protocol.RootFSLabel+"2"), want: diskUnknown},
		{name: "empty", head: nil, want: diskUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := identifyDisk(tt.head); got != tt.want {
				t.Errorf("identifyDisk: got %d, want %d", got, tt.want)
			}
		})
	}
}

// fakeDisks lays out sysBlock and devDir with one regular file per disk.
func fakeDisks(t *testing.T, contents map[string][]byte) (sysBlock, devDir string) {
	t.Helper()
	sysBlock, devDir = t.TempDir(), t.TempDir()
	for name, b := range contents {
		if err := os.Mkdir(filepath.Join(sysBlock, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if b == nil {
			continue // listed in sysfs, no device node yet
		}
		if err := os.WriteFile(filepath.Join(devDir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return sysBlock, devDir
}

func TestWaitForDisks(t *testing.T) {
	cfg := configDisk(t)
	tests := []struct {
		name       string
		disks      map[string][]byte
		want       disks // device names relative to devDir
		wantErr    string
		wantConfig bool
	}{
		{
			name: "found by content in any order",
			disks: map[string][]byte{
				"vda": cfg, "vdb": superblock(ext4Magic, protocol.CodeLabel), "vdc": superblock(ext4Magic, protocol.RootFSLabel),
				"sda": superblock(ext4Magic, protocol.RootFSLabel), // not virtio: ignored
			},
			want:       disks{root: "vdc", code: "vdb", config: "vda"},
			wantConfig: true,
		},
		{
			name:    "missing code disk",
			disks:   map[string][]byte{"vda": superblock(ext4Magic, protocol.RootFSLabel), "vdb": cfg, "vdc": nil},
			wantErr: "missing code (ext4 label faas-code) (virtio disks present: [vda vdb vdc])",
		},
		{
			name: "two rootfs disks",
			disks: map[string][]byte{
				"vda": superblock(ext4Magic, protocol.RootFSLabel), "vdb": superblock(ext4Magic, protocol.RootFSLabel),
			},
			wantErr: "both look like the same disk",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sysBlock, devDir := fakeDisks(t, tt.disks)
			ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
			defer cancel()
			got, err := waitForDisks(ctx, sysBlock, devDir, time.Millisecond)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("waitForDisks: got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("waitForDisks: %v", err)
			}
			want := disks{root: filepath.Join(devDir, tt.want.root), code: filepath.Join(devDir, tt.want.code), config: filepath.Join(devDir, tt.want.config)}
			if got.root != want.root || got.code != want.code || got.config != want.config {
				t.Errorf("disks: got %+v, want %+v", got, want)
			}
			if tt.wantConfig {
				if _, err := protocol.DecodeDisk(got.configData); err != nil {
					t.Errorf("config data does not decode: %v", err)
				}
			}
		})
	}
}

func TestWaitForDisksSeesLateDevice(t *testing.T) {
	sysBlock, devDir := fakeDisks(t, map[string][]byte{
		"vda": superblock(ext4Magic, protocol.RootFSLabel), "vdb": configDisk(t), "vdc": nil,
	})
	found := make(chan error, 1)
	go func() {
		_, err := waitForDisks(t.Context(), sysBlock, devDir, time.Millisecond)
		found <- err
	}()
	// The code disk's node appears after the scan has begun.
	if err := os.WriteFile(filepath.Join(devDir, "vdc"), superblock(ext4Magic, protocol.CodeLabel), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-found:
		if err != nil {
			t.Fatalf("waitForDisks: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waitForDisks did not notice the late disk")
	}
}

func TestExt4LabelOfRealImage(t *testing.T) {
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Skip("mkfs.ext4 not installed; the synthetic superblocks above cover the parser")
	}
	img := filepath.Join(t.TempDir(), "code.ext4")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 4<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-F", "-L", protocol.CodeLabel, img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	head, err := readHead(img)
	if err != nil {
		t.Fatal(err)
	}
	if got := identifyDisk(head); got != diskCode {
		t.Errorf("identifyDisk of a mkfs.ext4 -L %s image: got %d, want %d (code)", protocol.CodeLabel, got, diskCode)
	}
}

func TestParseModuleList(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{name: "one per line", in: "virtio.ko\nvirtio_ring.ko\n", want: []string{"virtio.ko", "virtio_ring.ko"}},
		{name: "blank lines, comments, spaces, CRLF", in: "# load order\n\n virtio.ko \r\nvirtio_blk.ko\r\n# end", want: []string{"virtio.ko", "virtio_blk.ko"}},
		{name: "no trailing newline", in: "overlay.ko", want: []string{"overlay.ko"}},
		{name: "empty", in: "", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseModuleList(tt.in); !slices.Equal(got, tt.want) {
				t.Errorf("parseModuleList(%q): got %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestLoadModules(t *testing.T) {
	// deps: a module loads only once its dependencies have.
	deps := map[string][]string{
		"virtio.ko":        nil,
		"virtio_ring.ko":   nil,
		"virtio_mmio.ko":   {"virtio.ko", "virtio_ring.ko"},
		"virtio_blk.ko":    {"virtio.ko", "virtio_ring.ko"},
		"failover.ko":      nil,
		"net_failover.ko":  {"failover.ko"},
		"virtio_net.ko":    {"net_failover.ko", "virtio.ko", "virtio_ring.ko"},
		"builtin_dup.ko":   nil,
		"needs_missing.ko": {"not_listed.ko"},
	}
	tests := []struct {
		name       string
		list       []string
		preloaded  []string
		wantPasses int
		wantErr    string
	}{
		{name: "in order", list: []string{"virtio.ko", "virtio_ring.ko", "virtio_mmio.ko", "virtio_blk.ko"}, wantPasses: 1},
		{name: "reverse order", list: []string{"virtio_net.ko", "net_failover.ko", "failover.ko", "virtio_ring.ko", "virtio.ko"}, wantPasses: 3},
		{name: "already loaded is fine", list: []string{"builtin_dup.ko", "virtio.ko"}, preloaded: []string{"builtin_dup.ko"}, wantPasses: 1},
		{name: "unsatisfiable dependency", list: []string{"virtio.ko", "needs_missing.ko"}, wantPasses: 2, wantErr: "1 of 2 modules did not load: module needs_missing.ko: no such file or directory"},
		{name: "empty list", list: nil, wantPasses: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			loaded := map[string]bool{}
			for _, m := range tt.preloaded {
				loaded[m] = true
			}
			load := func(name string) error {
				if loaded[name] {
					return unix.EEXIST
				}
				for _, d := range deps[name] {
					if !loaded[d] {
						return unix.ENOENT // what finit_module says for an unknown symbol
					}
				}
				loaded[name] = true
				return nil
			}
			passes, err := loadModules(tt.list, load)
			if passes != tt.wantPasses {
				t.Errorf("passes: got %d, want %d", passes, tt.wantPasses)
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("loadModules: %v", err)
				}
				for _, m := range tt.list {
					if !loaded[m] {
						t.Errorf("module %s: not loaded, want loaded", m)
					}
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("loadModules: got error %v, want one containing %q", err, tt.wantErr)
			}
			if !errors.Is(err, unix.ENOENT) {
				t.Errorf("loadModules error %v does not wrap the loader's ENOENT", err)
			}
		})
	}
}

func TestCmdlineHas(t *testing.T) {
	tests := []struct {
		cmdline string
		want    bool
	}{
		{cmdline: "console=ttyS0 reboot=t panic=-1 quiet faas.probe=1\n", want: true},
		{cmdline: "faas.probe=1", want: true},
		{cmdline: "console=ttyS0 faas.probe=10", want: false},
		{cmdline: "console=ttyS0 xfaas.probe=1", want: false},
		{cmdline: "console=ttyS0 quiet\n", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.cmdline, func(t *testing.T) {
			if got := cmdlineHas(tt.cmdline, probeFlag); got != tt.want {
				t.Errorf("cmdlineHas(%q): got %v, want %v", tt.cmdline, got, tt.want)
			}
		})
	}
}

func TestWithDefaultEnv(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{name: "kernel env gets PATH and LANG", in: []string{"HOME=/", "TERM=linux"},
			want: []string{"HOME=/", "TERM=linux", "PATH=" + defaultPath, "LANG=C.UTF-8"}},
		{name: "existing values stay", in: []string{"PATH=/opt/bin", "LANG=de_DE.UTF-8"},
			want: []string{"PATH=/opt/bin", "LANG=de_DE.UTF-8"}},
		{name: "PATHEXT is not PATH", in: []string{"PATHEXT=x"},
			want: []string{"PATHEXT=x", "PATH=" + defaultPath, "LANG=C.UTF-8"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := withDefaultEnv(tt.in); !slices.Equal(got, tt.want) {
				t.Errorf("withDefaultEnv(%q): got %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestReadConfigFile(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "config.img")
	if err := os.WriteFile(disk, configDisk(t), 0o644); err != nil {
		t.Fatal(err)
	}
	js := filepath.Join(dir, "config.json")
	if err := os.WriteFile(js, []byte(`{"name":"j","secret":"s","controlSecret":"c","mode":"exec","command":["true"],"timeout":"2s"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"name":"j","mode":"exec"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		path     string
		wantName string
		wantErr  string
	}{
		{name: "config disk image", path: disk, wantName: "fn"},
		{name: "json file", path: js, wantName: "j"},
		{name: "invalid config", path: bad, wantErr: "secret is empty"},
		{name: "missing file", path: filepath.Join(dir, "nope"), wantErr: "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := readConfigFile(tt.path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("readConfigFile: got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("readConfigFile: %v", err)
			}
			if cfg.Name != tt.wantName {
				t.Errorf("name: got %q, want %q", cfg.Name, tt.wantName)
			}
		})
	}
}
