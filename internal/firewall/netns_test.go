package firewall

import (
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/faasvm/appliance/internal/vmtest"
)

// TestEnsureInNamespace installs the rules with the real nft inside a
// namespace of a lab the test creates, then connects from inside it as a
// VM without egress, as one with egress and as the appliance itself, to
// listeners standing in for the outside world and for everything a guest
// must not reach. Nothing leaves the two namespaces.
func TestEnsureInNamespace(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: needs root, ip and nft (make test runs it)")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Fatalf("nft is not installed (Debian package nftables; make test installs it): %v", err)
	}
	lab := vmtest.NewNetLab(t)
	deny, err := ParsePrefixes(DefaultDeny)
	if err != nil {
		t.Fatal(err)
	}
	var host Host
	if err := vmtest.InNetns(lab.Appliance, func() (err error) { host, err = Discover(); return err }); err != nil {
		t.Fatal(err)
	}
	f, err := New(Config{
		Isolated: Range{40000, 40999}, Egress: Range{41000, 41999}, Deny: deny,
		Command: []string{"ip", "netns", "exec", lab.Appliance, "nft"},
		Host:    func() (Host, error) { return host, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 2 { // a refresh replaces the table
		if err := f.Ensure(ctx); err != nil {
			t.Fatalf("Ensure #%d: %v", i, err)
		}
	}
	if out, err := exec.Command("ip", "netns", "exec", lab.Appliance, "nft", "list", "table", "inet", Table).CombinedOutput(); err != nil ||
		strings.Count(string(out), "chain egress") != 1 {
		t.Fatalf("the table after two Ensures: %v\n%s", err, out)
	}

	type target struct {
		name, ns, addr string
	}
	targets := []target{
		{"world", lab.Outside, vmtest.LabWorldAddr},
		{"metadata", lab.Outside, vmtest.LabMetadataAddr},
		{"gateway", lab.Outside, vmtest.LabGatewayAddr},
		{"neighbour", lab.Outside, vmtest.LabNeighbourAddr},
		{"private", lab.Outside, vmtest.LabPrivateAddr},
		{"appliance", lab.Appliance, vmtest.LabApplianceAddr},
		{"loopback", lab.Appliance, "127.0.0.1"},
	}
	addr := map[string]string{}
	for _, tg := range targets {
		port, _ := lab.Listen(t, tg.ns, tg.addr, tg.name)
		addr[tg.name] = net.JoinHostPort(tg.addr, vmtest.Port(port))
	}
	tests := []struct {
		who   string
		uid   int
		reach []string // every other target must be refused
	}{
		{"the appliance (root)", 0, []string{"world", "metadata", "gateway", "neighbour", "private", "appliance", "loopback"}},
		{"a VM without egress", 40000, nil},
		{"a VM without egress, last uid", 40999, nil},
		{"a VM with egress", 41000, []string{"world"}},
		{"a VM with egress, last uid", 41999, []string{"world"}},
		{"another user of the machine", 42000, []string{"world", "metadata", "gateway", "neighbour", "private", "appliance", "loopback"}},
	}
	for _, tt := range tests {
		t.Run(tt.who, func(t *testing.T) {
			for _, tg := range targets {
				want := false
				for _, r := range tt.reach {
					want = want || r == tg.name
				}
				got, err := vmtest.DialAs(lab.Appliance, tt.uid, addr[tg.name], 3*time.Second)
				switch {
				case want && (err != nil || got != "hello "+tg.name):
					t.Errorf("%s (%s): got %q, %v; want it reached", tg.name, addr[tg.name], got, err)
				case !want && err == nil:
					t.Errorf("%s (%s): got %q, want the connection refused", tg.name, addr[tg.name], got)
				case !want && !strings.Contains(err.Error(), "refused") && !strings.Contains(err.Error(), "not permitted"):
					t.Errorf("%s (%s): got %v, want it refused at once (not a timeout)", tg.name, addr[tg.name], err)
				}
			}
		})
	}
}
