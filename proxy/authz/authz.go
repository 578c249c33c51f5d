// Package authz decides who may reach a meshed workload: the proxy's
// default inbound policy (Linkerd's config.linkerd.io/default-inbound-policy
// and its values), with the pod's HTTP probes always allowed so that the
// kubelet keeps seeing it healthy.
package authz

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Policy is a default inbound policy.
type Policy string

// The policies, from the most open to the most closed.
const (
	// AllUnauthenticated allows every client (the default).
	AllUnauthenticated Policy = "all-unauthenticated"
	// ClusterUnauthenticated allows every client from the cluster's
	// networks, meshed or not.
	ClusterUnauthenticated Policy = "cluster-unauthenticated"
	// AllAuthenticated allows only meshed clients: mutual TLS with an
	// identity of the trust domain.
	AllAuthenticated Policy = "all-authenticated"
	// ClusterAuthenticated allows meshed clients from the cluster's
	// networks.
	ClusterAuthenticated Policy = "cluster-authenticated"
	// Deny allows nobody (but the probes).
	Deny Policy = "deny"
)

// Policies lists the valid policies, for errors and help.
var Policies = []Policy{AllUnauthenticated, ClusterUnauthenticated, AllAuthenticated, ClusterAuthenticated, Deny}

// ParsePolicy reads a policy's name.
func ParsePolicy(s string) (Policy, error) {
	p := Policy(strings.TrimSpace(s))
	if slices.Contains(Policies, p) {
		return p, nil
	}
	names := make([]string, len(Policies))
	for i, p := range Policies {
		names[i] = string(p)
	}
	return "", fmt.Errorf("%q is not a default inbound policy: use %s", s, strings.Join(names, ", "))
}

// DefaultClusterNetworks are the private ranges a cluster's pods and nodes
// are addressed from unless told otherwise (Linkerd's default).
var DefaultClusterNetworks = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("172.16.0.0/12"), netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("fd00::/8"),
}

// Probe is an HTTP path on a port that is always allowed: a kubelet
// probe of the application, which comes from the node, unauthenticated.
type Probe struct {
	Port uint16
	Path string
}

// ParseProbes reads "8080/healthz,8080/ready" (the injector's
// --probe-paths).
func ParseProbes(s string) ([]Probe, error) {
	var ps []Probe
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		port, path, ok := strings.Cut(f, "/")
		n, err := strconv.ParseUint(port, 10, 16)
		if !ok || err != nil || n == 0 {
			return nil, fmt.Errorf("%q is not a probe: want PORT/PATH, e.g. 8080/healthz", f)
		}
		ps = append(ps, Probe{Port: uint16(n), Path: "/" + path})
	}
	return ps, nil
}

// Config is a proxy's inbound authorization.
type Config struct {
	Default         Policy         // empty: AllUnauthenticated
	ClusterNetworks []netip.Prefix // nil: DefaultClusterNetworks
	Probes          []Probe
}

// Client is who opened an inbound connection.
type Client struct {
	ID   string     // its SPIFFE ID when it spoke mutual TLS, else empty
	Addr netip.Addr // its address
}

// Conn decides a connection from c (opaque TCP, or before a request's path
// is known).
func (cfg Config) Conn(c Client) bool {
	switch cfg.Default {
	case "", AllUnauthenticated:
		return true
	case ClusterUnauthenticated:
		return cfg.inCluster(c.Addr)
	case AllAuthenticated:
		return c.ID != ""
	case ClusterAuthenticated:
		return c.ID != "" && cfg.inCluster(c.Addr)
	}
	return false
}

// HTTP decides a request from c to port and path: a probe's path is
// allowed whatever the policy.
func (cfg Config) HTTP(c Client, port uint16, path string) bool {
	return cfg.Conn(c) || cfg.IsProbe(port, path)
}

// IsProbe reports whether port and path are one of the pod's probes.
func (cfg Config) IsProbe(port uint16, path string) bool {
	for _, p := range cfg.Probes {
		if p.Port == port && p.Path == path {
			return true
		}
	}
	return false
}

// Name is the policy's name, for metrics.
func (cfg Config) Name() string {
	if cfg.Default == "" {
		return string(AllUnauthenticated)
	}
	return string(cfg.Default)
}

func (cfg Config) inCluster(a netip.Addr) bool {
	nets := cfg.ClusterNetworks
	if nets == nil {
		nets = DefaultClusterNetworks
	}
	a = a.Unmap()
	for _, n := range nets {
		if n.Contains(a) {
			return true
		}
	}
	return false
}
