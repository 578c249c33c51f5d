package gateway

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

// l4Route is a TCPRoute or UDPRoute as attached to a listener of its
// protocol: its backends, across rules, each taking a connection (TCP) or
// a client's session (UDP) by weight.
type l4Route struct {
	ref      *gatewaypb.RouteRef
	backends []*gatewaypb.Backend
	created  string // RFC 3339, for ordering
	ns, name string
}

// l4Rule is what a TCPRouteRule and a UDPRouteRule both hold.
type l4Rule struct {
	name *gwv1.SectionName
	refs []gwv1.BackendRef
}

// l4Route compiles a TCPRoute or UDPRoute (kind). A TCP backend keeps its
// BackendTLSPolicy's TLS, which the proxy originates as for a TLS
// Terminate listener; UDP datagrams go in plaintext (no DTLS), so a UDP
// backend carries none.
func (c *compiler) l4Route(kind string, meta *metav1.ObjectMeta, rules []l4Rule) *compiled {
	cr := &compiled{}
	who := fmt.Sprintf("%s %s/%s", kind, meta.Namespace, meta.Name)
	lr := &l4Route{ref: &gatewaypb.RouteRef{Kind: kind, Namespace: meta.Namespace, Name: meta.Name},
		created: meta.CreationTimestamp.UTC().Format("2006-01-02T15:04:05Z"), ns: meta.Namespace, name: meta.Name}
	for ri, rr := range rules {
		if len(rules) == 1 {
			lr.ref.Rule = ruleName(rr.name, ri)
		}
		for bi, br := range rr.refs {
			b := c.backend(cr, kind, meta.Namespace, fmt.Sprintf("%s: spec.rules[%d].backendRefs[%d]", who, ri, bi), br, false)
			b.Protocol = gatewaypb.Backend_PROTOCOL_UNSPECIFIED // bytes, not HTTP
			if kind == "UDPRoute" {
				b.Tls = nil
			}
			lr.backends = append(lr.backends, b)
		}
	}
	cr.l4 = lr
	return cr
}

func tcpRules(rs []gwv1.TCPRouteRule) []l4Rule {
	out := make([]l4Rule, len(rs))
	for i, r := range rs {
		out[i] = l4Rule{r.Name, r.BackendRefs}
	}
	return out
}

func udpRules(rs []gwv1.UDPRouteRule) []l4Rule {
	out := make([]l4Rule, len(rs))
	for i, r := range rs {
		out[i] = l4Rule{r.Name, r.BackendRefs}
	}
	return out
}

// oldestL4 is the route a TCP or UDP listener serves: of those attached,
// the oldest (then by namespace/name), as the spec keeps the oldest route
// where routes conflict. The others stay Accepted and counted in the
// listener's attachedRoutes (the TCPRouteMultipleRoutesAttachment and
// UDPRouteMultipleRoutesAttachment conformance tests) but take no
// traffic.
func oldestL4(ls []*l4Route) *l4Route {
	var best *l4Route
	for _, l := range ls {
		if best == nil || l.created < best.created ||
			(l.created == best.created && (l.ns < best.ns || (l.ns == best.ns && l.name < best.name))) {
			best = l
		}
	}
	return best
}

// tcpRoute and udpRoute are a listener's served route in the snapshot.
func tcpRoute(ls []*l4Route) *gatewaypb.TCPRoute {
	if l := oldestL4(ls); l != nil {
		return &gatewaypb.TCPRoute{Route: l.ref, Backends: l.backends}
	}
	return nil
}

func udpRoute(ls []*l4Route) *gatewaypb.UDPRoute {
	if l := oldestL4(ls); l != nil {
		return &gatewaypb.UDPRoute{Route: l.ref, Backends: l.backends}
	}
	return nil
}
