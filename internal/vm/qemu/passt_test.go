package qemu

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestPasstForwardsToGuest runs the installed passt with the engine's
// arguments, playing the guest on the other end of the socketpair: a
// connection to the forwarded loopback port must reach the guest as a TCP
// SYN to 10.0.2.15:8080, and passt must exit once the guest side closes.
// Only loopback and the socketpair carry traffic.
func TestPasstForwardsToGuest(t *testing.T) {
	passt, err := exec.LookPath(DefaultPasstPath)
	if err != nil {
		t.Fatalf("passt is not installed (Debian package passt; `make test` installs it): %v", err)
	}
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	guest := os.NewFile(uintptr(fds[0]), "guest")
	passtEnd := os.NewFile(uintptr(fds[1]), "passt")
	t.Cleanup(func() { guest.Close() })
	port, err := freeLoopbackPort()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command(passt, buildPasstArgs(passtArgs{FD: streamFD, HostPort: port, Dir: dir})...)
	cmd.ExtraFiles = []*os.File{passtEnd}
	p, err := startProcess("passt", cmd)
	passtEnd.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.killAndWait(killWait) })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	guestMAC := net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	// Announce the guest (an ARP request for the gateway), as a booting guest does.
	if _, err := guest.Write(frame(arpRequest(guestMAC, net.IPv4(10, 0, 2, 15), net.IPv4(10, 0, 2, 2)))); err != nil {
		t.Fatalf("writing arp request: %v", err)
	}

	// Connect to the forwarded port until passt listens (it binds at once,
	// but runs in parallel with this test).
	var conn net.Conn
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for conn == nil {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		switch {
		case err == nil:
			conn = c
		case p.exited():
			t.Fatalf("passt exited: %v", p.err)
		case ctx.Err() != nil:
			t.Fatalf("connecting to passt's forward: %v", err)
		}
		if conn == nil {
			<-tick.C
		}
	}
	defer conn.Close()

	// Read frames until the SYN towards the guest's agent port.
	guest.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		f, err := readFrame(guest)
		if err != nil {
			t.Fatalf("reading frames from passt: got %v, want a TCP SYN to 10.0.2.15:8080", err)
		}
		dst, dport, syn, ok := tcpInfo(f)
		if ok && syn {
			if !dst.Equal(net.IPv4(10, 0, 2, 15)) || dport != 8080 {
				t.Fatalf("SYN: got destination %s:%d, want 10.0.2.15:8080", dst, dport)
			}
			break
		}
	}

	guest.Close()
	select {
	case <-p.done:
		if p.err != nil {
			t.Errorf("passt after the guest side closed: got %v, want exit status 0", p.err)
		}
	case <-ctx.Done():
		t.Fatal("passt still running after the guest side closed, want it gone (--one-off)")
	}
}

// frame prefixes an Ethernet frame with the 32-bit big-endian length that
// passt's (and QEMU's stream netdev's) socket protocol uses.
func frame(eth []byte) []byte {
	out := binary.BigEndian.AppendUint32(nil, uint32(len(eth)))
	return append(out, eth...)
}

func readFrame(r io.Reader) ([]byte, error) {
	var n uint32
	if err := binary.Read(r, binary.BigEndian, &n); err != nil {
		return nil, err
	}
	if n > 65536 {
		return nil, errors.New("frame too long")
	}
	b := make([]byte, n)
	_, err := io.ReadFull(r, b)
	return b, err
}

func arpRequest(mac net.HardwareAddr, ip, target net.IP) []byte {
	b := append(net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, mac...)
	b = append(b, 0x08, 0x06)                   // ARP
	b = append(b, 0, 1, 0x08, 0x00, 6, 4, 0, 1) // Ethernet/IPv4, request
	b = append(b, mac...)
	b = append(b, ip.To4()...)
	b = append(b, 0, 0, 0, 0, 0, 0)
	b = append(b, target.To4()...)
	return append(b, make([]byte, 60-len(b))...)
}

// tcpInfo decodes an Ethernet/IPv4/TCP frame's destination and SYN flag.
func tcpInfo(f []byte) (dst net.IP, port int, syn, ok bool) {
	if len(f) < 14+20 || binary.BigEndian.Uint16(f[12:14]) != 0x0800 {
		return nil, 0, false, false
	}
	ip := f[14:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[9] != 6 || len(ip) < ihl+14 {
		return nil, 0, false, false
	}
	tcp := ip[ihl:]
	return net.IP(ip[16:20]), int(binary.BigEndian.Uint16(tcp[2:4])), tcp[13]&0x02 != 0 && tcp[13]&0x10 == 0, true
}
