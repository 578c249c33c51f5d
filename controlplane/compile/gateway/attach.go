package gateway

import (
	"fmt"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// routeObj is what attachment needs of any route kind.
type routeObj struct {
	kind      string
	meta      *metav1.ObjectMeta
	parents   []gwv1.ParentReference
	hostnames []gwv1.Hostname
}

// compiled is a route compiled independently of its parents: the problems
// that reject it as a whole (accept*) and the unresolved references
// (refs*), and what it serves.
type compiled struct {
	acceptReason, acceptMsg string
	refsReason, refsMsg     string
	rules                   []*rule   // HTTPRoute, GRPCRoute
	tls                     *tlsRoute // TLSRoute
	l4                      *l4Route  // TCPRoute, UDPRoute
}

func (cr *compiled) invalid(reason, msg string) {
	if cr.acceptReason == "" {
		cr.acceptReason, cr.acceptMsg = reason, msg
	}
}

func (cr *compiled) unresolved(reason, msg string) {
	if cr.refsReason == "" {
		cr.refsReason, cr.refsMsg = reason, msg
	}
}

// parent reports whether parentRef p (of a route in ns) is this Gateway
// (set nil) or one of the ListenerSets naming it (set).
func (c *compiler) parent(p gwv1.ParentReference, ns string) (set *lset, ok bool) {
	if p.Group != nil && string(*p.Group) != Group {
		return nil, false
	}
	if p.Namespace != nil && *p.Namespace != "" {
		ns = string(*p.Namespace)
	}
	if p.Kind == nil || *p.Kind == "Gateway" {
		return nil, ns == c.gw.Namespace && string(p.Name) == c.gw.Name
	}
	if *p.Kind == "ListenerSet" {
		set, ok = c.setByKey[nn(ns, string(p.Name))]
		return set, ok
	}
	return nil, false
}

func (c *compiler) names(p gwv1.ParentReference, ns string) bool {
	_, ok := c.parent(p, ns)
	return ok
}

func (c *compiler) routes() {
	// HTTPRoutes and GRPCRoutes attach oldest first (then by
	// namespace/name): when both kinds claim a hostname on one listener,
	// the spec keeps the older route.
	type pending struct {
		o  routeObj
		cr *compiled
	}
	var http []pending
	for _, r := range c.in.HTTPRoutes {
		if r == nil {
			continue
		}
		o := routeObj{kind: "HTTPRoute", meta: &r.ObjectMeta, parents: r.Spec.ParentRefs, hostnames: r.Spec.Hostnames}
		if c.mentioned(o) {
			http = append(http, pending{o, c.httpRoute(r)})
		}
	}
	for _, r := range c.in.GRPCRoutes {
		if r == nil {
			continue
		}
		o := routeObj{kind: "GRPCRoute", meta: &r.ObjectMeta, parents: r.Spec.ParentRefs, hostnames: r.Spec.Hostnames}
		if c.mentioned(o) {
			http = append(http, pending{o, c.grpcRoute(r)})
		}
	}
	sort.SliceStable(http, func(i, j int) bool {
		a, b := http[i].o, http[j].o
		if !a.meta.CreationTimestamp.Equal(&b.meta.CreationTimestamp) {
			return a.meta.CreationTimestamp.Before(&b.meta.CreationTimestamp)
		}
		if a.meta.Namespace != b.meta.Namespace {
			return a.meta.Namespace < b.meta.Namespace
		}
		if a.meta.Name != b.meta.Name {
			return a.meta.Name < b.meta.Name
		}
		return a.kind < b.kind
	})
	for _, p := range http {
		c.attach(p.o, p.cr)
	}
	for _, r := range c.in.TLSRoutes {
		if r == nil {
			continue
		}
		o := routeObj{kind: "TLSRoute", meta: &r.ObjectMeta, parents: r.Spec.ParentRefs, hostnames: r.Spec.Hostnames}
		if c.mentioned(o) {
			c.attach(o, c.tlsRoute(r))
		}
	}
	for _, r := range c.in.TCPRoutes {
		if r == nil {
			continue
		}
		o := routeObj{kind: "TCPRoute", meta: &r.ObjectMeta, parents: r.Spec.ParentRefs}
		if c.mentioned(o) {
			c.attach(o, c.l4Route("TCPRoute", &r.ObjectMeta, tcpRules(r.Spec.Rules)))
		}
	}
	for _, r := range c.in.UDPRoutes {
		if r == nil {
			continue
		}
		o := routeObj{kind: "UDPRoute", meta: &r.ObjectMeta, parents: r.Spec.ParentRefs}
		if c.mentioned(o) {
			c.attach(o, c.l4Route("UDPRoute", &r.ObjectMeta, udpRules(r.Spec.Rules)))
		}
	}
}

func (c *compiler) mentioned(o routeObj) bool {
	for _, p := range o.parents {
		if c.names(p, o.meta.Namespace) {
			return true
		}
	}
	return false
}

// attach decides, for each parentRef naming this Gateway, which listeners
// take the route and under which hostnames, and writes its parent status.
func (c *compiler) attach(o routeObj, cr *compiled) {
	ns, name, gen := o.meta.Namespace, o.meta.Name, o.meta.Generation
	key := o.kind + "/" + ns + "/" + name
	st := RouteStatus{Kind: o.kind, Route: nn(ns, name)}
	done := map[*listener]bool{}
	for _, p := range o.parents {
		if !c.names(p, ns) {
			continue
		}
		ok, reason, msg := c.attachParent(o, cr, p, key, done)
		acc := cond(string(gwv1.RouteConditionAccepted), ok, reason, msg, gen)
		refs := cond(string(gwv1.RouteConditionResolvedRefs), true, string(gwv1.RouteReasonResolvedRefs), "all references resolved", gen)
		if cr.refsReason != "" {
			refs = cond(string(gwv1.RouteConditionResolvedRefs), false, cr.refsReason, cr.refsMsg, gen)
		}
		st.Parents = append(st.Parents, gwv1.RouteParentStatus{
			ParentRef:      p,
			ControllerName: ControllerName,
			Conditions:     []metav1.Condition{acc, refs},
		})
		if !ok {
			c.reject(o.kind, ns, name, reason, msg)
		}
	}
	if cr.refsReason != "" {
		c.reject(o.kind, ns, name, cr.refsReason, cr.refsMsg)
	}
	c.routeStatuses = append(c.routeStatuses, st)
}

func (c *compiler) attachParent(o routeObj, cr *compiled, p gwv1.ParentReference, key string, done map[*listener]bool) (bool, string, string) {
	ns, name := o.meta.Namespace, o.meta.Name
	set, _ := c.parent(p, ns)
	who := fmt.Sprintf("%s %s/%s: parentRef Gateway %s/%s", o.kind, ns, name, c.gw.Namespace, c.gw.Name)
	if set != nil {
		who = fmt.Sprintf("%s %s/%s: parentRef ListenerSet %s/%s", o.kind, ns, name, set.obj.Namespace, set.obj.Name)
		if !set.attached() {
			return false, string(gwv1.RouteReasonNotAllowedByListeners), fmt.Sprintf("%s: the ListenerSet is not attached to Gateway %s/%s (%s): %s", who, c.gw.Namespace, c.gw.Name, set.reason, set.msg)
		}
	}
	// A Gateway parentRef reaches the Gateway's own listeners only, a
	// ListenerSet's its own (the spec: sectionName names a listener of
	// the parent resource).
	var cands []*listener
	for _, l := range c.all {
		if l.set != set {
			continue
		}
		if p.SectionName != nil && *p.SectionName != "" && *p.SectionName != l.spec.Name {
			continue
		}
		if p.Port != nil && *p.Port != 0 && *p.Port != l.spec.Port {
			continue
		}
		cands = append(cands, l)
	}
	if len(cands) == 0 {
		return false, string(gwv1.RouteReasonNoMatchingParent), fmt.Sprintf("%s: no listener has %s", who, sectionAndPort(p))
	}
	if cr.acceptReason != "" {
		return false, cr.acceptReason, cr.acceptMsg
	}
	var allowed []*listener
	for _, l := range cands {
		if l.accepted && l.allowsKind(o.kind) && l.allowsNamespace(c, ns) {
			allowed = append(allowed, l)
		}
	}
	if len(allowed) == 0 {
		return false, string(gwv1.RouteReasonNotAllowedByListeners), fmt.Sprintf("%s: no accepted listener%s allows %s from namespace %s (see the listeners' allowedRoutes)", who, sectionSuffix(p), o.kind, ns)
	}
	attached := false
	var conflict string
	for _, l := range allowed {
		hosts := effectiveHostnames(l.hostname, o.hostnames)
		if len(hosts) == 0 {
			continue
		}
		if other := l.otherKindClaims(o.kind, hosts); other != "" {
			conflict = fmt.Sprintf("%s: listener %s already serves an older %s on hostname %q, and HTTPRoutes and GRPCRoutes cannot share a hostname on a listener (the older route is kept)", who, l.spec.Name, otherKind(o.kind), other)
			continue
		}
		if o.kind == "HTTPRoute" || o.kind == "GRPCRoute" {
			l.claims[o.kind] = append(l.claims[o.kind], hosts...)
		}
		attached = true
		if done[l] {
			continue
		}
		done[l] = true
		l.attached[key] = struct{}{}
		if cr.tls != nil {
			t := *cr.tls
			t.hostnames = hosts
			l.tlsRoutes = append(l.tlsRoutes, &t)
			continue
		}
		if cr.l4 != nil {
			l.l4Routes = append(l.l4Routes, cr.l4)
			continue
		}
		for _, h := range hosts {
			l.hosts[h] = append(l.hosts[h], cr.rules...)
		}
	}
	if !attached && conflict != "" {
		return false, string(gwv1.RouteReasonNotAllowedByListeners), conflict
	}
	if !attached {
		var hs []string
		for _, h := range o.hostnames {
			hs = append(hs, string(h))
		}
		return false, string(gwv1.RouteReasonNoMatchingListenerHostname), fmt.Sprintf("%s: spec.hostnames [%s] intersect no allowed listener's hostname", who, strings.Join(hs, ", "))
	}
	return true, string(gwv1.RouteReasonAccepted), "accepted"
}

// otherKindClaims returns a hostname of hosts that the listener already
// serves with the other of HTTPRoute and GRPCRoute, or "".
func (l *listener) otherKindClaims(kind string, hosts []string) string {
	other := otherKind(kind)
	if other == "" {
		return ""
	}
	for _, h := range hosts {
		for _, c := range l.claims[other] {
			if _, ok := intersect(c, h); ok {
				return h
			}
			if _, ok := intersect(h, c); ok {
				return h
			}
		}
	}
	return ""
}

func otherKind(kind string) string {
	switch kind {
	case "HTTPRoute":
		return "GRPCRoute"
	case "GRPCRoute":
		return "HTTPRoute"
	}
	return ""
}

func sectionAndPort(p gwv1.ParentReference) string {
	var parts []string
	if p.SectionName != nil && *p.SectionName != "" {
		parts = append(parts, fmt.Sprintf("name %q (sectionName)", *p.SectionName))
	}
	if p.Port != nil && *p.Port != 0 {
		parts = append(parts, fmt.Sprintf("port %d", *p.Port))
	}
	if len(parts) == 0 {
		return "any name"
	}
	return strings.Join(parts, " and ")
}

func sectionSuffix(p gwv1.ParentReference) string {
	if p.SectionName != nil && *p.SectionName != "" {
		return fmt.Sprintf(" named %q", *p.SectionName)
	}
	return ""
}

// effectiveHostnames are the hostnames a route serves on a listener: the
// intersections of the listener's hostname with the route's. A listener
// without a hostname takes the route's ("" when it has none); a route
// without hostnames takes the listener's. Empty: no intersection, the
// route does not attach.
func effectiveHostnames(listener string, route []gwv1.Hostname) []string {
	if len(route) == 0 {
		return []string{listener}
	}
	var out []string
	seen := map[string]bool{}
	for _, h := range route {
		if x, ok := intersect(listener, strings.ToLower(string(h))); ok && !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// intersect returns the more specific of two hostnames when one includes
// the other. A wildcard "*.example.com" covers every name with at least
// one more label before ".example.com" (the Gateway API's rule, which
// allows several labels), and wildcards of a longer suffix.
func intersect(listener, route string) (string, bool) {
	switch {
	case listener == "":
		return route, true
	case listener == route:
		return route, true
	case covers(listener, route):
		return route, true
	case covers(route, listener):
		return listener, true
	}
	return "", false
}

// covers reports whether wildcard w ("*.suffix") covers h (a name or a
// wildcard) and h is more specific.
func covers(w, h string) bool {
	if !strings.HasPrefix(w, "*.") {
		return false
	}
	suffix := w[1:] // ".example.com"
	if strings.HasPrefix(h, "*.") {
		return len(h) > len(w) && strings.HasSuffix(h[1:], suffix)
	}
	return len(h) > len(suffix) && strings.HasSuffix(h, suffix)
}
