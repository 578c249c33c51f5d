// Package ports holds the port lists the proxy and the control plane share,
// without importing either.
package ports

import (
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

// Parse reads a comma-separated list of ports (1-65535); an empty string
// is an empty list.
func Parse(s string) ([]uint16, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []uint16
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.ParseUint(strings.TrimSpace(f), 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("%q is not a port (1-65535)", f)
		}
		out = append(out, uint16(n))
	}
	return out, nil
}
