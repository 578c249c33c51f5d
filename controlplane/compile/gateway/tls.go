package gateway

import (
	"fmt"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

// tlsRoute is a TLSRoute as attached to one listener.
type tlsRoute struct {
	pb        *gatewaypb.TLSRoute // hostnames unset: per listener
	hostnames []string
	created   string // RFC 3339, for ordering ties
	ns, name  string
}

// tlsRoute compiles a TLSRoute: its backends, across rules. A backend keeps
// its BackendTLSPolicy's TLS, which a Terminate listener originates (the
// spec's re-encryption) and a Passthrough listener drops (see snapshot).
func (c *compiler) tlsRoute(r *gwv1.TLSRoute) *compiled {
	cr := &compiled{}
	who := fmt.Sprintf("TLSRoute %s/%s", r.Namespace, r.Name)
	pb := &gatewaypb.TLSRoute{Route: &gatewaypb.RouteRef{Kind: "TLSRoute", Namespace: r.Namespace, Name: r.Name}}
	for ri, rr := range r.Spec.Rules {
		if len(r.Spec.Rules) == 1 {
			pb.Route.Rule = ruleName(rr.Name, ri)
		}
		for bi, br := range rr.BackendRefs {
			b := c.backend(cr, "TLSRoute", r.Namespace, fmt.Sprintf("%s: spec.rules[%d].backendRefs[%d]", who, ri, bi), br, false)
			b.Protocol = gatewaypb.Backend_PROTOCOL_UNSPECIFIED // bytes, not HTTP
			pb.Backends = append(pb.Backends, b)
		}
	}
	cr.tls = &tlsRoute{pb: pb, created: r.CreationTimestamp.UTC().Format("2006-01-02T15:04:05Z"), ns: r.Namespace, name: r.Name}
	return cr
}
