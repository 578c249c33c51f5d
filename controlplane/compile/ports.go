package compile

import (
	"fmt"
	"strconv"
	"strings"
)

// PortSet is a set of ports written as an opaque-ports annotation:
// "25,443,4000-4010,mysql". Names match a port's name (a service port name
// or a container port name, depending on where the annotation is). The zero
// value is empty.
type PortSet struct {
	ranges [][2]uint32
	names  []string
}

// ParsePorts reads a comma-separated list of ports, inclusive ranges and
// names. Invalid items are skipped and reported; the rest still count, so a
// typo in one item does not make every port detectable.
func ParsePorts(s string) (PortSet, []error) {
	var p PortSet
	var errs []error
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if lo, hi, ok := strings.Cut(item, "-"); ok {
			a, err1 := parsePort(lo)
			b, err2 := parsePort(hi)
			if err1 != nil || err2 != nil || a > b {
				errs = append(errs, fmt.Errorf("port range %q is not <low>-<high> within 1-65535", item))
				continue
			}
			p.ranges = append(p.ranges, [2]uint32{a, b})
			continue
		}
		if item[0] >= '0' && item[0] <= '9' {
			n, err := parsePort(item)
			if err != nil {
				errs = append(errs, fmt.Errorf("port %q is not within 1-65535", item))
				continue
			}
			p.ranges = append(p.ranges, [2]uint32{n, n})
			continue
		}
		p.names = append(p.names, item)
	}
	return p, errs
}

// MustParsePorts is ParsePorts for constants; it panics on an invalid item.
func MustParsePorts(s string) PortSet {
	p, errs := ParsePorts(s)
	if len(errs) > 0 {
		panic(errs[0])
	}
	return p
}

func parsePort(s string) (uint32, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("bad port %q", s)
	}
	return uint32(n), nil
}

// Contains reports whether port (or its name, when not empty) is in the set.
func (p PortSet) Contains(port uint32, name string) bool {
	for _, r := range p.ranges {
		if port >= r[0] && port <= r[1] {
			return true
		}
	}
	if name != "" {
		for _, n := range p.names {
			if n == name {
				return true
			}
		}
	}
	return false
}

// Empty reports whether the set has no ports.
func (p PortSet) Empty() bool { return len(p.ranges) == 0 && len(p.names) == 0 }

// String is the set in annotation form.
func (p PortSet) String() string {
	var parts []string
	for _, r := range p.ranges {
		if r[0] == r[1] {
			parts = append(parts, strconv.FormatUint(uint64(r[0]), 10))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", r[0], r[1]))
		}
	}
	parts = append(parts, p.names...)
	return strings.Join(parts, ",")
}
