package firewall

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func prefixes(t *testing.T, s ...string) []netip.Prefix {
	t.Helper()
	p, err := ParsePrefixes(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

// ruleLine returns the first rule starting with want, failing if none.
func ruleLine(t *testing.T, rules, want string) string {
	t.Helper()
	for _, l := range strings.Split(rules, "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, want) {
			return l
		}
	}
	t.Fatalf("no rule containing %q in:\n%s", want, rules)
	return ""
}

func TestRender(t *testing.T) {
	base := Config{Isolated: Range{40000, 40999}, Egress: Range{41000, 41999}}
	tests := []struct {
		name       string
		deny       []string
		host       Host
		wantDenied string // the set of the egress chain's deny rules
		wantDNS    string // the DNS rule, "" for none
	}{
		{
			name:       "nothing local: only what is always denied",
			wantDenied: "{ 0.0.0.0/8, 169.254.0.0/16, 224.0.0.0/4, 255.255.255.255/32 }",
		},
		{
			name: "a container: its gateway, bridge network and Docker's DNS",
			host: Host{
				Gateways: addrs("172.18.0.1"), Networks: prefixes(t, "172.18.0.0/16"), Resolvers: addrs("127.0.0.11"),
			},
			wantDenied: "{ 0.0.0.0/8, 169.254.0.0/16, 172.18.0.0/16, 224.0.0.0/4, 255.255.255.255/32 }",
			wantDNS:    "meta l4proto { tcp, udp } ct original ip daddr { 127.0.0.11 } ct original proto-dst 53 accept",
		},
		{
			name:       "covered prefixes merge (nft refuses overlapping intervals)",
			deny:       []string{"10.0.0.0/8", "10.1.2.3", "169.254.169.254/32"},
			host:       Host{Gateways: addrs("10.9.0.1", "198.51.100.1"), Networks: prefixes(t, "10.9.0.0/24")},
			wantDenied: "{ 0.0.0.0/8, 10.0.0.0/8, 169.254.0.0/16, 198.51.100.1/32, 224.0.0.0/4, 255.255.255.255/32 }",
		},
		{
			name:       "the operator's list on top, several resolvers",
			deny:       DefaultDeny,
			host:       Host{Resolvers: addrs("10.255.255.53", "192.0.2.53", "10.255.255.53")},
			wantDenied: "{ 0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 169.254.0.0/16, 172.16.0.0/12, 192.168.0.0/16, 224.0.0.0/4, 255.255.255.255/32 }",
			wantDNS:    "meta l4proto { tcp, udp } ct original ip daddr { 10.255.255.53, 192.0.2.53 } ct original proto-dst 53 accept",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			cfg.Deny = prefixes(t, tt.deny...)
			rules := Render(cfg, tt.host)
			for _, want := range []string{
				"table inet faasvm\ndelete table inet faasvm\ntable inet faasvm {",
				"meta skuid 40000-40999 jump isolated",
				"meta skuid 41000-41999 jump egress",
				"chain isolated {\n\t\tct state established,related accept\n\t\tmeta l4proto tcp reject with tcp reset\n\t\treject with icmpx type admin-prohibited\n\t}",
				"meta nfproto ipv6 reject",
				"fib daddr type { local, broadcast, multicast, anycast } meta l4proto tcp reject with tcp reset",
			} {
				if !strings.Contains(rules, want) {
					t.Errorf("rules lack %q:\n%s", want, rules)
				}
			}
			if got := ruleLine(t, rules, "ip daddr {"); got != "ip daddr "+tt.wantDenied+" meta l4proto tcp reject with tcp reset" {
				t.Errorf("deny rule: got %q, want the set %s", got, tt.wantDenied)
			}
			dns := ""
			if strings.Contains(rules, "proto-dst 53") {
				dns = ruleLine(t, rules, "meta l4proto { tcp, udp } ct original")
			}
			if dns != tt.wantDNS {
				t.Errorf("dns rule: got %q, want %q", dns, tt.wantDNS)
			}
			// Order matters: replies and DNS before any reject.
			egress := rules[strings.Index(rules, "chain egress"):]
			if i, j := strings.Index(egress, "established"), strings.Index(egress, "reject"); i < 0 || i > j {
				t.Errorf("egress chain: replies must be accepted before any reject:\n%s", egress)
			}
			if dns != "" && strings.Index(egress, "proto-dst 53") > strings.Index(egress, "fib daddr") {
				t.Errorf("egress chain: DNS must come before the local reject:\n%s", egress)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{name: "ok", cfg: Config{Isolated: Range{40000, 40999}, Egress: Range{41000, 41999}}},
		{name: "empty range", cfg: Config{Isolated: Range{5, 4}, Egress: Range{41000, 41999}}, wantErr: "isolated uid range 5-4 is empty"},
		{name: "root", cfg: Config{Isolated: Range{0, 10}, Egress: Range{41000, 41999}}, wantErr: "includes root"},
		{name: "overlap", cfg: Config{Isolated: Range{40000, 41000}, Egress: Range{41000, 41999}}, wantErr: "overlap"},
		{name: "ipv6 deny", cfg: Config{Isolated: Range{1, 1}, Egress: Range{2, 2}, Deny: []netip.Prefix{netip.MustParsePrefix("fc00::/7")}}, wantErr: "only IPv4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("Validate: got %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestParsePrefixes(t *testing.T) {
	got, err := ParsePrefixes([]string{" 10.1.2.3/8", "192.0.2.7", ""})
	if err != nil || !slices.Equal(got, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32")}) {
		t.Errorf("got %v, %v; want 10.0.0.0/8 and 192.0.2.7/32", got, err)
	}
	for _, bad := range []string{"10.0.0.0/33", "example.com", "fc00::/7"} {
		if _, err := ParsePrefixes([]string{bad}); err == nil {
			t.Errorf("ParsePrefixes(%q): got no error", bad)
		}
	}
}

func TestParseRoutes(t *testing.T) {
	const routes = `Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
eth0	00000000	010012AC	0003	0	0	0	00000000	0	0	0
eth0	000012AC	00000000	0001	0	0	0	0000FFFF	0	0	0
docker0	000011AC	00000000	0001	0	0	0	0000FFFF	0	0	0
eth1	0064A8C0	FE64A8C0	0003	0	0	0	00FFFFFF	0	0	0
`
	gws, nets, err := parseRoutes(strings.NewReader(routes))
	if err != nil {
		t.Fatal(err)
	}
	if want := addrs("172.18.0.1", "192.168.100.254"); !slices.Equal(gws, want) {
		t.Errorf("gateways: got %v, want %v", gws, want)
	}
	if want := prefixes(t, "172.18.0.0/16", "172.17.0.0/16"); !slices.Equal(nets, want) {
		t.Errorf("networks: got %v, want %v", nets, want)
	}
	if _, _, err := parseRoutes(strings.NewReader("h\neth0 zz 00000000 1 0 0 0 00000000\n")); err == nil {
		t.Error("a garbled route: got no error")
	}
}

func TestParseResolvConf(t *testing.T) {
	got, err := parseResolvConf(strings.NewReader("# comment\nsearch x\nnameserver 127.0.0.11\nnameserver ::1\nnameserver 10.0.0.2\noptions ndots:0\n"))
	if err != nil || !slices.Equal(got, addrs("127.0.0.11", "10.0.0.2")) {
		t.Errorf("got %v, %v; want the two IPv4 nameservers", got, err)
	}
}

func TestEnsureReportsWhyNot(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{name: "nft missing", cfg: Config{Command: []string{"/nonexistent/nft"}}, wantErr: "installing the VM firewall"},
		{name: "nft refuses", cfg: Config{Command: []string{"sh", "-c", "echo 'Error: Operation not permitted' >&2; exit 1", "nft"}}, wantErr: "Operation not permitted"},
		{name: "host unreadable", cfg: Config{Host: func() (Host, error) { return Host{}, errors.New("no /proc") }}, wantErr: "reading this namespace's networks: no /proc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Isolated, tt.cfg.Egress = Range{40000, 40999}, Range{41000, 41999}
			if tt.cfg.Host == nil {
				tt.cfg.Host = func() (Host, error) { return Host{}, nil }
			}
			f, err := New(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Ensure(context.Background()); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Ensure: got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
