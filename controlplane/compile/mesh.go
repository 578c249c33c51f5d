package compile

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
	"github.com/meridian-mesh/meridian/controlplane/compile/gateway"
	"github.com/meridian-mesh/meridian/controlplane/store"
)

// GAMMA: HTTPRoutes and GRPCRoutes whose parentRef is a Service (group "",
// kind Service) route that Service's mesh traffic. Each match of each rule
// becomes one HTTPRoute of the profile, in the Gateway API's precedence
// (the gateway's, controlplane/compile/gateway), with the rule's
// backendRefs as its own weighted backends, its header modifier filters,
// its RequestRedirect or URLRewrite filter, and its timeout. Filters the
// mesh cannot honour (mirrors, CORS, extensions; on a backendRef, anything
// but the header modifiers) make the rule's requests answer 500, and an
// invalid match, redirect, rewrite or timeout drops the rule: the route's
// status says which (PartiallyInvalid, or Accepted False when no rule is
// left). Requests no
// rule matches are answered 404. The first match (by precedence) that
// matches every request also gives the profile's DstOverrides, so that a
// proxy that predates the per-route splits still sends by its weights.

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
	name string // the rule's name, else its index
	// dropped says why the rule is not carried at all (an invalid match
	// or timeout); empty when it is.
	dropped string
	// fails says why the rule's requests are answered 500 (a filter the
	// mesh cannot honour); empty when they are served.
	fails string
	// ignored are fields of the rule the mesh does not honour but that
	// do not change where its requests go (retry, sessionPersistence).
	ignored  []string
	matches  []meshMatch
	backends []meshBackendRef
	reqH     *gatewaypb.HeaderModifier
	respH    *gatewaypb.HeaderModifier
	redirect *gatewaypb.Redirect
	rewrite  *gatewaypb.Rewrite
	timeout  time.Duration
}

type meshMatch struct {
	pb    *gatewaypb.Match
	order gateway.MatchOrder
}

type meshBackendRef struct {
	ref         gwv1.BackendRef
	reqH, respH *gatewaypb.HeaderModifier
}

// carried says whether the rule reaches the proxies (answering 500 or not).
func (r *meshRule) carried() bool { return r.dropped == "" }

func (m *meshRoute) key() string { return m.meta.Namespace + "/" + m.meta.Name }

// headerFilter reads one filter of a rule or backendRef: a header modifier
// is kept in *req or *resp; anything else is why the rule cannot be served.
func headerFilter(field string, typ string, reqMod, respMod *gwv1.HTTPHeaderFilter, req, resp **gatewaypb.HeaderModifier) string {
	switch typ {
	case string(gwv1.HTTPRouteFilterRequestHeaderModifier):
		if reqMod == nil {
			return field + ".requestHeaderModifier is required with type RequestHeaderModifier"
		}
		*req = gateway.HeaderModifier(reqMod)
	case string(gwv1.HTTPRouteFilterResponseHeaderModifier):
		if respMod == nil {
			return field + ".responseHeaderModifier is required with type ResponseHeaderModifier"
		}
		*resp = gateway.HeaderModifier(respMod)
	default:
		return fmt.Sprintf("%s.type %q is not supported in the mesh (allowed: RequestHeaderModifier, ResponseHeaderModifier, and on a rule RequestRedirect and URLRewrite): the rule's requests are answered 500", field, typ)
	}
	return ""
}

func fromHTTPRoute(r *gwv1.HTTPRoute) *meshRoute {
	m := &meshRoute{kind: "HTTPRoute", meta: r.ObjectMeta, parents: r.Spec.ParentRefs}
	for i, rule := range r.Spec.Rules {
		field := fmt.Sprintf("spec.rules[%d]", i)
		mr := meshRule{name: ruleName(rule.Name, i)}
		matches := rule.Matches
		if len(matches) == 0 {
			matches = []gwv1.HTTPRouteMatch{{}}
		}
		prefixOnly := true // ReplacePrefixMatch needs every match a PathPrefix
		for j, mt := range matches {
			pm, order, err := gateway.HTTPMatch(mt)
			if err != nil {
				mr.dropped = fmt.Sprintf("%s.matches[%d].%v", field, j, err)
				break
			}
			if pm.GetPath().GetType() != gatewaypb.PathMatch_PREFIX {
				prefixOnly = false
			}
			mr.matches = append(mr.matches, meshMatch{pm, order.Of(r.CreationTimestamp, r.Namespace, r.Name, i, j)})
		}
		for j, f := range rule.Filters {
			fld := fmt.Sprintf("%s.filters[%d]", field, j)
			var problems []string
			switch {
			case f.Type == gwv1.HTTPRouteFilterRequestRedirect && f.RequestRedirect != nil:
				mr.redirect, problems = gateway.RedirectFilter(fld+".requestRedirect", f.RequestRedirect, prefixOnly)
			case f.Type == gwv1.HTTPRouteFilterURLRewrite && f.URLRewrite != nil:
				mr.rewrite, problems = gateway.RewriteFilter(fld+".urlRewrite", f.URLRewrite, prefixOnly)
			default:
				if bad := headerFilter(fld, string(f.Type), f.RequestHeaderModifier, f.ResponseHeaderModifier, &mr.reqH, &mr.respH); bad != "" && mr.fails == "" {
					mr.fails = bad
				}
			}
			if len(problems) > 0 && mr.dropped == "" {
				mr.dropped = problems[0]
			}
		}
		if mr.redirect != nil && mr.rewrite != nil && mr.dropped == "" {
			mr.dropped = field + ".filters: a RequestRedirect and a URLRewrite in one rule (allowed: one of them)"
		}
		for j, b := range rule.BackendRefs {
			br := meshBackendRef{ref: b.BackendRef}
			for k, f := range b.Filters {
				if bad := headerFilter(fmt.Sprintf("%s.backendRefs[%d].filters[%d]", field, j, k), string(f.Type), f.RequestHeaderModifier, f.ResponseHeaderModifier, &br.reqH, &br.respH); bad != "" && mr.fails == "" {
					mr.fails = bad
				}
			}
			mr.backends = append(mr.backends, br)
		}
		if t := rule.Timeouts; t != nil && mr.dropped == "" {
			mr.timeout, mr.dropped = meshTimeout(field, t)
		}
		if rule.Retry != nil {
			mr.ignored = append(mr.ignored, field+".retry is not honoured in the mesh")
		}
		if rule.SessionPersistence != nil {
			mr.ignored = append(mr.ignored, field+".sessionPersistence is not honoured in the mesh")
		}
		m.rules = append(m.rules, mr)
	}
	return m
}

// meshTimeout is the wait for a rule's response: timeouts.request, or
// backendRequest when shorter (the mesh makes one attempt per request on
// these routes, so the two bound the same wait). 0 is none.
func meshTimeout(field string, t *gwv1.HTTPRouteTimeouts) (time.Duration, string) {
	var out time.Duration
	for _, x := range []struct {
		f string
		d *gwv1.Duration
	}{{"request", t.Request}, {"backendRequest", t.BackendRequest}} {
		if x.d == nil {
			continue
		}
		v, err := time.ParseDuration(string(*x.d))
		if err != nil || v < 0 {
			return 0, fmt.Sprintf("%s.timeouts.%s %q is not a duration (allowed: e.g. 1h, 10s, 500ms)", field, x.f, *x.d)
		}
		if v > 0 && (out == 0 || v < out) {
			out = v
		}
	}
	return out, ""
}

func ruleName(name *gwv1.SectionName, i int) string {
	if name != nil && *name != "" {
		return string(*name)
	}
	return strconv.Itoa(i)
}

func fromGRPCRoute(r *gwv1.GRPCRoute) *meshRoute {
	m := &meshRoute{kind: "GRPCRoute", meta: r.ObjectMeta, parents: r.Spec.ParentRefs}
	for i, rule := range r.Spec.Rules {
		field := fmt.Sprintf("spec.rules[%d]", i)
		mr := meshRule{name: ruleName(rule.Name, i)}
		matches := rule.Matches
		if len(matches) == 0 {
			matches = []gwv1.GRPCRouteMatch{{}}
		}
		for j, mt := range matches {
			pm, order, err := gateway.GRPCMatch(mt)
			if err != nil {
				mr.dropped = fmt.Sprintf("%s.matches[%d].%v", field, j, err)
				break
			}
			mr.matches = append(mr.matches, meshMatch{pm, order.Of(r.CreationTimestamp, r.Namespace, r.Name, i, j)})
		}
		for j, f := range rule.Filters {
			if bad := headerFilter(fmt.Sprintf("%s.filters[%d]", field, j), string(f.Type), f.RequestHeaderModifier, f.ResponseHeaderModifier, &mr.reqH, &mr.respH); bad != "" && mr.fails == "" {
				mr.fails = bad
			}
		}
		for j, b := range rule.BackendRefs {
			br := meshBackendRef{ref: b.BackendRef}
			for k, f := range b.Filters {
				if bad := headerFilter(fmt.Sprintf("%s.backendRefs[%d].filters[%d]", field, j, k), string(f.Type), f.RequestHeaderModifier, f.ResponseHeaderModifier, &br.reqH, &br.respH); bad != "" && mr.fails == "" {
					mr.fails = bad
				}
			}
			mr.backends = append(mr.backends, br)
		}
		if rule.SessionPersistence != nil {
			mr.ignored = append(mr.ignored, field+".sessionPersistence is not honoured in the mesh")
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

// routeName is the metrics label of a rule's routes.
func (m *meshRoute) routeName(r *meshRule) string {
	return m.kind + "/" + m.key() + "/" + r.name
}

// meshRoutes are the HTTPRoutes the mesh routes give service port t, in
// the Gateway API's precedence, and defaults the backends of the first
// catch-all rule (the split of requests no route matches, and the whole
// split for proxies that predate per-route splits). ok is false when no
// route with a carried rule applies. A GRPCRoute on the port wins over
// HTTPRoutes (GAMMA: one route type per Service port, GRPCRoute first). A
// backend that cannot be used keeps its weight as an invalid backend (its
// share is answered 500) in the routes, and is left out of defaults.
func meshRoutes(r store.Reader, t Target, o Options, p *DestinationProfile) (routes []HTTPRoute, defaults []weighted, ok bool) {
	warn := func(m *meshRoute, format string, args ...any) {
		p.Warnings = append(p.Warnings, fmt.Sprintf("%s %s: ", strings.ToLower(m.kind), m.key())+fmt.Sprintf(format, args...))
	}
	var applied []*meshRoute
	var grpc *meshRoute
	for _, m := range meshRoutesOf(r, t.Service) {
		if !m.appliesTo(t) {
			continue
		}
		if m.carriedRules() == 0 {
			for _, rule := range m.rules {
				warn(m, "%s", rule.dropped+rule.fails)
			}
			continue
		}
		applied = append(applied, m)
		if m.kind == "GRPCRoute" && grpc == nil {
			grpc = m
		}
	}
	type entry struct {
		order gateway.MatchOrder
		route HTTPRoute
		rule  *meshRule
		dflt  []weighted
	}
	var entries []entry
	for _, m := range applied {
		if grpc != nil && m.kind == "HTTPRoute" {
			warn(m, "ignored: grpcroute %s routes service %s (GAMMA: a GRPCRoute wins over HTTPRoutes on a Service port)", grpc.key(), t.Service)
			continue
		}
		for i := range m.rules {
			rule := &m.rules[i]
			if !rule.carried() {
				warn(m, "%s", rule.dropped)
				continue
			}
			for _, x := range rule.ignored {
				warn(m, "%s", x)
			}
			rt := HTTPRoute{Name: m.routeName(rule), RequestHeaders: rule.reqH, ResponseHeaders: rule.respH, Timeout: rule.timeout,
				Redirect: rule.redirect, Rewrite: rule.rewrite}
			var dflt []weighted
			if rule.fails != "" {
				warn(m, "%s", rule.fails)
				rt.Backends = []RouteBackend{{Weight: 1}}
			} else {
				for j, b := range rule.backends {
					w, k, prob := meshBackend(r, m, fmt.Sprintf("spec.rules[%d].backendRefs[%d]", i, j), b.ref, o)
					if k.Name != "" {
						p.Deps = appendKey(p.Deps, k)
					}
					weight := int64(1)
					if b.ref.Weight != nil {
						weight = int64(*b.ref.Weight)
					}
					if weight <= 0 {
						continue // receives nothing
					}
					if prob != nil {
						warn(m, "%s: its share is answered 500", prob.msg)
						rt.Backends = append(rt.Backends, RouteBackend{Weight: uint32(weight)})
						continue
					}
					dflt = append(dflt, w)
					rt.Backends = append(rt.Backends, RouteBackend{Authority: w.authority, Weight: uint32(weight), RequestHeaders: b.reqH, ResponseHeaders: b.respH})
				}
				if len(rule.backends) > 0 && len(rt.Backends) == 0 {
					// Every weight is 0: the Gateway API answers 500.
					warn(m, "spec.rules[%d]: every backendRef has weight 0: its requests are answered 500", i)
					rt.Backends = []RouteBackend{{Weight: 1}}
				}
			}
			for _, mm := range rule.matches {
				x := rt
				x.Match = mm.pb
				entries = append(entries, entry{order: mm.order, route: x, rule: rule, dflt: dflt})
			}
		}
	}
	sort.SliceStable(entries, func(i, j int) bool { return entries[i].order.Before(entries[j].order) })
	chosen := false
	for _, e := range entries {
		routes = append(routes, e.route)
		if !chosen && matchesAll(e.route.Match) && e.rule.fails == "" {
			chosen, defaults = true, e.dflt
		}
	}
	if len(entries) == 0 {
		return nil, nil, false
	}
	if !matchesAll(entries[len(entries)-1].route.Match) {
		// Requests no rule matches: 404, as the Gateway API says.
		routes = append(routes, HTTPRoute{Name: NoRouteMatched, Status: 404})
	}
	return routes, defaults, true
}

// matchesAll says whether m matches every request: no path or the prefix
// "/", and nothing else.
func matchesAll(m *gatewaypb.Match) bool {
	p := m.GetPath()
	return (p == nil || p.GetType() == gatewaypb.PathMatch_PREFIX && p.GetValue() == "/") &&
		len(m.GetHeaders())+len(m.GetQueryParams()) == 0 && m.GetMethod() == ""
}

// NoRouteMatched is the metrics label of the requests a Service's GAMMA
// routes do not match (answered 404).
const NoRouteMatched = "GAMMA/no-rule-matched"

// carriedRules counts the rules that reach the proxies.
func (m *meshRoute) carriedRules() int {
	n := 0
	for i := range m.rules {
		if m.rules[i].carried() && m.rules[i].fails == "" {
			n++
		}
	}
	return n
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
	carried, dropped, ignored := 0, []string{}, []string{}
	for i, rule := range m.rules {
		switch {
		case rule.dropped != "":
			dropped = append(dropped, rule.dropped)
		case rule.fails != "":
			dropped = append(dropped, rule.fails)
		default:
			carried++
		}
		ignored = append(ignored, rule.ignored...)
		for j, b := range rule.backends {
			if _, _, prob := meshBackend(r, m, fmt.Sprintf("spec.rules[%d].backendRefs[%d]", i, j), b.ref, o); prob != nil {
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
		case m.kind == "HTTPRoute" && grpcOnPort(r, k, p) != "":
			conds = append(conds, cond(gwv1.RouteConditionAccepted, false, RouteReasonConflicted, fmt.Sprintf("grpcroute %s routes service %s on this port: GAMMA applies one route type per Service port, GRPCRoute first", grpcOnPort(r, k, p), k)))
		default:
			msg := fmt.Sprintf("routes the mesh traffic of service %s", k)
			if len(ignored) > 0 {
				msg += " (" + strings.Join(ignored, "; ") + ")"
			}
			conds = append(conds, cond(gwv1.RouteConditionAccepted, true, gwv1.RouteReasonAccepted, msg))
			if len(dropped) > 0 {
				conds = append(conds, cond(gwv1.RouteConditionPartiallyInvalid, true, gwv1.RouteReasonUnsupportedValue, "rules not carried: "+strings.Join(dropped, "; ")))
			}
		}
		conds = append(conds, resolved)
		out = append(out, gwv1.RouteParentStatus{ParentRef: p, ControllerName: MeshControllerName, Conditions: conds})
	}
	return out
}

// RouteReasonConflicted is GAMMA's reason (GEP-1294) for a route of a
// type that loses to another on the same Service port.
const RouteReasonConflicted gwv1.RouteConditionReason = "Conflicted"

// grpcOnPort names the first GRPCRoute (by precedence) with a carried rule
// attached to service k on a port the parentRef p covers, or "".
func grpcOnPort(r store.Reader, k store.Key, p gwv1.ParentReference) string {
	for _, m := range meshRoutesOf(r, k) {
		if m.kind != "GRPCRoute" || m.meta.Namespace != k.Namespace || m.carriedRules() == 0 {
			continue
		}
		for _, gp := range m.parents {
			if !store.IsServiceParent(gp) || parentService(m.meta.Namespace, gp) != k {
				continue
			}
			if p.Port == nil || gp.Port == nil || *p.Port == *gp.Port {
				return m.key()
			}
		}
	}
	return ""
}

func hasPort(ports []corev1.ServicePort, port int32) bool {
	for _, p := range ports {
		if p.Port == port {
			return true
		}
	}
	return false
}
