package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/faasvm/appliance/guest/protocol"
)

// The guest's network is set up with ioctls only: the runtime rootfs may
// have no iproute2, and the agent runs nothing external.

const guestInterface = "eth0"

// parseCIDR splits an IPv4 CIDR such as 10.0.2.15/24 into the address and
// its netmask.
func parseCIDR(cidr string) (addr, mask [4]byte, err error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return addr, mask, fmt.Errorf("parsing address %q: %w", cidr, err)
	}
	if !p.Addr().Is4() {
		return addr, mask, fmt.Errorf("address %q is not IPv4", cidr)
	}
	addr = p.Addr().As4()
	bits := p.Bits()
	for i := range mask {
		switch {
		case bits >= 8:
			mask[i] = 0xff
			bits -= 8
		case bits > 0:
			mask[i] = byte(0xff << (8 - bits))
			bits = 0
		}
	}
	return addr, mask, nil
}

// parseIPv4 parses a dotted IPv4 address.
func parseIPv4(s string) ([4]byte, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return [4]byte{}, fmt.Errorf("parsing %q: %w", s, err)
	}
	if !a.Is4() {
		return [4]byte{}, fmt.Errorf("%q is not an IPv4 address", s)
	}
	return a.As4(), nil
}

// setupNetwork brings up lo, then (when net has an address) waits for eth0
// in sysClassNet, addresses it, adds the default route and writes
// resolv.conf and a minimal hosts file into etcDir.
func setupNetwork(ctx context.Context, net protocol.Network, sysClassNet, etcDir string) error {
	if err := configureInterface("lo", [4]byte{127, 0, 0, 1}, [4]byte{255, 0, 0, 0}); err != nil {
		return err
	}
	if err := writeHosts(filepath.Join(etcDir, "hosts")); err != nil {
		return err
	}
	if net.Address == "" {
		return nil
	}
	addr, mask, err := parseCIDR(net.Address)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, netdevWait)
	defer cancel()
	if err := waitForPath(wctx, filepath.Join(sysClassNet, guestInterface), devicePoll); err != nil {
		return fmt.Errorf("waiting for %s: %w", guestInterface, err)
	}
	if err := configureInterface(guestInterface, addr, mask); err != nil {
		return err
	}
	if net.Gateway != "" {
		gw, err := parseIPv4(net.Gateway)
		if err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
		if err := addDefaultRoute(gw, guestInterface); err != nil {
			return err
		}
	}
	if net.DNS != "" {
		dns, err := parseIPv4(net.DNS)
		if err != nil {
			return fmt.Errorf("dns: %w", err)
		}
		if err := replaceFile(filepath.Join(etcDir, "resolv.conf"), []byte(resolvConf(dns))); err != nil {
			return err
		}
	}
	return nil
}

func resolvConf(dns [4]byte) string {
	return "nameserver " + netip.AddrFrom4(dns).String() + "\n"
}

// writeHosts gives the guest a localhost entry when the rootfs has no hosts
// file or an empty one (container images usually leave it to the runtime).
func writeHosts(path string) error {
	if fi, err := os.Stat(path); err == nil && fi.Size() > 0 {
		return nil
	}
	return replaceFile(path, []byte("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"))
}

// replaceFile writes a regular file at path, replacing whatever is there; a
// symlink (resolv.conf often points into a systemd directory that does not
// exist here) is replaced, not followed.
func replaceFile(path string, data []byte) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("replacing %s: %w", path, err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// waitForPath polls until path exists or ctx ends.
func waitForPath(ctx context.Context, path string, poll time.Duration) error {
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not appear: %w", path, ctx.Err())
		case <-tick.C:
		}
	}
}

// configureInterface sets an interface's IPv4 address and netmask and
// brings it up.
func configureInterface(name string, addr, mask [4]byte) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening a socket to configure %s: %w", name, err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fmt.Errorf("interface name %q: %w", name, err)
	}
	if err := ifr.SetInet4Addr(addr[:]); err != nil {
		return fmt.Errorf("%s address: %w", name, err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFADDR, ifr); err != nil {
		return fmt.Errorf("setting %s address: %w", name, err)
	}
	if err := ifr.SetInet4Addr(mask[:]); err != nil {
		return fmt.Errorf("%s netmask: %w", name, err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFNETMASK, ifr); err != nil {
		return fmt.Errorf("setting %s netmask: %w", name, err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("reading %s flags: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP | unix.IFF_RUNNING)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bringing %s up: %w", name, err)
	}
	return nil
}

// rtentry is the kernel's struct rtentry (<linux/route.h>) for SIOCADDRT;
// golang.org/x/sys/unix does not define it. The sockaddrs are sockaddr_in.
type rtentry struct {
	pad1    uintptr
	dst     unix.RawSockaddrInet4
	gateway unix.RawSockaddrInet4
	genmask unix.RawSockaddrInet4
	flags   uint16
	pad2    int16
	pad3    uintptr
	pad4    uintptr
	metric  int16
	dev     *byte
	mtu     uintptr
	window  uintptr
	irtt    uint16
}

// addDefaultRoute adds "default via gw dev dev". An existing identical
// route is not an error.
func addDefaultRoute(gw [4]byte, dev string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening a socket to add the default route: %w", err)
	}
	defer unix.Close(fd)
	devName, err := unix.BytePtrFromString(dev)
	if err != nil {
		return fmt.Errorf("interface name %q: %w", dev, err)
	}
	rt := rtentry{
		dst:     unix.RawSockaddrInet4{Family: unix.AF_INET},
		gateway: unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: gw},
		genmask: unix.RawSockaddrInet4{Family: unix.AF_INET},
		flags:   unix.RTF_UP | unix.RTF_GATEWAY,
		dev:     devName,
	}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCADDRT, uintptr(unsafe.Pointer(&rt)))
	if errno != 0 && errno != unix.EEXIST {
		return fmt.Errorf("adding default route via %s dev %s: %w", netip.AddrFrom4(gw), dev, errno)
	}
	return nil
}
