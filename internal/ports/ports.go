// Package ports is the one grammar of port lists that the proxy, the init
// container and the control plane share: a port (1-65535), an inclusive
// range "4000-4010", and comma-separated lists of them as the
// skip-*-ports and opaque-ports annotations and the proxy's flags hold them.
// It imports nothing from the proxy, the control plane or Kubernetes.
package ports

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// DefaultOpaque are the ports Linkerd treats as opaque unless told
// otherwise: SMTP (25, 587), MySQL (3306), Galera (4444), PostgreSQL (5432),
// Redis (6379), Elasticsearch (9300) and memcached (11211). Most are
// server-speaks-first protocols, which detection would make wait for its
// timeout. The controller applies them to services through the
// destination API; meridian-proxy applies them itself in static mode.
const DefaultOpaque = "25,587,3306,4444,5432,6379,9300,11211"

// Range is an inclusive range of TCP ports; a single port has First == Last.
type Range struct{ First, Last uint16 }

// String is the range as a list holds it: "25" or "4000-4010".
func (r Range) String() string {
	if r.First == r.Last {
		return strconv.Itoa(int(r.First))
	}
	return strconv.Itoa(int(r.First)) + "-" + strconv.Itoa(int(r.Last))
}

// Contains reports whether port is within the range.
func (r Range) Contains(port uint32) bool {
	return port >= uint32(r.First) && port <= uint32(r.Last)
}

// ParsePort reads one port number, 1-65535; spaces around it are ignored.
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

// ParseRange reads one item of a list: a port, or a range <low>-<high>
// whose ends are ports and whose low end is not above its high end.
func ParseRange(item string) (Range, error) {
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
		return Range{}, fmt.Errorf("range %q: %w", strings.TrimSpace(item), err)
	}
	if err != nil {
		return Range{}, err
	}
	return Range{first, last}, nil
}

// Items splits a list at its commas, trimming spaces and dropping empty
// items, so that "25, 4000-4010,," is ["25" "4000-4010"].
func Items(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// ParseRanges reads a comma-separated list of ports and ranges,
// "25,3306,4000-4010". Spaces and empty items are ignored; anything else
// that is not a port or a range is an error naming the item. Callers that
// also accept port names (opaque-ports) walk Items with ParseRange instead.
func ParseRanges(s string) ([]Range, error) {
	var out []Range
	for _, item := range Items(s) {
		r, err := ParseRange(item)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// Join is the list form of rs, "25,4000-4010", which ParseRanges reads back.
func Join(rs []Range) string {
	var b strings.Builder
	for i, r := range rs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(r.String())
	}
	return b.String()
}

// Parse reads a comma-separated list of single ports (1-65535), as the
// proxy's --opaque-ports flag takes them; an empty string is an empty list.
// Unlike ParseRanges, it takes no ranges and an empty item is an error.
func Parse(s string) ([]uint16, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []uint16
	for _, f := range strings.Split(s, ",") {
		n, err := ParsePort(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not a port (1-65535)", f)
		}
		out = append(out, n)
	}
	return out, nil
}
