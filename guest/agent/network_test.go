package main

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestParseCIDR(t *testing.T) {
	tests := []struct {
		cidr     string
		wantAddr [4]byte
		wantMask [4]byte
		wantErr  string
	}{
		{cidr: "10.0.2.15/24", wantAddr: [4]byte{10, 0, 2, 15}, wantMask: [4]byte{255, 255, 255, 0}},
		{cidr: "127.0.0.1/8", wantAddr: [4]byte{127, 0, 0, 1}, wantMask: [4]byte{255, 0, 0, 0}},
		{cidr: "192.168.7.9/20", wantAddr: [4]byte{192, 168, 7, 9}, wantMask: [4]byte{255, 255, 240, 0}},
		{cidr: "172.16.0.5/31", wantAddr: [4]byte{172, 16, 0, 5}, wantMask: [4]byte{255, 255, 255, 254}},
		{cidr: "10.1.2.3/32", wantAddr: [4]byte{10, 1, 2, 3}, wantMask: [4]byte{255, 255, 255, 255}},
		{cidr: "0.0.0.0/0", wantAddr: [4]byte{}, wantMask: [4]byte{}},
		{cidr: "10.0.2.15", wantErr: "parsing address"},
		{cidr: "10.0.2.15/33", wantErr: "parsing address"},
		{cidr: "fd00::1/64", wantErr: "not IPv4"},
		{cidr: "", wantErr: "parsing address"},
	}
	for _, tt := range tests {
		t.Run(tt.cidr, func(t *testing.T) {
			addr, mask, err := parseCIDR(tt.cidr)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseCIDR(%q): got error %v, want one containing %q", tt.cidr, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseCIDR(%q): %v", tt.cidr, err)
			}
			if addr != tt.wantAddr || mask != tt.wantMask {
				t.Errorf("parseCIDR(%q): got %v %v, want %v %v", tt.cidr, addr, mask, tt.wantAddr, tt.wantMask)
			}
		})
	}
}

func TestRtentryMatchesTheKernelLayout(t *testing.T) {
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		t.Skipf("layout checked for 64-bit guests; this is %s", runtime.GOARCH)
	}
	// struct rtentry on LP64 Linux: 120 bytes, rt_flags at 56, rt_dev at 88.
	var rt rtentry
	if got := unsafe.Sizeof(rt); got != 120 {
		t.Errorf("sizeof rtentry: got %d, want 120", got)
	}
	if got := unsafe.Offsetof(rt.flags); got != 56 {
		t.Errorf("offset of rt_flags: got %d, want 56", got)
	}
	if got := unsafe.Offsetof(rt.dev); got != 88 {
		t.Errorf("offset of rt_dev: got %d, want 88", got)
	}
}

func TestReplaceFileReplacesSymlinks(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "resolv.conf")
	if err := os.Symlink("../run/systemd/resolve/stub-resolv.conf", link); err != nil {
		t.Fatal(err)
	}
	want := resolvConf([4]byte{10, 0, 2, 3})
	if err := replaceFile(link, []byte(want)); err != nil {
		t.Fatalf("replaceFile: %v", err)
	}
	fi, err := os.Lstat(link)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.Mode().IsRegular() {
		t.Errorf("resolv.conf mode: got %s, want a regular file", fi.Mode())
	}
	if got, _ := os.ReadFile(link); string(got) != "nameserver 10.0.2.3\n" {
		t.Errorf("resolv.conf: got %q, want %q", got, "nameserver 10.0.2.3\n")
	}
}

// TestConfigureInterfaceInOwnNetns runs the real ioctls against the
// loopback device of a network namespace the test creates (needs root).
func TestConfigureInterfaceInOwnNetns(t *testing.T) {
	type result struct {
		addrs  []string
		up     bool
		routes string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		// This thread moves to a new network namespace and never comes back:
		// exiting the goroutine while locked retires the thread.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			done <- result{err: err}
			return
		}
		var r result
		if r.err = configureInterface("lo", [4]byte{10, 9, 0, 1}, [4]byte{255, 255, 255, 0}); r.err != nil {
			done <- r
			return
		}
		if r.err = addDefaultRoute([4]byte{10, 9, 0, 2}, "lo"); r.err != nil {
			done <- r
			return
		}
		// Adding it twice is not an error.
		if r.err = addDefaultRoute([4]byte{10, 9, 0, 2}, "lo"); r.err != nil {
			done <- r
			return
		}
		ifc, err := net.InterfaceByName("lo")
		if err != nil {
			r.err = err
			done <- r
			return
		}
		r.up = ifc.Flags&net.FlagUp != 0
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			r.addrs = append(r.addrs, a.String())
		}
		routes, err := os.ReadFile("/proc/thread-self/net/route")
		r.routes, r.err = string(routes), err
		done <- r
	}()
	r := <-done
	if errors.Is(r.err, unix.EPERM) {
		t.Skip("creating a network namespace needs root")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !r.up {
		t.Errorf("lo: got down, want up")
	}
	found := false
	for _, a := range r.addrs {
		found = found || a == "10.9.0.1/24"
	}
	if !found {
		t.Errorf("lo addresses: got %v, want 10.9.0.1/24 among them", r.addrs)
	}
	// /proc/net/route: Iface Destination Gateway Flags ..., addresses in
	// little-endian hex; 10.9.0.2 is 0200090A, flags 0003 = UP|GATEWAY.
	if !strings.Contains(r.routes, "lo\t00000000\t0200090A\t0003") {
		t.Errorf("routes: got\n%s\nwant a default route via 10.9.0.2 on lo", r.routes)
	}
}
