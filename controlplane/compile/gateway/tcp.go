package gateway

import (
	"fmt"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

// tcpRoute is a TCPRoute as attached to a TCP listener.
type tcpRoute struct {
	pb      *gatewaypb.TCPRoute
	created string // RFC 3339, for ordering
	ns      string
	name    string
}

// tcpRoute compiles a TCPRoute: its backends, across rules, each taking a
// connection by weight. A backend keeps its BackendTLSPolicy's TLS, which
// the proxy originates as for a TLS Terminate listener.
func (c *compiler) tcpRoute(r *gwv1.TCPRoute) *compiled {
	cr := &compiled{}
	who := fmt.Sprintf("TCPRoute %s/%s", r.Namespace, r.Name)
	pb := &gatewaypb.TCPRoute{Route: &gatewaypb.RouteRef{Kind: "TCPRoute", Namespace: r.Namespace, Name: r.Name}}
	for ri, rr := range r.Spec.Rules {
		if len(r.Spec.Rules) == 1 {
			pb.Route.Rule = ruleName(rr.Name, ri)
		}
		for bi, br := range rr.BackendRefs {
			b := c.backend(cr, "TCPRoute", r.Namespace, fmt.Sprintf("%s: spec.rules[%d].backendRefs[%d]", who, ri, bi), br, false)
			b.Protocol = gatewaypb.Backend_PROTOCOL_UNSPECIFIED // bytes, not HTTP
			pb.Backends = append(pb.Backends, b)
		}
	}
	cr.tcp = &tcpRoute{pb: pb, created: r.CreationTimestamp.UTC().Format("2006-01-02T15:04:05Z"), ns: r.Namespace, name: r.Name}
	return cr
}

// tcpRouteOf is the route a TCP listener serves: of those attached, the
// oldest (then by namespace/name), as the spec keeps the oldest route
// where routes conflict. The others stay Accepted and counted in the
// listener's attachedRoutes (the TCPRouteMultipleRoutesAttachment
// conformance test) but take no connection.
func tcpRouteOf(ts []*tcpRoute) *gatewaypb.TCPRoute {
	var best *tcpRoute
	for _, t := range ts {
		if best == nil || t.created < best.created ||
			(t.created == best.created && (t.ns < best.ns || (t.ns == best.ns && t.name < best.name))) {
			best = t
		}
	}
	if best == nil {
		return nil
	}
	return best.pb
}
