package redirect

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/meridian-mesh/meridian/internal/ports"
)

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
func mergePorts(rs []ports.Range) []ports.Range {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b ports.Range) int { return cmp.Compare(a.First, b.First) })
	var out []ports.Range
	for _, r := range rs {
		if n := len(out); n > 0 && int(r.First) <= int(out[n-1].Last)+1 {
			out[n-1].Last = max(out[n-1].Last, r.Last)
			continue
		}
		out = append(out, r)
	}
	return out
}
