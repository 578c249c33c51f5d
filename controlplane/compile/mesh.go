package compile

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meridian-mesh/meridian/controlplane/store"
)

// GAMMA: HTTPRoutes and GRPCRoutes whose parentRef is a Service (group "",
// kind Service) route that Service's mesh traffic. A proxy's profile has
// one split for the whole authority (DstOverrides), not one per request
// match, so what a mesh route can say is the weights of a catch-all rule:
// a rule with no matches, or whose matches are all the catch-all (path
// prefix "/", no headers, query parameters or method; a GRPCRoute match
// with neither method nor headers), and no filters. Other rules are not
// carried: the route's status says so (PartiallyInvalid, or Accepted False
// when no rule is left).

// MeshControllerName is the controllerName of the parent statuses Meridian
// writes for Service parents: the mesh's, apart from the gateway's
// (meridian.io/gateway-controller), so neither writer touches the other's
// entries.
const MeshControllerName gwv1.GatewayController = "meridian.io/mesh-controller"

// meshRoute is an HTTPRoute or a GRPCRoute, as the mesh reads it.
type meshRoute struct {
	kind    string // HTTPRoute or GRPCRoute
	meta    metav1.ObjectMeta
	parents []gwv1.ParentReference
	rules   []meshRule
}

type meshRule struct {
	// notCarried says why the rule is not carried; empty when it is.
	notCarried string
	backends   []gwv1.BackendRef
}

func (m *meshRoute) key() string { return m.meta.Namespace + "/" + m.meta.Name }

func fromHTTPRoute(r *gwv1.HTTPRoute) *meshRoute {
	m := &meshRoute{kind: "HTTPRoute", meta: r.ObjectMeta, parents: r.Spec.ParentRefs}
	for i, rule := range r.Spec.Rules {
		mr := meshRule{}
		for _, b := range rule.BackendRefs {
			mr.backends = append(mr.backends, b.BackendRef)
		}
		for j, mt := range rule.Matches {
			if !httpCatchAll(mt) {
				mr.notCarried = fmt.Sprintf("spec.rules[%d].matches[%d]: only the catch-all match (path prefix \"/\", no headers, queryParams or method) is carried in the mesh", i, j)
				break
			}
		}
		if mr.notCarried == "" && (len(rule.Filters) > 0 || hasBackendFilters(rule.BackendRefs)) {
			mr.notCarried = fmt.Sprintf("spec.rules[%d].filters: filters are not carried in the mesh", i)
		}
		m.rules = append(m.rules, mr)
	}
	return m
}

func hasBackendFilters(bs []gwv1.HTTPBackendRef) bool {
	for _, b := range bs {
		if len(b.Filters) > 0 {
			return true
		}
	}
	return false
}

func httpCatchAll(m gwv1.HTTPRouteMatch) bool {
	if len(m.Headers) > 0 || len(m.QueryParams) > 0 || m.Method != nil {
		return false
	}
	if p := m.Path; p != nil {
		if p.Type != nil && *p.Type != gwv1.PathMatchPathPrefix {
			return false
		}
		if p.Value != nil && *p.Value != "/" {
			return false
		}
	}
	return true
}

func fromGRPCRoute(r *gwv1.GRPCRoute) *meshRoute {
	m := &meshRoute{kind: "GRPCRoute", meta: r.ObjectMeta, parents: r.Spec.ParentRefs}
	for i, rule := range r.Spec.Rules {
		mr := meshRule{}
		for _, b := range rule.BackendRefs {
			mr.backends = append(mr.backends, b.BackendRef)
			if len(b.Filters) > 0 && mr.notCarried == "" {
				mr.notCarried = fmt.Sprintf("spec.rules[%d].backendRefs filters are not carried in the mesh", i)
			}
		}
		for j, mt := range rule.Matches {
			if mt.Method != nil || len(mt.Headers) > 0 {
				mr.notCarried = fmt.Sprintf("spec.rules[%d].matches[%d]: only a match with neither method nor headers is carried in the mesh", i, j)
				break
			}
		}
		if mr.notCarried == "" && len(rule.Filters) > 0 {
			mr.notCarried = fmt.Sprintf("spec.rules[%d].filters: filters are not carried in the mesh", i)
		}
		m.rules = append(m.rules, mr)
	}
	return m
}

// meshRoutesOf returns the routes whose parentRefs name service k, oldest
// first, then by namespace/name (Gateway API's precedence).
func meshRoutesOf(r store.Reader, k store.Key) []*meshRoute {
	var out []*meshRoute
	for _, hr := range r.MeshHTTPRoutes(k) {
		out = append(out, fromHTTPRoute(hr))
	}
	for _, gr := range r.MeshGRPCRoutes(k) {
		out = append(out, fromGRPCRoute(gr))
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].meta.CreationTimestamp, out[j].meta.CreationTimestamp
		if !a.Equal(&b) {
			return a.Before(&b)
		}
		if out[i].key() != out[j].key() {
			return out[i].key() < out[j].key()
		}
		return out[i].kind < out[j].kind
	})
	return out
}

// parentService is the Service a Service parentRef names.
func parentService(routeNS string, p gwv1.ParentReference) store.Key {
	ns := routeNS
	if p.Namespace != nil && *p.Namespace != "" {
		ns = string(*p.Namespace)
	}
	return store.Key{Namespace: ns, Name: string(p.Name)}
}

// appliesTo reports whether one of the route's parentRefs attaches it to
// service port t: a Service parentRef naming t's service, with no port or
// t's, from the service's own namespace (a producer route).
func (m *meshRoute) appliesTo(t Target) bool {
	for _, p := range m.parents {
		if !store.IsServiceParent(p) || parentService(m.meta.Namespace, p) != t.Service || m.meta.Namespace != t.Service.Namespace {
			continue
		}
		if p.Port == nil || uint32(*p.Port) == t.Port {
			return true
		}
	}
	return false
}

// backendProblem is why a backendRef cannot be sent to.
type backendProblem struct {
	reason gwv1.RouteConditionReason
	msg    string
}

// meshBackend resolves a route's backendRef to a weighted authority, or
// says why it cannot be used.
func meshBackend(r store.Reader, m *meshRoute, path string, b gwv1.BackendRef, o Options) (weighted, store.Key, *backendProblem) {
	if (b.Group != nil && *b.Group != "") || (b.Kind != nil && *b.Kind != "Service") {
		g, k := "", "Service"
		if b.Group != nil {
			g = string(*b.Group)
		}
		if b.Kind != nil {
			k = string(*b.Kind)
		}
		return weighted{}, store.Key{}, &backendProblem{gwv1.RouteReasonInvalidKind, fmt.Sprintf("%s: group %q kind %q: only core Services are supported", path, g, k)}
	}
	k := store.Key{Namespace: m.meta.Namespace, Name: string(b.Name)}
	if b.Namespace != nil && *b.Namespace != "" {
		k.Namespace = string(*b.Namespace)
	}
	if k.Namespace != m.meta.Namespace && !meshGranted(r, m, k) {
		return weighted{}, k, &backendProblem{gwv1.RouteReasonRefNotPermitted, fmt.Sprintf("%s: service %s is in another namespace and no ReferenceGrant there allows %s from namespace %s", path, k, m.kind, m.meta.Namespace)}
	}
	if b.Port == nil {
		return weighted{}, k, &backendProblem{gwv1.RouteReasonUnsupportedValue, fmt.Sprintf("%s.port: required for a Service", path)}
	}
	if !serviceExists(r, k, o) {
		return weighted{}, k, &backendProblem{gwv1.RouteReasonBackendNotFound, fmt.Sprintf("%s: service %s does not exist", path, k)}
	}
	if svc, ok := r.Service(k); ok {
		found := false
		for _, p := range svc.Spec.Ports {
			if p.Port == int32(*b.Port) && (p.Protocol == "" || p.Protocol == corev1.ProtocolTCP) {
				found = true
			}
		}
		if !found {
			return weighted{}, k, &backendProblem{gwv1.RouteReasonBackendNotFound, fmt.Sprintf("%s.port: service %s has no TCP port %d", path, k, *b.Port)}
		}
	}
	weight := int64(1)
	if b.Weight != nil {
		weight = int64(*b.Weight)
	}
	return weighted{authority: net.JoinHostPort(FQDN(k, o), strconv.Itoa(int(*b.Port))), weight: weight}, k, nil
}

func meshGranted(r store.Reader, m *meshRoute, to store.Key) bool {
	for _, g := range r.ReferenceGrants() {
		if g.Namespace != to.Namespace {
			continue
		}
		from := false
		for _, f := range g.Spec.From {
			if string(f.Group) == gwv1.GroupName && string(f.Kind) == m.kind && string(f.Namespace) == m.meta.Namespace {
				from = true
				break
			}
		}
		if !from {
			continue
		}
		for _, t := range g.Spec.To {
			if t.Group == "" && t.Kind == "Service" && (t.Name == nil || *t.Name == "" || string(*t.Name) == to.Name) {
				return true
			}
		}
	}
	return false
}

// meshSplit is the split the mesh routes give service port t: the
// backendRefs of the first carried rule of the first route (by precedence)
// attached to it. ok is false when no route with a carried rule applies.
// A backend that cannot be used is reported and skipped; the others keep
// their weights.
func meshSplit(r store.Reader, t Target, o Options, p *DestinationProfile) (backends []weighted, ok bool) {
	var chosen *meshRoute
	for _, m := range meshRoutesOf(r, t.Service) {
		if !m.appliesTo(t) {
			continue
		}
		for i, rule := range m.rules {
			if rule.notCarried != "" {
				p.Warnings = append(p.Warnings, fmt.Sprintf("%s %s: %s", strings.ToLower(m.kind), m.key(), rule.notCarried))
				continue
			}
			if chosen != nil {
				p.Warnings = append(p.Warnings, fmt.Sprintf("%s %s: spec.rules[%d] ignored: %s %s (older, or first by name) already splits %s", strings.ToLower(m.kind), m.key(), i, strings.ToLower(chosen.kind), chosen.key(), t.Service))
				continue
			}
			chosen = m
			for j, b := range rule.backends {
				w, k, prob := meshBackend(r, m, fmt.Sprintf("spec.rules[%d].backendRefs[%d]", i, j), b, o)
				if k.Name != "" {
					p.Deps = appendKey(p.Deps, k)
				}
				if prob != nil {
					p.Warnings = append(p.Warnings, fmt.Sprintf("%s %s: %s: skipped", strings.ToLower(m.kind), m.key(), prob.msg))
					continue
				}
				backends = append(backends, w)
			}
		}
	}
	return backends, chosen != nil
}

// MeshRouteParents computes the parent statuses of a route's Service
// parentRefs (GAMMA), one per parentRef, in the route's order, with
// controllerName MeshControllerName and the route's generation as
// observedGeneration. route is an *gwv1.HTTPRoute or a *gwv1.GRPCRoute;
// other parentRefs (Gateways, ListenerSets) are the gateway's and left
// out. Conditions: Accepted (False with NoMatchingParent when the Service
// or its port does not exist, UnsupportedValue for a route in another
// namespace than its Service or with no rule the mesh carries),
// ResolvedRefs (False with the first unusable backendRef's reason: the
// others still serve), and PartiallyInvalid when some rules are not
// carried.
func MeshRouteParents(r store.Reader, route any, o Options) []gwv1.RouteParentStatus {
	var m *meshRoute
	switch x := route.(type) {
	case *gwv1.HTTPRoute:
		m = fromHTTPRoute(x)
	case *gwv1.GRPCRoute:
		m = fromGRPCRoute(x)
	default:
		return nil
	}
	gen := m.meta.Generation
	cond := func(typ gwv1.RouteConditionType, ok bool, reason gwv1.RouteConditionReason, msg string) metav1.Condition {
		st := metav1.ConditionFalse
		if ok {
			st = metav1.ConditionTrue
		}
		return metav1.Condition{Type: string(typ), Status: st, Reason: string(reason), Message: msg, ObservedGeneration: gen}
	}

	// Backends: the same for every parent.
	var probs []backendProblem
	carried, dropped := 0, []string{}
	for i, rule := range m.rules {
		if rule.notCarried != "" {
			dropped = append(dropped, rule.notCarried)
		} else {
			carried++
		}
		for j, b := range rule.backends {
			if _, _, prob := meshBackend(r, m, fmt.Sprintf("spec.rules[%d].backendRefs[%d]", i, j), b, o); prob != nil {
				probs = append(probs, *prob)
			}
		}
	}
	resolved := cond(gwv1.RouteConditionResolvedRefs, true, gwv1.RouteReasonResolvedRefs, "all backendRefs resolved")
	if len(probs) > 0 {
		msgs := make([]string, len(probs))
		for i, p := range probs {
			msgs[i] = p.msg
		}
		resolved = cond(gwv1.RouteConditionResolvedRefs, false, probs[0].reason, strings.Join(msgs, "; ")+" (the other backends keep serving)")
	}

	var out []gwv1.RouteParentStatus
	for _, p := range m.parents {
		if !store.IsServiceParent(p) {
			continue
		}
		k := parentService(m.meta.Namespace, p)
		conds := []metav1.Condition{}
		svc, exists := r.Service(k)
		switch {
		case !exists:
			conds = append(conds, cond(gwv1.RouteConditionAccepted, false, gwv1.RouteReasonNoMatchingParent, fmt.Sprintf("parent service %s does not exist", k)))
		case p.Port != nil && !hasPort(svc.Spec.Ports, int32(*p.Port)):
			conds = append(conds, cond(gwv1.RouteConditionAccepted, false, gwv1.RouteReasonNoMatchingParent, fmt.Sprintf("parent service %s has no port %d", k, *p.Port)))
		case k.Namespace != m.meta.Namespace:
			conds = append(conds, cond(gwv1.RouteConditionAccepted, false, gwv1.RouteReasonUnsupportedValue, fmt.Sprintf("parentRef to service %s from namespace %s: consumer routes (a route in another namespace than its Service) are not supported; put the route in namespace %s", k, m.meta.Namespace, k.Namespace)))
		case carried == 0:
			conds = append(conds, cond(gwv1.RouteConditionAccepted, false, gwv1.RouteReasonUnsupportedValue, "no rule the mesh carries: "+strings.Join(dropped, "; ")))
		default:
			conds = append(conds, cond(gwv1.RouteConditionAccepted, true, gwv1.RouteReasonAccepted, fmt.Sprintf("routes the mesh traffic of service %s", k)))
			if len(dropped) > 0 {
				conds = append(conds, cond(gwv1.RouteConditionPartiallyInvalid, true, gwv1.RouteReasonUnsupportedValue, "rules not carried: "+strings.Join(dropped, "; ")))
			}
		}
		conds = append(conds, resolved)
		out = append(out, gwv1.RouteParentStatus{ParentRef: p, ControllerName: MeshControllerName, Conditions: conds})
	}
	return out
}

func hasPort(ports []corev1.ServicePort, port int32) bool {
	for _, p := range ports {
		if p.Port == port {
			return true
		}
	}
	return false
}
