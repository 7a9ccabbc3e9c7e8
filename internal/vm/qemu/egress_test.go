package qemu_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/faasvm/appliance/internal/firewall"
	"github.com/faasvm/appliance/internal/vm/qemu"
	"github.com/faasvm/appliance/internal/vmtest"
)

// envEgressLab carries the lab's listeners to the copy of the test binary
// that runs inside the lab's appliance namespace.
const envEgressLab = "FAAS_TEST_EGRESS_LAB"

// egressTarget is one listener the guest tries to reach.
type egressTarget struct {
	Name    string `json:"name"`
	Addr    string `json:"addr"` // host:port as the guest dials it
	Allowed bool   `json:"allowed"`
}

// TestEgressIsolation boots a real VM with egress inside a network
// namespace the test creates (vmtest.NetLab; no packet leaves the
// machine), with the appliance's firewall installed there, and has the
// guest connect to listeners standing in for the outside world (which it
// must reach: the positive control) and for everything it must not: a
// metadata service (169.254.169.254), the host behind the default
// gateway, a neighbour on the bridge network, a private network, the
// appliance's own address (where the gateway listens on every interface)
// and its loopback (other VMs' forwards), which slirp's host alias
// 10.0.2.2 leads to.
//
// The test binary re-runs itself under `ip netns exec`, so the engine, the
// firewall and QEMU all live in the lab's appliance namespace; the
// listeners are opened by this process inside the lab and report every
// connection they accept.
func TestEgressIsolation(t *testing.T) {
	if spec := os.Getenv(envEgressLab); spec != "" {
		egressInLab(t, spec)
		return
	}
	vmtest.Load(t) // the assets, or a clear failure, before building a lab
	if _, err := exec.LookPath("nft"); err != nil {
		t.Fatalf("nft is not installed (Debian package nftables; make test installs it): %v", err)
	}
	lab := vmtest.NewNetLab(t)
	type listener struct {
		name, ns, addr string
		allowed        bool
		guestAddr      string // what the guest dials instead, "" for addr
	}
	listeners := []listener{
		{name: "world", ns: lab.Outside, addr: vmtest.LabWorldAddr, allowed: true},
		{name: "metadata", ns: lab.Outside, addr: vmtest.LabMetadataAddr},
		{name: "gateway", ns: lab.Outside, addr: vmtest.LabGatewayAddr},
		{name: "neighbour", ns: lab.Outside, addr: vmtest.LabNeighbourAddr},
		{name: "private", ns: lab.Outside, addr: vmtest.LabPrivateAddr},
		{name: "appliance", ns: lab.Appliance, addr: vmtest.LabApplianceAddr},
		// The guest's own 127.0.0.1 is its own loopback; the appliance's is
		// what slirp maps its gateway address to.
		{name: "loopback", ns: lab.Appliance, addr: "127.0.0.1", guestAddr: "10.0.2.2"},
	}
	var targets []egressTarget
	accepted := map[string]<-chan string{}
	for _, l := range listeners {
		port, acc := lab.Listen(t, l.ns, l.addr, l.name)
		dial := l.addr
		if l.guestAddr != "" {
			dial = l.guestAddr
		}
		targets = append(targets, egressTarget{Name: l.name, Addr: net.JoinHostPort(dial, vmtest.Port(port)), Allowed: l.allowed})
		accepted[l.name] = acc
	}
	spec, _ := json.Marshal(targets)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"netns", "exec", lab.Appliance, exe, "-test.run=^TestEgressIsolation$", "-test.count=1"}
	if testing.Verbose() {
		args = append(args, "-test.v")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Env = append(os.Environ(), envEgressLab+"="+string(spec))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	t.Logf("inside the lab:\n%s", out.String())
	if err != nil {
		t.Fatalf("the test inside the lab failed: %v", err)
	}
	for _, tg := range targets {
		var got []string
		for done := false; !done; {
			select {
			case a := <-accepted[tg.Name]:
				got = append(got, a)
			default:
				done = true
			}
		}
		switch {
		case tg.Allowed && len(got) == 0:
			t.Errorf("%s: the listener saw no connection, want the guest's", tg.Name)
		case !tg.Allowed && len(got) > 0:
			t.Errorf("%s: the listener accepted %v, want nothing to reach it", tg.Name, got)
		}
	}
}

// egressInLab is TestEgressIsolation inside the lab's appliance namespace.
func egressInLab(t *testing.T, spec string) {
	var targets []egressTarget
	if err := json.Unmarshal([]byte(spec), &targets); err != nil {
		t.Fatalf("%s: %v", envEgressLab, err)
	}
	var h *harness
	h = newHarness(t, func(c *qemu.Config) {
		iso, egr, _ := c.UIDPools()
		deny, err := firewall.ParsePrefixes(firewall.DefaultDeny)
		if err != nil {
			t.Fatal(err)
		}
		fw, err := firewall.New(firewall.Config{
			Isolated: firewall.Range{First: iso.First, Last: iso.Last},
			Egress:   firewall.Range{First: egr.First, Last: egr.Last},
			Deny:     deny, Logger: vmtest.Logger(t),
		})
		if err != nil {
			t.Fatal(err)
		}
		c.Firewall = fw
	})
	m := h.start(t, h.spec(t, cases[0], true))
	var dials []string
	for _, tg := range targets {
		dials = append(dials, tg.Addr)
	}
	r := call(t, m, "s3cret-py-exec", "GET", "/?probe="+strings.Join(dials, ","), "", nil)
	if r.status != http.StatusOK {
		t.Fatalf("probe: got %d %q", r.status, r.body)
	}
	t.Logf("the guest's probes:\n%s", r.body)
	for _, tg := range targets {
		want := fmt.Sprintf("%s:closed", tg.Addr)
		if tg.Allowed {
			want = fmt.Sprintf("%s:open hello %s", tg.Addr, tg.Name)
		}
		if !strings.Contains(r.body, want+"\n") && !strings.Contains(r.body, want+" ") {
			t.Errorf("%s (%s): got %q, want %q", tg.Name, tg.Addr, r.body, want)
		}
	}
}
