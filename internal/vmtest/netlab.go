package vmtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// NetLab is a small network of two namespaces the test creates, so that
// egress can be tested without a packet leaving the machine:
//
//	Appliance (ns)                         Outside (ns)
//	  lo 127.0.0.1                           veth 198.51.100.1/24  (the gateway: "the host")
//	  veth 198.51.100.2/24  ───────────────       198.51.100.3/24  (a neighbour on the bridge)
//	  default via 198.51.100.1               lo 203.0.113.10       (the outside world)
//	                                            169.254.169.254    (a metadata service)
//	                                            10.99.0.1          (a private network)
//
// What runs "in the appliance" runs in Appliance; the listeners a guest
// may or may not reach live in either. Addresses are documentation and
// link-local ranges, and exist only inside the two namespaces.
type NetLab struct {
	Appliance, Outside string // namespace names (ip netns)
	// ResolvConf is the resolv.conf `ip netns exec Appliance` binds over
	// /etc/resolv.conf: its nameserver is the gateway address, so nothing
	// configured from it leaves the lab either.
	ResolvConf string
}

// Addresses in the lab.
const (
	LabApplianceAddr = "198.51.100.2"
	LabGatewayAddr   = "198.51.100.1"
	LabNeighbourAddr = "198.51.100.3"
	LabWorldAddr     = "203.0.113.10"
	LabMetadataAddr  = "169.254.169.254"
	LabPrivateAddr   = "10.99.0.1"
)

// NewNetLab creates the namespaces (removed when the test ends). It needs
// root and the ip command (iproute2); without them the test fails saying
// so.
func NewNetLab(tb testing.TB) *NetLab {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Fatal("network namespaces need root (make test runs as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		tb.Fatalf("the ip command (iproute2) is not installed: %v", err)
	}
	b := make([]byte, 3)
	rand.Read(b)
	id := hex.EncodeToString(b)
	l := &NetLab{Appliance: "fvm-app-" + id, Outside: "fvm-out-" + id}
	tb.Cleanup(func() {
		for _, ns := range []string{l.Appliance, l.Outside} {
			exec.Command("ip", "netns", "del", ns).Run()
		}
		os.RemoveAll(filepath.Join("/etc/netns", l.Appliance))
	})
	run := func(args ...string) {
		tb.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			tb.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	in := func(ns string, args ...string) { tb.Helper(); run(append([]string{"-n", ns}, args...)...) }
	run("netns", "add", l.Appliance)
	run("netns", "add", l.Outside)
	for _, ns := range []string{l.Appliance, l.Outside} {
		in(ns, "link", "set", "lo", "up")
	}
	run("link", "add", "fvma"+id, "netns", l.Appliance, "type", "veth", "peer", "name", "fvmo"+id, "netns", l.Outside)
	in(l.Appliance, "addr", "add", LabApplianceAddr+"/24", "dev", "fvma"+id)
	in(l.Appliance, "link", "set", "fvma"+id, "up")
	in(l.Appliance, "route", "add", "default", "via", LabGatewayAddr)
	in(l.Outside, "addr", "add", LabGatewayAddr+"/24", "dev", "fvmo"+id)
	in(l.Outside, "addr", "add", LabNeighbourAddr+"/24", "dev", "fvmo"+id)
	in(l.Outside, "link", "set", "fvmo"+id, "up")
	// Local addresses of the outside namespace (on its loopback: not every
	// kernel has the dummy driver), reached through its veth.
	for _, a := range []string{LabWorldAddr, LabMetadataAddr, LabPrivateAddr} {
		in(l.Outside, "addr", "add", a+"/32", "dev", "lo")
	}
	dir := filepath.Join("/etc/netns", l.Appliance)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	l.ResolvConf = filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(l.ResolvConf, []byte("nameserver "+LabGatewayAddr+"\n"), 0o644); err != nil {
		tb.Fatal(err)
	}
	return l
}

// InNetns runs fn on an OS thread of its own switched into the named
// namespace; the thread is thrown away afterwards, so nothing else ever
// runs in the namespace by accident. Sockets fn creates stay in it.
func InNetns(ns string, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		f, err := os.Open(filepath.Join("/run/netns", ns))
		if err != nil {
			done <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		done <- fn()
	}()
	return <-done
}

// Listen listens on addr:0 inside ns and answers each connection with
// "hello <name>\n". It returns the port and a channel that receives the
// remote address of every connection accepted. The listener closes when
// the test ends.
func (l *NetLab) Listen(tb testing.TB, ns, addr, name string) (int, <-chan string) {
	tb.Helper()
	var ln net.Listener
	if err := InNetns(ns, func() (err error) {
		ln, err = net.Listen("tcp4", net.JoinHostPort(addr, "0"))
		return err
	}); err != nil {
		tb.Fatalf("listening on %s in %s: %v", addr, ns, err)
	}
	tb.Cleanup(func() { ln.Close() })
	accepted := make(chan string, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case accepted <- c.RemoteAddr().String():
			default:
			}
			fmt.Fprintf(c, "hello %s\n", name)
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port, accepted
}

// DialAs connects to addr (host:port) from inside ns with a socket owned
// by uid (the socket takes the thread's filesystem uid, which is what
// firewalls match as its owner), and returns the first line the other
// side sends. The thread is thrown away afterwards.
func DialAs(ns string, uid int, addr string, timeout time.Duration) (string, error) {
	var line string
	err := InNetns(ns, func() error {
		// The raw call changes this thread only (unix.Setfsuid would too;
		// syscall.Setuid would change every thread).
		unix.RawSyscall(unix.SYS_SETFSUID, uintptr(uid), 0, 0)
		if got, _, _ := unix.RawSyscall(unix.SYS_SETFSUID, ^uintptr(0), 0, 0); int(got) != uid {
			return fmt.Errorf("setfsuid %d: still %d", uid, got)
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp4", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(timeout))
		buf := make([]byte, 128)
		n, err := c.Read(buf)
		if n == 0 && err != nil {
			return fmt.Errorf("reading the greeting: %w", err)
		}
		line = strings.TrimSpace(string(buf[:n]))
		return nil
	})
	return line, err
}

// Port formats a port for JoinHostPort.
func Port(p int) string { return strconv.Itoa(p) }
