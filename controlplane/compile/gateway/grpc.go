package gateway

import (
	"fmt"
	"regexp"
	"strings"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

// grpcRoute compiles a GRPCRoute: method matches become paths
// ("/<service>/<method>"), its rules are marked grpc, and its backends
// speak HTTP/2 without TLS unless their appProtocol or a BackendTLSPolicy
// says otherwise.
func (c *compiler) grpcRoute(r *gwv1.GRPCRoute) *compiled {
	cr := &compiled{}
	who := fmt.Sprintf("GRPCRoute %s/%s", r.Namespace, r.Name)
	for ri, rr := range r.Spec.Rules {
		field := fmt.Sprintf("%s: spec.rules[%d]", who, ri)
		ref := &gatewaypb.RouteRef{Kind: "GRPCRoute", Namespace: r.Namespace, Name: r.Name, Rule: ruleName(rr.Name, ri)}
		matches := rr.Matches
		if len(matches) == 0 {
			matches = []gwv1.GRPCRouteMatch{{}}
		}
		var keys []rule
		var pms []*gatewaypb.Match
		for mi, gm := range matches {
			pm, k, err := grpcMatch(gm)
			if err != "" {
				cr.invalid(string(gwv1.RouteReasonUnsupportedValue), fmt.Sprintf("%s.matches[%d].%s", field, mi, err))
				continue
			}
			k.matchIdx = mi
			keys, pms = append(keys, k), append(pms, pm)
		}
		filters := c.grpcFilters(cr, r.Namespace, field+".filters", rr.Filters)
		var backends []*gatewaypb.Backend
		for bi, br := range rr.BackendRefs {
			b := c.backend(cr, "GRPCRoute", r.Namespace, fmt.Sprintf("%s.backendRefs[%d]", field, bi), br.BackendRef, true)
			for _, f := range c.grpcFilters(cr, r.Namespace, fmt.Sprintf("%s.backendRefs[%d].filters", field, bi), br.Filters) {
				if f.GetMirror() != nil {
					cr.invalid(string(gwv1.RouteReasonUnsupportedValue), fmt.Sprintf("%s.backendRefs[%d].filters: only RequestHeaderModifier and ResponseHeaderModifier are supported on a backendRef", field, bi))
					continue
				}
				b.Filters = append(b.Filters, f)
			}
			backends = append(backends, b)
		}
		sp := c.session(cr, field, rr.SessionPersistence)
		for i, pm := range pms {
			k := keys[i]
			k.pb = &gatewaypb.Rule{Route: ref, Match: pm, Filters: filters, Backends: backends, SessionPersistence: sp, Grpc: true}
			k.created, k.ns, k.name, k.ruleIdx = r.CreationTimestamp, r.Namespace, r.Name, ri
			cr.rules = append(cr.rules, &k)
		}
	}
	return cr
}

// grpcMatch compiles a GRPCRouteMatch. Exact service and method: an EXACT
// path; service only: the PREFIX "/<service>"; method only or regular
// expressions: a REGEX over the path.
func grpcMatch(gm gwv1.GRPCRouteMatch) (*gatewaypb.Match, rule, string) {
	var k rule
	pm := &gatewaypb.Match{}
	if m := gm.Method; m != nil {
		svc, meth := "", ""
		if m.Service != nil {
			svc = *m.Service
		}
		if m.Method != nil {
			meth = *m.Method
		}
		typ := gwv1.GRPCMethodMatchExact
		if m.Type != nil {
			typ = *m.Type
		}
		switch typ {
		case gwv1.GRPCMethodMatchExact:
			if strings.Contains(svc, "/") || strings.Contains(meth, "/") {
				return nil, k, "method: service and method must not contain \"/\""
			}
			switch {
			case svc != "" && meth != "":
				pm.Path = &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_EXACT, Value: "/" + svc + "/" + meth}
				k.exact = true
			case svc != "":
				pm.Path = &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_PREFIX, Value: "/" + svc}
			case meth != "":
				pm.Path = &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_REGEX, Value: "/[^/]+/" + regexp.QuoteMeta(meth)}
				k.regex = true
			default:
				return nil, k, "method: service or method is required"
			}
		case gwv1.GRPCMethodMatchRegularExpression:
			for _, x := range []struct{ f, v string }{{"service", svc}, {"method", meth}} {
				if _, err := regexp.Compile(x.v); err != nil {
					return nil, k, fmt.Sprintf("method.%s %q is not a valid RE2 regular expression: %v", x.f, x.v, err)
				}
			}
			if svc == "" {
				svc = "[^/]+"
			}
			if meth == "" {
				meth = "[^/]+"
			}
			pm.Path = &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_REGEX, Value: "/(?:" + svc + ")/(?:" + meth + ")"}
			k.regex = true
		default:
			return nil, k, fmt.Sprintf("method.type %q is not supported (allowed: Exact, RegularExpression)", typ)
		}
		k.pathLen = len(svc) + len(meth)
	}
	hdrs, bad := headerMatches(len(gm.Headers), func(i int) (string, string, string) {
		h := gm.Headers[i]
		typ := ""
		if h.Type != nil {
			typ = string(*h.Type)
		}
		return string(h.Name), typ, h.Value
	})
	if bad != "" {
		return nil, k, bad
	}
	pm.Headers = hdrs
	k.headers = len(pm.Headers)
	return pm, k, ""
}

func (c *compiler) grpcFilters(cr *compiled, ns, field string, fs []gwv1.GRPCRouteFilter) []*gatewaypb.Filter {
	var out []*gatewaypb.Filter
	for i, f := range fs {
		fld := fmt.Sprintf("%s[%d]", field, i)
		switch f.Type {
		case gwv1.GRPCRouteFilterRequestHeaderModifier:
			if f.RequestHeaderModifier == nil {
				cr.invalid(string(gwv1.RouteReasonUnsupportedValue), fld+".requestHeaderModifier is required with type RequestHeaderModifier")
				continue
			}
			out = append(out, &gatewaypb.Filter{Filter: &gatewaypb.Filter_RequestHeaders{RequestHeaders: headerModifier(f.RequestHeaderModifier)}})
		case gwv1.GRPCRouteFilterResponseHeaderModifier:
			if f.ResponseHeaderModifier == nil {
				cr.invalid(string(gwv1.RouteReasonUnsupportedValue), fld+".responseHeaderModifier is required with type ResponseHeaderModifier")
				continue
			}
			out = append(out, &gatewaypb.Filter{Filter: &gatewaypb.Filter_ResponseHeaders{ResponseHeaders: headerModifier(f.ResponseHeaderModifier)}})
		case gwv1.GRPCRouteFilterRequestMirror:
			if m := c.mirror(cr, ns, "GRPCRoute", fld, f.RequestMirror); m != nil {
				out = append(out, m)
			}
		default:
			cr.invalid(string(gwv1.RouteReasonUnsupportedValue), fmt.Sprintf("%s.type %q is not supported (allowed: RequestHeaderModifier, ResponseHeaderModifier, RequestMirror)", fld, f.Type))
		}
	}
	return out
}
