package gateway

import (
	"errors"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

// The mesh's compiler (controlplane/compile: GAMMA routes with a Service
// parent) compiles route matches and header filters into the same model
// as the gateway's route table, with the same semantics and precedence:
// these are the gateway's own functions, exported for it.

// MatchOrder is a match's place in the Gateway API's precedence among the
// matches of one hostname (or, in the mesh, one Service port).
type MatchOrder struct{ r rule }

// Before reports whether a takes precedence over b: an Exact path, then
// the longest path (a prefix before a regular expression of the same
// length), then a method, the most headers, the most query parameters,
// then the oldest route, namespace/name, rule and match order.
func (a MatchOrder) Before(b MatchOrder) bool { return a.r.before(&b.r) }

// Of places the match in its route: the route's creation time, namespace
// and name, the rule's and the match's index.
func (a MatchOrder) Of(created metav1.Time, ns, name string, ruleIdx, matchIdx int) MatchOrder {
	a.r.created, a.r.ns, a.r.name, a.r.ruleIdx, a.r.matchIdx = created, ns, name, ruleIdx, matchIdx
	return a
}

// HTTPMatch compiles an HTTPRouteMatch as the gateway does. The error
// names the field below the match (e.g. `path.value "/(" is not a valid
// RE2 regular expression: ...`) and what is allowed.
func HTTPMatch(hm gwv1.HTTPRouteMatch) (*gatewaypb.Match, MatchOrder, error) {
	m, k, bad := httpMatch(hm)
	if bad != "" {
		return nil, MatchOrder{}, errors.New(bad)
	}
	return m, MatchOrder{r: k}, nil
}

// GRPCMatch compiles a GRPCRouteMatch as the gateway does: method matches
// become paths ("/<service>/<method>").
func GRPCMatch(gm gwv1.GRPCRouteMatch) (*gatewaypb.Match, MatchOrder, error) {
	m, k, bad := grpcMatch(gm)
	if bad != "" {
		return nil, MatchOrder{}, errors.New(bad)
	}
	return m, MatchOrder{r: k}, nil
}

// HeaderModifier compiles a RequestHeaderModifier or ResponseHeaderModifier.
func HeaderModifier(h *gwv1.HTTPHeaderFilter) *gatewaypb.HeaderModifier {
	if h == nil {
		return nil
	}
	return headerModifier(h)
}
