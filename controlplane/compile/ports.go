package compile

import (
	"fmt"
	"strings"

	"github.com/meridian-mesh/meridian/internal/ports"
)

// PortSet is a set of ports written as an opaque-ports annotation:
// "25,443,4000-4010,mysql". Names match a port's name (a service port name
// or a container port name, depending on where the annotation is). The zero
// value is empty.
type PortSet struct {
	ranges []ports.Range
	names  []string
}

// ParsePorts reads a comma-separated list of ports, inclusive ranges and
// names (internal/ports' grammar, plus names: an item that neither starts
// with a digit nor holds a '-'). Invalid items are skipped and reported; the
// rest still count, so a typo in one item does not make every port
// detectable.
func ParsePorts(s string) (PortSet, []error) {
	var p PortSet
	var errs []error
	for _, item := range ports.Items(s) {
		isRange := strings.Contains(item, "-")
		if !isRange && (item[0] < '0' || item[0] > '9') {
			p.names = append(p.names, item)
			continue
		}
		r, err := ports.ParseRange(item)
		switch {
		case err != nil && isRange:
			errs = append(errs, fmt.Errorf("port range %q is not <low>-<high> within 1-65535", item))
		case err != nil:
			errs = append(errs, fmt.Errorf("port %q is not within 1-65535", item))
		default:
			p.ranges = append(p.ranges, r)
		}
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

// Contains reports whether port (or its name, when not empty) is in the set.
func (p PortSet) Contains(port uint32, name string) bool {
	for _, r := range p.ranges {
		if r.Contains(port) {
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
	s := ports.Join(p.ranges)
	if len(p.names) > 0 {
		if s != "" {
			s += ","
		}
		s += strings.Join(p.names, ",")
	}
	return s
}
