// Package firewall keeps the VM processes' own connections away from the
// appliance. With user-mode networking a guest's connections are made by
// its QEMU process, in the appliance's network namespace, where the gateway
// listens on every address, other VMs' forwards wait on loopback, and the
// container's bridge, its gateway (the host) and link-local metadata
// services are one hop away. The engine runs each QEMU as a user ID of its
// own, from two ranges, and this package installs one nftables table that
// matches packets by that socket owner (meta skuid):
//
//   - uids of VMs without egress (Isolated) may open no connection at all;
//   - uids of VMs with egress (Egress) may reach the outside world only:
//     not a local address of this namespace (loopback, the container's own
//     addresses: the gateway, every VM's forwards), not a broadcast or
//     multicast address, not link-local 169.254.0.0/16 (cloud metadata), not
//     a gateway of this namespace (the host, for a container) nor any
//     network a route says is directly attached (the Docker bridge and its
//     other containers, the host's LAN), not 0.0.0.0/8, and not what the
//     operator denies on top (Config.Deny; private ranges by default). DNS
//     to this namespace's resolvers (/etc/resolv.conf) is let through first,
//     port 53 only, as the guest's 10.0.2.3 forwards there. Nothing over
//     IPv6 (guests are IPv4-only).
//
// Replies on connections made to a VM (the gateway calling a forwarded
// port) are always let through. Forbidden connections are rejected (TCP
// reset, ICMP admin-prohibited otherwise), so a guest learns at once.
//
// Ensure renders the rules from what the namespace looks like now and
// replaces the table in one nft transaction, so a refresh leaves no gap.
// The table stays when the appliance stops (it names only the VM uids);
// `nft delete table inet faasvm` removes it.
package firewall

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"
)

// Range is a range of user IDs, both ends included.
type Range struct{ First, Last uint32 }

func (r Range) String() string { return fmt.Sprintf("%d-%d", r.First, r.Last) }

// Table is the nftables table (family inet) the rules live in.
const Table = "faasvm"

// DefaultDeny is what egress guests may not reach besides the local
// networks: the private and carrier-grade NAT ranges, where internal
// services live.
var DefaultDeny = []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"}

// alwaysDenied are destinations no egress guest reaches, whatever the
// operator says: "this network", link-local (metadata services), multicast
// and the limited broadcast.
var alwaysDenied = []string{"0.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "255.255.255.255/32"}

// Config configures a Firewall.
type Config struct {
	// Isolated are the uids that may open no connection.
	Isolated Range
	// Egress are the uids that may reach the outside world only.
	Egress Range
	// Deny lists further IPv4 prefixes egress uids may not reach.
	Deny []netip.Prefix
	// Command runs nft; default {"nft"}. Its last word is given -f -.
	Command []string
	// Timeout bounds one nft run; default 10s.
	Timeout time.Duration
	// Host reads the namespace's networks; default Discover.
	Host func() (Host, error)
	// Logger receives a line per change of the rules; default slog.Default().
	Logger *slog.Logger
}

// Validate reports the first problem with c.
func (c *Config) Validate() error {
	for _, r := range []struct {
		name string
		r    Range
	}{{"isolated", c.Isolated}, {"egress", c.Egress}} {
		if r.r.Last < r.r.First {
			return fmt.Errorf("firewall: %s uid range %s is empty", r.name, r.r)
		}
		if r.r.First == 0 {
			return fmt.Errorf("firewall: %s uid range %s includes root", r.name, r.r)
		}
	}
	if c.Isolated.First <= c.Egress.Last && c.Egress.First <= c.Isolated.Last {
		return fmt.Errorf("firewall: uid ranges %s and %s overlap", c.Isolated, c.Egress)
	}
	for _, p := range c.Deny {
		if !p.Addr().Is4() {
			return fmt.Errorf("firewall: deny %s: only IPv4 prefixes (guests have no IPv6)", p)
		}
	}
	return nil
}

// ParsePrefixes parses a list of IPv4 prefixes or addresses (an address is
// a /32), for Config.Deny.
func ParsePrefixes(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("%q is not an IPv4 address or prefix such as 10.0.0.0/8", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if !p.Addr().Is4() {
			return nil, fmt.Errorf("%q is not IPv4 (guests have no IPv6: it is always denied)", s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Firewall installs the rules. It is safe for concurrent use.
type Firewall struct {
	cfg Config

	mu   sync.Mutex
	last string // the rules last applied
}

// New validates cfg and returns a Firewall; nothing is installed before
// the first Ensure.
func New(cfg Config) (*Firewall, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(cfg.Command) == 0 {
		cfg.Command = []string{"nft"}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Host == nil {
		cfg.Host = Discover
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Firewall{cfg: cfg}, nil
}

// Ensure installs the rules for the namespace as it is now, replacing the
// table atomically. It fails when the namespace's networks cannot be read
// or nft cannot be run or refuses (no NET_ADMIN, no nftables in the
// kernel).
func (f *Firewall) Ensure(ctx context.Context) error {
	host, err := f.cfg.Host()
	if err != nil {
		return fmt.Errorf("reading this namespace's networks: %w", err)
	}
	rules := Render(f.cfg, host)
	f.mu.Lock()
	defer f.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	defer cancel()
	args := append(slices.Clone(f.cfg.Command[1:]), "-f", "-")
	cmd := exec.CommandContext(ctx, f.cfg.Command[0], args...)
	cmd.Stdin = strings.NewReader(rules)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		msg := strings.Join(strings.Fields(out.String()), " ")
		if errors.Is(err, exec.ErrNotFound) {
			return fmt.Errorf("installing the VM firewall: %w (install nftables)", err)
		}
		return fmt.Errorf("installing the VM firewall with %s: %w: %s", f.cfg.Command[0], err, msg)
	}
	if rules != f.last {
		f.cfg.Logger.Info("VM firewall installed", "table", "inet "+Table,
			"isolated_uids", f.cfg.Isolated.String(), "egress_uids", f.cfg.Egress.String(),
			"gateways", host.Gateways, "local_networks", host.Networks, "resolvers", host.Resolvers)
		f.last = rules
	}
	return nil
}

// Render returns the nft script that replaces the table with the rules
// for cfg on host.
func Render(cfg Config, host Host) string {
	var prefixes []netip.Prefix
	for _, s := range alwaysDenied {
		prefixes = append(prefixes, netip.MustParsePrefix(s))
	}
	for _, g := range host.Gateways {
		if g.Is4() {
			prefixes = append(prefixes, netip.PrefixFrom(g, 32))
		}
	}
	for _, n := range host.Networks {
		if n.Addr().Is4() {
			prefixes = append(prefixes, n.Masked())
		}
	}
	prefixes = append(prefixes, cfg.Deny...)
	var denied []string
	for _, p := range disjoint(prefixes) {
		denied = append(denied, p.String())
	}
	var resolvers []string
	for _, r := range host.Resolvers {
		if r.Is4() && !slices.Contains(resolvers, r.String()) {
			resolvers = append(resolvers, r.String())
		}
	}

	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	// Declaring the table first makes the delete work when it is missing;
	// nft applies the whole file as one transaction.
	w("table inet %s", Table)
	w("delete table inet %s", Table)
	w("table inet %s {", Table)
	w("\tchain output {")
	w("\t\ttype filter hook output priority filter; policy accept;")
	w("\t\tmeta skuid %s jump isolated", cfg.Isolated)
	w("\t\tmeta skuid %s jump egress", cfg.Egress)
	w("\t}")
	w("\tchain isolated {")
	w("\t\tct state established,related accept")
	w("\t\tmeta l4proto tcp reject with tcp reset")
	w("\t\treject with icmpx type admin-prohibited")
	w("\t}")
	w("\tchain egress {")
	w("\t\tct state established,related accept")
	w("\t\tmeta nfproto ipv6 reject with icmpx type admin-prohibited")
	if len(resolvers) > 0 {
		// Matched on the address before any NAT: Docker's embedded DNS
		// (127.0.0.11) is DNATed to another port.
		w("\t\tmeta l4proto { tcp, udp } ct original ip daddr { %s } ct original proto-dst 53 accept", strings.Join(resolvers, ", "))
	}
	w("\t\tfib daddr type { local, broadcast, multicast, anycast } meta l4proto tcp reject with tcp reset")
	w("\t\tfib daddr type { local, broadcast, multicast, anycast } reject with icmpx type admin-prohibited")
	w("\t\tip daddr { %s } meta l4proto tcp reject with tcp reset", strings.Join(denied, ", "))
	w("\t\tip daddr { %s } reject with icmpx type admin-prohibited", strings.Join(denied, ", "))
	w("\t}")
	w("}")
	return b.String()
}

// disjoint returns the prefixes without those another one covers (nft
// refuses overlapping intervals in one set), sorted.
func disjoint(in []netip.Prefix) []netip.Prefix {
	ps := make([]netip.Prefix, 0, len(in))
	for _, p := range in {
		ps = append(ps, p.Masked())
	}
	// Wider first, so each prefix is checked against those that could
	// cover it.
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		if a.Bits() != b.Bits() {
			return a.Bits() - b.Bits()
		}
		return a.Addr().Compare(b.Addr())
	})
	var out []netip.Prefix
	for _, p := range ps {
		covered := false
		for _, q := range out {
			if q.Contains(p.Addr()) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}
