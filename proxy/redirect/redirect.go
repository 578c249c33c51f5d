// Package redirect installs the nftables rules that send a pod's TCP traffic
// through its sidecar proxy: what the meridian-init container does before the
// application starts.
//
// Everything lives in one table, "inet meridian", so the rules never disturb
// anyone else's and are replaced or removed whole. The rules are built once
// as plain data (chains of rules, below); Apply turns that data into netlink
// messages and String into the text `nft list table inet meridian` prints, so
// what a human reads in --dry-run is what the kernel gets.
package redirect

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/meridian-mesh/meridian/internal/ports"
)

// TableName is the nftables table (family inet) that holds all our rules.
const TableName = "meridian"

// Defaults, as docs/kubernetes.md fixes them.
const (
	DefaultInboundPort  = 4143
	DefaultOutboundPort = 4140
	DefaultProxyUID     = 2102
)

// AdminPorts are the proxy's own ports (4190, 4191: admin, probes, metrics).
// Their inbound traffic is never redirected, whatever the configuration, so
// that the kubelet's probes and Prometheus reach the proxy itself.
var AdminPorts = ports.Range{First: 4190, Last: 4191}

// Config says where to redirect and what to leave alone.
type Config struct {
	InboundPort  uint16 // the proxy's inbound listener
	OutboundPort uint16 // the proxy's outbound listener
	ProxyUID     uint32 // the proxy's own connections are never redirected

	SkipInboundPorts  []ports.Range  // destination ports whose inbound traffic bypasses the proxy
	SkipOutboundPorts []ports.Range  // destination ports whose outbound traffic bypasses the proxy
	SkipOutboundCIDRs []netip.Prefix // destinations whose outbound traffic bypasses the proxy
}

// DefaultConfig is the configuration of an injected pod without annotations.
func DefaultConfig() Config {
	return Config{InboundPort: DefaultInboundPort, OutboundPort: DefaultOutboundPort, ProxyUID: DefaultProxyUID}
}

// Validate reports a configuration that cannot be installed.
func (c Config) Validate() error {
	var errs []error
	if c.InboundPort == 0 {
		errs = append(errs, errors.New("inbound port must be 1-65535"))
	}
	if c.OutboundPort == 0 {
		errs = append(errs, errors.New("outbound port must be 1-65535"))
	}
	if c.InboundPort != 0 && c.InboundPort == c.OutboundPort {
		errs = append(errs, fmt.Errorf("inbound and outbound ports are both %d", c.InboundPort))
	}
	for _, r := range slices.Concat(c.SkipInboundPorts, c.SkipOutboundPorts) {
		if r.First == 0 || r.First > r.Last {
			errs = append(errs, fmt.Errorf("invalid port range %d-%d", r.First, r.Last))
		}
	}
	for _, p := range c.SkipOutboundCIDRs {
		if !p.IsValid() {
			errs = append(errs, errors.New("invalid CIDR in skipped outbound CIDRs"))
		}
	}
	return errors.Join(errs...)
}

// A chain is one base chain of our table: a NAT hook and its rules in order.
type chain struct {
	name     string
	hook     string // "prerouting" or "output"
	priority string // as nft prints it; the value is always -100 (dstnat), where iptables' nat table sits
	rules    []rule
}

// A rule is one match and what to do with the packets it matches: return
// (leave the connection alone) or redirect to a local port.
type rule struct {
	match    match
	redirect uint16 // 0: return
}

// The matches we use. Each String is the form nft prints, so that String of
// a Config reads exactly like `nft list table inet meridian`.
type (
	match interface{ String() string }

	tcpMatch     struct{}     // every TCP packet
	dportMatch   ports.Range  // TCP destination port(s)
	skuidMatch   uint32       // the sending socket's owner
	oifnameMatch string       // the outgoing interface
	daddrMatch   netip.Prefix // the destination address
)

func (tcpMatch) String() string       { return "meta l4proto tcp" }
func (m dportMatch) String() string   { return "tcp dport " + ports.Range(m).String() }
func (m skuidMatch) String() string   { return fmt.Sprintf("meta skuid %d", uint32(m)) }
func (m oifnameMatch) String() string { return fmt.Sprintf("oifname %q", string(m)) }
func (m daddrMatch) String() string {
	p := netip.Prefix(m)
	s := p.String()
	if p.IsSingleIP() {
		s = p.Addr().String() // nft drops a host's /32 or /128
	}
	if p.Addr().Is4() {
		return "ip daddr " + s
	}
	return "ip6 daddr " + s
}

func (r rule) String() string {
	if r.redirect != 0 {
		return fmt.Sprintf("%s redirect to :%d", r.match, r.redirect)
	}
	return r.match.String() + " return"
}

// chains builds the rules. Order matters inside a chain: the first rule that
// matches decides, so the exceptions come before the final redirect.
func (c Config) chains() []chain {
	// Inbound: connections arriving from outside the pod. Traffic the pod
	// sends itself never reaches nat prerouting (loopback packets belong to
	// connections NATed, or not, in output already), so no loopback or uid
	// exceptions are needed here.
	inbound := chain{name: "inbound", hook: "prerouting", priority: "dstnat"}
	// The inbound port itself would be redirected onto itself: skip it so
	// that a peer dialling it directly is not NATed for nothing.
	skipIn := mergePorts(append(slices.Clone(c.SkipInboundPorts), AdminPorts, ports.Range{First: c.InboundPort, Last: c.InboundPort}))
	for _, r := range skipIn {
		inbound.rules = append(inbound.rules, rule{match: dportMatch(r)})
	}
	inbound.rules = append(inbound.rules, rule{match: tcpMatch{}, redirect: c.InboundPort})

	// Outbound: connections the pod opens.
	outbound := chain{name: "outbound", hook: "output", priority: "-100"}
	outbound.rules = append(outbound.rules,
		// The proxy's own connections (to the real destination, after it
		// handled the application's) must leave, or they would loop back
		// into the proxy forever.
		rule{match: skuidMatch(c.ProxyUID)},
		// Everything routed through lo stays in the pod: 127.0.0.0/8, ::1,
		// and also the pod's own IPs, which the kernel routes via lo too.
		// Matching the interface rather than 127.0.0.0/8 is what covers an
		// application calling itself by its pod IP: redirected, the outbound
		// proxy would treat that as a call to a meshed peer (mTLS) and dial
		// the application directly as the proxy uid, skipping the inbound
		// side, so the call would fail. Returning lets it connect directly,
		// as it would without a mesh. (The proxy's inbound side, forwarding
		// to the application, is covered by the uid rule already.)
		rule{match: oifnameMatch("lo")},
	)
	for _, p := range c.SkipOutboundCIDRs {
		outbound.rules = append(outbound.rules, rule{match: daddrMatch(p.Masked())})
	}
	for _, r := range mergePorts(c.SkipOutboundPorts) {
		outbound.rules = append(outbound.rules, rule{match: dportMatch(r)})
	}
	outbound.rules = append(outbound.rules, rule{match: tcpMatch{}, redirect: c.OutboundPort})

	return []chain{inbound, outbound}
}

// String returns the table as `nft list table inet meridian` prints it once
// Apply has installed it; it is also valid input for `nft -f`.
func (c Config) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", TableName)
	for i, ch := range c.chains() {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "\tchain %s {\n", ch.name)
		fmt.Fprintf(&b, "\t\ttype nat hook %s priority %s; policy accept;\n", ch.hook, ch.priority)
		for _, r := range ch.rules {
			fmt.Fprintf(&b, "\t\t%s\n", r)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// Rules lists the installed rules one per line as "chain: rule", for logs.
func (c Config) Rules() []string {
	var out []string
	for _, ch := range c.chains() {
		for _, r := range ch.rules {
			out = append(out, ch.name+": "+r.String())
		}
	}
	return out
}

// RemoveString is what Remove does, in nft's words.
func RemoveString() string { return "delete table inet " + TableName + "\n" }
