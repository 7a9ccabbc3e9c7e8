package qemu

import (
	"regexp"
	"slices"
	"strings"
	"testing"
)

// flagValues returns the values that follow each occurrence of flag.
func flagValues(args []string, flag string) []string {
	var out []string
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			out = append(out, args[i+1])
		}
	}
	return out
}

func TestBuildQEMUArgsFull(t *testing.T) {
	got := buildQEMUArgs(qemuArgs{
		Name: "hello", Accel: AccelTCG, MemoryMiB: 256, CPUs: 1,
		CmdLine: kernelCmdLine(2596144, ""),
		RootFS:  "/img/python3.ext4", Code: "/img/code.ext4", Config: "/s/vms/u1/config.img",
		MAC: "02:00:00:00:00:01",
	})
	want := []string{
		"-M", "microvm,x-option-roms=off,isa-serial=on,rtc=on", "-accel", "tcg", "-cpu", "max",
		"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
		"-name", "guest=hello", "-m", "256", "-smp", "1",
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-kernel", "/proc/self/fd/3", "-initrd", "/proc/self/fd/4",
		"-append", "console=ttyS0 reboot=t panic=-1 quiet tsc_early_khz=2596144 tsc=reliable cryptomgr.notests",
		"-add-fd", "fd=5,set=1,opaque=root:/img/python3.ext4",
		"-drive", "file=/dev/fdset/1,format=raw,if=none,id=root,readonly=on", "-device", "virtio-blk-device,drive=root",
		"-add-fd", "fd=6,set=2,opaque=code:/img/code.ext4",
		"-drive", "file=/dev/fdset/2,format=raw,if=none,id=code,readonly=on", "-device", "virtio-blk-device,drive=code",
		"-add-fd", "fd=7,set=3,opaque=config:/s/vms/u1/config.img",
		"-drive", "file=/dev/fdset/3,format=raw,if=none,id=config,readonly=on", "-device", "virtio-blk-device,drive=config",
		"-netdev", "user,id=n0,restrict=on,ipv6=off,hostfwd=tcp:127.0.0.1:0-:8080,hostfwd=tcp:127.0.0.1:0-:8081",
		"-device", "virtio-net-device,netdev=n0,mac=02:00:00:00:00:01",
		"-chardev", "stdio,id=con,signal=off", "-serial", "chardev:con",
		"-chardev", "socket,id=qmp,fd=8,server=on,wait=off", "-mon", "chardev=qmp,mode=control",
	}
	if !slices.Equal(got, want) {
		t.Errorf("buildQEMUArgs:\ngot  %q\nwant %q", got, want)
	}
	if n := extraFileCount; n != 6 {
		t.Errorf("extraFileCount: got %d, want 6 (fds 3-8)", n)
	}
}

func TestBuildQEMUArgs(t *testing.T) {
	base := qemuArgs{
		Name: "fn", Accel: AccelTCG, MemoryMiB: 256, CPUs: 1, CmdLine: "console=ttyS0",
		RootFS: "/r.ext4", Code: "/c.ext4", Config: "/d/config.img", MAC: "02:00:00:00:00:01",
	}
	tests := []struct {
		name   string
		modify func(a *qemuArgs)
		want   map[string][]string // flag -> all its values, in order
	}{
		{
			name:   "tcg",
			modify: func(a *qemuArgs) {},
			want:   map[string][]string{"-accel": {"tcg"}, "-cpu": {"max"}},
		},
		{
			name:   "kvm",
			modify: func(a *qemuArgs) { a.Accel = AccelKVM },
			want:   map[string][]string{"-accel": {"kvm"}, "-cpu": {"host"}},
		},
		{
			name:   "tcg translation cache sized",
			modify: func(a *qemuArgs) { a.TBSizeMiB = 64 },
			want:   map[string][]string{"-accel": {"tcg,tb-size=64"}},
		},
		{
			name:   "tb-size is for tcg only",
			modify: func(a *qemuArgs) { a.Accel, a.TBSizeMiB = AccelKVM, 64 },
			want:   map[string][]string{"-accel": {"kvm"}},
		},
		{
			name:   "snapshot's vm: RAM in a shared file from a descriptor",
			modify: func(a *qemuArgs) { a.Memory = &memoryFile{FD: 9, Shared: true} },
			want: map[string][]string{
				"-M":        {"microvm,x-option-roms=off,isa-serial=on,rtc=on,memory-backend=mem"},
				"-object":   {"memory-backend-file,id=mem,size=256M,mem-path=/proc/self/fd/9,share=on,prealloc=off"},
				"-incoming": nil,
			},
		},
		{
			name:   "restore: RAM file private, state incoming later",
			modify: func(a *qemuArgs) { a.Memory, a.Incoming = &memoryFile{FD: 9}, true },
			want: map[string][]string{
				"-object":   {"memory-backend-file,id=mem,size=256M,mem-path=/proc/self/fd/9,share=off,prealloc=off"},
				"-incoming": {"defer"},
			},
		},
		{
			name:   "a boot has no memory backend",
			modify: func(a *qemuArgs) {},
			want:   map[string][]string{"-object": nil, "-incoming": nil, "-M": {"microvm,x-option-roms=off,isa-serial=on,rtc=on"}},
		},
		{
			name:   "memory and cpus",
			modify: func(a *qemuArgs) { a.MemoryMiB, a.CPUs = 1024, 4 },
			want:   map[string][]string{"-m": {"1024"}, "-smp": {"4"}},
		},
		{
			name:   "egress off: restricted, both agent ports forwarded",
			modify: func(a *qemuArgs) {},
			want:   map[string][]string{"-netdev": {"user,id=n0,restrict=on,ipv6=off,hostfwd=tcp:127.0.0.1:0-:8080,hostfwd=tcp:127.0.0.1:0-:8081"}},
		},
		{
			name:   "egress on: unrestricted, still IPv4 only",
			modify: func(a *qemuArgs) { a.Egress = true },
			want:   map[string][]string{"-netdev": {"user,id=n0,restrict=off,ipv6=off,hostfwd=tcp:127.0.0.1:0-:8080,hostfwd=tcp:127.0.0.1:0-:8081"}},
		},
		{
			name:   "cmdline append",
			modify: func(a *qemuArgs) { a.CmdLine = kernelCmdLine(0, "  faas.debug=1 loglevel=7 ") },
			want: map[string][]string{"-append": {
				"console=ttyS0 reboot=t panic=-1 quiet tsc=reliable cryptomgr.notests faas.debug=1 loglevel=7"}},
		},
		{
			name: "commas in paths are doubled",
			modify: func(a *qemuArgs) {
				a.RootFS, a.Config, a.Name = "/img/a,b.ext4", "/s,t/vm/config.img", "x,y"
			},
			want: map[string][]string{
				"-add-fd": {
					"fd=5,set=1,opaque=root:/img/a,,b.ext4",
					"fd=6,set=2,opaque=code:/c.ext4",
					"fd=7,set=3,opaque=config:/s,,t/vm/config.img",
				},
				"-name": {"guest=x,,y"},
			},
		},
		{
			name:   "every disk read-only from a descriptor, virtio-mmio devices",
			modify: func(a *qemuArgs) {},
			want: map[string][]string{
				"-drive": {
					"file=/dev/fdset/1,format=raw,if=none,id=root,readonly=on",
					"file=/dev/fdset/2,format=raw,if=none,id=code,readonly=on",
					"file=/dev/fdset/3,format=raw,if=none,id=config,readonly=on",
				},
				"-device": {
					"virtio-blk-device,drive=root", "virtio-blk-device,drive=code", "virtio-blk-device,drive=config",
					"virtio-net-device,netdev=n0,mac=02:00:00:00:00:01",
				},
			},
		},
		{
			name:   "sandboxed, no pid file or path QEMU would open itself",
			modify: func(a *qemuArgs) {},
			want: map[string][]string{
				"-sandbox": {"on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"},
				"-pidfile": nil, "-qmp": nil,
				"-kernel": {"/proc/self/fd/3"}, "-initrd": {"/proc/self/fd/4"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := base
			tt.modify(&a)
			args := buildQEMUArgs(a)
			for flag, want := range tt.want {
				if got := flagValues(args, flag); !slices.Equal(got, want) {
					t.Errorf("%s: got %q, want %q", flag, got, want)
				}
			}
			for _, d := range flagValues(args, "-drive") {
				if !strings.HasSuffix(d, ",readonly=on") {
					t.Errorf("drive %q: got a writable disk, want readonly=on", d)
				}
			}
		})
	}
}

func TestKernelCmdLine(t *testing.T) {
	tests := []struct {
		name  string
		tsc   int
		extra string
		want  string
	}{
		{"tsc known", 2596144, "", "console=ttyS0 reboot=t panic=-1 quiet tsc_early_khz=2596144 tsc=reliable cryptomgr.notests"},
		{"tsc unknown", 0, "", "console=ttyS0 reboot=t panic=-1 quiet tsc=reliable cryptomgr.notests"},
		{"extra appended last", 1000, "faas.probe=1", "console=ttyS0 reboot=t panic=-1 quiet tsc_early_khz=1000 tsc=reliable cryptomgr.notests faas.probe=1"},
		{"blank extra ignored", 0, " \t", "console=ttyS0 reboot=t panic=-1 quiet tsc=reliable cryptomgr.notests"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := kernelCmdLine(tt.tsc, tt.extra); got != tt.want {
				t.Errorf("kernelCmdLine(%d, %q): got %q, want %q", tt.tsc, tt.extra, got, tt.want)
			}
		})
	}
}

func TestProbeArgs(t *testing.T) {
	args := probeArgs(2000000)
	for flag, want := range map[string][]string{
		"-accel":   {"kvm"},
		"-cpu":     {"host"},
		"-sandbox": {"on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"},
		"-kernel":  {"/proc/self/fd/3"},
		"-initrd":  {"/proc/self/fd/4"},
		"-append":  {"console=ttyS0 reboot=t panic=-1 quiet tsc_early_khz=2000000 tsc=reliable cryptomgr.notests faas.probe=1"},
		"-serial":  {"chardev:con"},
		"-drive":   nil,
		"-netdev":  nil,
	} {
		if got := flagValues(args, flag); !slices.Equal(got, want) {
			t.Errorf("%s: got %q, want %q", flag, got, want)
		}
	}
	if !slices.Contains(args, "-no-reboot") {
		t.Errorf("probe args %q: got no -no-reboot, want it (the probe guest's reboot must end QEMU)", args)
	}
}

func TestMACFromUID(t *testing.T) {
	format := regexp.MustCompile(`^([0-9a-f]{2}:){5}[0-9a-f]{2}$`)
	uids := []string{
		"408f2f15-5581-40a7-beac-f073c9b3e9e1",
		"408f2f15-5581-40a7-beac-f073c9b3e9e2",
		"a",
		"",
	}
	seen := map[string]string{}
	for _, uid := range uids {
		t.Run(uid, func(t *testing.T) {
			mac := macFromUID(uid)
			if !format.MatchString(mac) {
				t.Fatalf("macFromUID(%q): got %q, want six lowercase hex octets", uid, mac)
			}
			if again := macFromUID(uid); again != mac {
				t.Errorf("macFromUID(%q): got %q then %q, want the same twice", uid, mac, again)
			}
			// First octet 0x02: locally administered (bit 1 set), unicast (bit 0 clear).
			if !strings.HasPrefix(mac, "02:") {
				t.Errorf("macFromUID(%q): got %q, want a locally administered unicast address (02:...)", uid, mac)
			}
			if other, dup := seen[mac]; dup {
				t.Errorf("macFromUID(%q) = %q, the same as for %q", uid, mac, other)
			}
			seen[mac] = uid
		})
	}
	// Pinned: a change would give every existing VM a new MAC.
	if got, want := macFromUID("408f2f15-5581-40a7-beac-f073c9b3e9e1"), "02:41:49:cc:2d:97"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
