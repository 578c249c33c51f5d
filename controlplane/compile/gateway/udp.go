package gateway

import (
	"fmt"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

// udpRoute is a UDPRoute as attached to a UDP listener.
type udpRoute struct {
	pb      *gatewaypb.UDPRoute
	created string // RFC 3339, for ordering
	ns      string
	name    string
}

// udpRoute compiles a UDPRoute: its backends, across rules, each taking a
// client's session by weight. Datagrams go to the backend in plaintext:
// a BackendTLSPolicy does not apply to UDP (no DTLS), so the backend
// carries none.
func (c *compiler) udpRoute(r *gwv1.UDPRoute) *compiled {
	cr := &compiled{}
	who := fmt.Sprintf("UDPRoute %s/%s", r.Namespace, r.Name)
	pb := &gatewaypb.UDPRoute{Route: &gatewaypb.RouteRef{Kind: "UDPRoute", Namespace: r.Namespace, Name: r.Name}}
	for ri, rr := range r.Spec.Rules {
		if len(r.Spec.Rules) == 1 {
			pb.Route.Rule = ruleName(rr.Name, ri)
		}
		for bi, br := range rr.BackendRefs {
			b := c.backend(cr, "UDPRoute", r.Namespace, fmt.Sprintf("%s: spec.rules[%d].backendRefs[%d]", who, ri, bi), br, false)
			b.Protocol = gatewaypb.Backend_PROTOCOL_UNSPECIFIED // datagrams, not HTTP
			b.Tls = nil
			pb.Backends = append(pb.Backends, b)
		}
	}
	cr.udp = &udpRoute{pb: pb, created: r.CreationTimestamp.UTC().Format("2006-01-02T15:04:05Z"), ns: r.Namespace, name: r.Name}
	return cr
}

// udpRouteOf is the route a UDP listener serves: of those attached, the
// oldest (then by namespace/name), as for TCP listeners (tcpRouteOf). The
// others stay Accepted and counted in attachedRoutes but take no session.
func udpRouteOf(us []*udpRoute) *gatewaypb.UDPRoute {
	var best *udpRoute
	for _, u := range us {
		if best == nil || u.created < best.created ||
			(u.created == best.created && (u.ns < best.ns || (u.ns == best.ns && u.name < best.name))) {
			best = u
		}
	}
	if best == nil {
		return nil
	}
	return best.pb
}
