package gateway

import (
	"fmt"
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

// namesGateway reports whether parentRef p (of a route in ns) is this
// Gateway.
func (c *compiler) namesGateway(p gwv1.ParentReference, ns string) bool {
	if p.Group != nil && string(*p.Group) != Group {
		return false
	}
	if p.Kind != nil && string(*p.Kind) != "Gateway" {
		return false
	}
	if p.Namespace != nil && *p.Namespace != "" {
		ns = string(*p.Namespace)
	}
	return ns == c.gw.Namespace && string(p.Name) == c.gw.Name
}

func (c *compiler) routes() {
	for _, r := range c.in.HTTPRoutes {
		if r == nil {
			continue
		}
		o := routeObj{kind: "HTTPRoute", meta: &r.ObjectMeta, parents: r.Spec.ParentRefs, hostnames: r.Spec.Hostnames}
		if c.mentioned(o) {
			c.attach(o, c.httpRoute(r))
		}
	}
	for _, r := range c.in.GRPCRoutes {
		if r == nil {
			continue
		}
		o := routeObj{kind: "GRPCRoute", meta: &r.ObjectMeta, parents: r.Spec.ParentRefs, hostnames: r.Spec.Hostnames}
		if c.mentioned(o) {
			c.attach(o, c.grpcRoute(r))
		}
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
}

func (c *compiler) mentioned(o routeObj) bool {
	for _, p := range o.parents {
		if c.namesGateway(p, o.meta.Namespace) {
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
		if !c.namesGateway(p, ns) {
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
	who := fmt.Sprintf("%s %s/%s: parentRef Gateway %s/%s", o.kind, ns, name, c.gw.Namespace, c.gw.Name)
	var cands []*listener
	for _, l := range c.ls {
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
	for _, l := range allowed {
		hosts := effectiveHostnames(l.hostname, o.hostnames)
		if len(hosts) == 0 {
			continue
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
		for _, h := range hosts {
			l.hosts[h] = append(l.hosts[h], cr.rules...)
		}
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
