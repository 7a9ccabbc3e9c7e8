package firewall

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
)

// Host is what the rules need to know about the network namespace.
type Host struct {
	// Gateways are the next hops of routes (for a container: the host's
	// address on its bridge).
	Gateways []netip.Addr
	// Networks are the directly attached networks (routes without a
	// gateway): the container's bridge network, the host's LAN.
	Networks []netip.Prefix
	// Resolvers are the DNS servers of /etc/resolv.conf.
	Resolvers []netip.Addr
}

// Discover reads the namespace's IPv4 routes (/proc/net/route, of the
// calling thread's namespace) and resolvers (/etc/resolv.conf). A missing
// resolv.conf means no resolver.
func Discover() (Host, error) {
	var h Host
	f, err := os.Open("/proc/thread-self/net/route")
	if err != nil {
		return h, err
	}
	defer f.Close()
	if h.Gateways, h.Networks, err = parseRoutes(f); err != nil {
		return h, fmt.Errorf("/proc/net/route: %w", err)
	}
	rf, err := os.Open("/etc/resolv.conf")
	if os.IsNotExist(err) {
		return h, nil
	}
	if err != nil {
		return h, err
	}
	defer rf.Close()
	h.Resolvers, err = parseResolvConf(rf)
	return h, err
}

// parseRoutes reads /proc/net/route: every gateway, and the destination of
// every route without one (the default route, 0.0.0.0/0, excepted: the
// outside world is what egress is for).
func parseRoutes(r io.Reader) (gateways []netip.Addr, networks []netip.Prefix, err error) {
	sc := bufio.NewScanner(r)
	first := true
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if first { // the header
			first = false
			continue
		}
		if len(f) < 8 {
			continue
		}
		dst, err1 := hexAddr(f[1])
		gw, err2 := hexAddr(f[2])
		mask, err3 := hexAddr(f[7])
		if err1 != nil || err2 != nil || err3 != nil {
			return nil, nil, fmt.Errorf("bad route line %q", sc.Text())
		}
		bits := maskBits(mask)
		if bits < 0 {
			return nil, nil, fmt.Errorf("route line %q: mask %s is not a prefix", sc.Text(), mask)
		}
		if !gw.IsUnspecified() {
			gateways = appendNew(gateways, gw)
			continue
		}
		if bits == 0 {
			continue
		}
		networks = appendNew(networks, netip.PrefixFrom(dst, bits).Masked())
	}
	return gateways, networks, sc.Err()
}

// hexAddr decodes an address as /proc/net/route writes it: 8 hex digits of
// the address in host (little-endian) byte order.
func hexAddr(s string) (netip.Addr, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 4 {
		return netip.Addr{}, fmt.Errorf("bad address %q", s)
	}
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], binary.LittleEndian.Uint32(b))
	return netip.AddrFrom4(a), nil
}

// maskBits returns the prefix length of a netmask, -1 when it is not one.
func maskBits(m netip.Addr) int {
	b := m.As4()
	v := binary.BigEndian.Uint32(b[:])
	n := 0
	for v&(1<<31) != 0 {
		n++
		v <<= 1
	}
	if v != 0 {
		return -1
	}
	return n
}

// parseResolvConf returns the IPv4 nameservers of a resolv.conf.
func parseResolvConf(r io.Reader) ([]netip.Addr, error) {
	var out []netip.Addr
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(f[1])
		if err != nil || !a.Is4() {
			continue // IPv6 (or a scoped address): guests have no IPv6
		}
		out = appendNew(out, a)
	}
	return out, sc.Err()
}

func appendNew[T comparable](s []T, v T) []T {
	for _, x := range s {
		if x == v {
			return s
		}
	}
	return append(s, v)
}
