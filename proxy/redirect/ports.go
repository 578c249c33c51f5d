package redirect

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// PortRange is an inclusive range of TCP ports; a single port has First == Last.
type PortRange struct{ First, Last uint16 }

func (r PortRange) String() string {
	if r.First == r.Last {
		return strconv.Itoa(int(r.First))
	}
	return fmt.Sprintf("%d-%d", r.First, r.Last)
}

// ParsePorts reads a comma-separated list of ports and inclusive ranges,
// "25,3306,4000-4010", as the skip-*-ports annotations hold them. Spaces and
// empty items are ignored. Anything else that is not a port is an error:
// unlike the control plane, which skips a bad item and goes on, the init
// container must not guess which traffic a typo meant to let through. (The
// parser of controlplane/compile is not reused because it lives with
// Kubernetes types, which the data plane does not import, and it accepts
// port names, which only the injector can resolve.)
func ParsePorts(s string) ([]PortRange, error) {
	var out []PortRange
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(item, "-")
		first, err := ParsePort(lo)
		last := first
		if err == nil && isRange {
			last, err = ParsePort(hi)
			if err == nil && first > last {
				err = errors.New("it ends before it starts")
			}
		}
		if err != nil && isRange {
			return nil, fmt.Errorf("range %q: %w", item, err)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, PortRange{first, last})
	}
	return out, nil
}

// ParsePort reads one port number, 1-65535.
func ParsePort(s string) (uint16, error) {
	s = strings.TrimSpace(s)
	n, err := strconv.ParseUint(s, 10, 64)
	switch {
	case s == "":
		return 0, errors.New("missing port number")
	case err != nil:
		return 0, fmt.Errorf("%q is not a port number", s)
	case n < 1 || n > 65535:
		return 0, fmt.Errorf("port %d is out of range 1-65535", n)
	}
	return uint16(n), nil
}

// ParseCIDRs reads a comma-separated list of CIDRs, IPv4 or IPv6
// ("10.0.0.0/8,fd00::/8"). A bare address means that one host. Host bits
// are cleared, as iptables does: 10.1.2.3/8 is 10.0.0.0/8.
func ParseCIDRs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if a, err := netip.ParseAddr(item); err == nil && a.Zone() == "" {
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(item)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR (like 10.0.0.0/8 or fd00::/8)", item)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// mergePorts sorts ranges and joins those that overlap or touch, so that the
// rules list each port once.
func mergePorts(rs []PortRange) []PortRange {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b PortRange) int { return cmp.Compare(a.First, b.First) })
	var out []PortRange
	for _, r := range rs {
		if n := len(out); n > 0 && int(r.First) <= int(out[n-1].Last)+1 {
			out[n-1].Last = max(out[n-1].Last, r.Last)
			continue
		}
		out = append(out, r)
	}
	return out
}
