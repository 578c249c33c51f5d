package check

import (
	"context"
	"fmt"
	"sort"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meridian-mesh/meridian/internal/names"
)

// The Gateway API checks (GroupGateway): Meridian's GatewayClasses, the
// Gateways of those classes, the ListenerSets and the routes attached to
// them carry the
// statuses the controller writes; a check fails naming each object whose
// status says it is not working, why (condition, reason, message), and what
// to do. The whole group is left out when the Gateway API's CRDs are not
// installed, or no GatewayClass names Meridian's controller.

// gatewayCRD is the CRD whose presence means the Gateway API is installed.
const gatewayCRD = "gateways.gateway.networking.k8s.io"

// routeKinds are the route kinds Meridian's gateway serves, with their
// CRDs (a kind whose CRD is missing is not looked at).
var routeKinds = []struct{ kind, crd string }{
	{"HTTPRoute", "httproutes.gateway.networking.k8s.io"},
	{"GRPCRoute", "grpcroutes.gateway.networking.k8s.io"},
	{"TLSRoute", "tlsroutes.gateway.networking.k8s.io"},
	{"TCPRoute", "tcproutes.gateway.networking.k8s.io"},
	{"UDPRoute", "udproutes.gateway.networking.k8s.io"},
}

// hasCRD reports whether the cluster serves the CRD name.
func hasCRD(ctx context.Context, s *State, name string) (bool, error) {
	_, err := s.APIExt.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("get CustomResourceDefinition %s: %w", name, err)
	}
	return true, nil
}

// ourClasses returns the names of the GatewayClasses of Meridian's
// controller; ErrSkip when the Gateway API is not installed or no class is
// Meridian's (the group has nothing to check).
func ourClasses(ctx context.Context, s *State) ([]gwv1.GatewayClass, error) {
	if err := s.needClient(); err != nil {
		return nil, err
	}
	ok, err := hasCRD(ctx, s, gatewayCRD)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, Skip("the Gateway API CRDs are not installed")
	}
	list, err := s.Gateway.GatewayV1().GatewayClasses().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list GatewayClasses: %w", err)
	}
	var out []gwv1.GatewayClass
	for _, gc := range list.Items {
		if gc.Spec.ControllerName == names.GatewayController {
			out = append(out, gc)
		}
	}
	if len(out) == 0 {
		return nil, Skip("no GatewayClass names " + names.GatewayController)
	}
	return out, nil
}

// ourGateways returns the Gateways of Meridian's classes, by
// namespace/name.
func ourGateways(ctx context.Context, s *State) (map[string]*gwv1.Gateway, error) {
	classes, err := ourClasses(ctx, s)
	if err != nil {
		return nil, err
	}
	ours := map[string]bool{}
	for _, c := range classes {
		ours[c.Name] = true
	}
	list, err := s.Gateway.GatewayV1().Gateways("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list Gateways: %w", err)
	}
	out := map[string]*gwv1.Gateway{}
	for i := range list.Items {
		g := &list.Items[i]
		if ours[string(g.Spec.GatewayClassName)] {
			out[g.Namespace+"/"+g.Name] = g
		}
	}
	return out, nil
}

func gatewayChecks(o Options) []Check {
	return []Check{
		{
			Group:       GroupGateway,
			Description: "Meridian's GatewayClasses are accepted",
			Hint:        "kubectl describe gatewayclass NAME; is the controller running (kubectl -n " + o.Namespace + " get pods)?",
			Retry:       true,
			Run: func(ctx context.Context, s *State) error {
				classes, err := ourClasses(ctx, s)
				if err != nil {
					return err
				}
				var probs problems
				for _, gc := range classes {
					what := "GatewayClass " + gc.Name
					if p, pending := conditionProblem(what, gc.Generation, gc.Status.Conditions, "Accepted", true); p != "" {
						if pending {
							probs.add(true, p, "    fix: "+notReconciled(s.Namespace))
							continue
						}
						reason := conditionReason(gc.Status.Conditions, "Accepted")
						probs.reason(reason, p, "    fix: "+fixFor(classFixes, reason, "kubectl describe gatewayclass "+gc.Name))
					}
				}
				return probs.err()
			},
		},
		{
			Group:       GroupGateway,
			Description: "Meridian's Gateways are accepted and programmed",
			Hint:        "kubectl describe gateway -n NAMESPACE NAME: the conditions say what is wrong; the controller's log says more (kubectl -n " + o.Namespace + " logs deploy/" + names.ControllerName + ")",
			Retry:       true,
			Run: func(ctx context.Context, s *State) error {
				gws, err := ourGateways(ctx, s)
				if err != nil {
					return err
				}
				if len(gws) == 0 {
					return Skip("no Gateway of Meridian's GatewayClasses")
				}
				var probs problems
				for _, k := range sortedKeys(gws) {
					gatewayProblems(&probs, gws[k], s.Namespace)
				}
				return probs.err()
			},
		},
		{
			Group:       GroupGateway,
			Description: "ListenerSets attached to Meridian's Gateways are accepted",
			Hint:        "kubectl describe listenerset -n NAMESPACE NAME: the conditions say why it (or a listener of it) is not accepted",
			Retry:       true,
			Run: func(ctx context.Context, s *State) error {
				gws, err := ourGateways(ctx, s)
				if err != nil {
					return err
				}
				sets, err := ourListenerSets(ctx, s, gws)
				if err != nil {
					return err
				}
				if len(sets) == 0 {
					return Skip("no ListenerSet names a Gateway of Meridian's GatewayClasses")
				}
				var probs problems
				for _, k := range sortedKeys(sets) {
					listenerSetProblems(&probs, sets[k], s.Namespace)
				}
				return probs.err()
			},
		},
		{
			Group:       GroupGateway,
			Description: "routes attached to Meridian's Gateways are accepted",
			Hint:        "kubectl describe KIND -n NAMESPACE NAME: status.parents says, for each Gateway, why the route is not accepted or its backends not resolved",
			Retry:       true,
			Run: func(ctx context.Context, s *State) error {
				gws, err := ourGateways(ctx, s)
				if err != nil {
					return err
				}
				if len(gws) == 0 {
					return Skip("no Gateway of Meridian's GatewayClasses")
				}
				sets, err := ourListenerSets(ctx, s, gws)
				if err != nil {
					return err
				}
				var probs problems
				attached := 0
				for _, rk := range routeKinds {
					ok, err := hasCRD(ctx, s, rk.crd)
					if err != nil {
						return err
					}
					if !ok {
						continue
					}
					routes, err := listRoutes(ctx, s, rk.kind)
					if err != nil {
						return err
					}
					for _, r := range routes {
						attached += routeProblems(&probs, r, gws, sets, s.Namespace)
					}
				}
				if attached == 0 {
					return Skip("no route names a Gateway of Meridian's GatewayClasses")
				}
				return probs.err()
			},
		},
	}
}

// problems collects a check's problem lines and whether waiting may fix
// any of them: a rejection for a reason only an edit of the object itself
// fixes (finalReasons), judged at its current generation, will not change
// by itself, and `check --wait` should say so at once.
type problems struct {
	lines    []string
	waitable bool
}

// add records lines; wait says whether they may go away by themselves.
func (p *problems) add(wait bool, lines ...string) {
	p.lines = append(p.lines, lines...)
	p.waitable = p.waitable || wait
}

// reason records lines for a condition or listener rejected with reason.
func (p *problems) reason(reason string, lines ...string) { p.add(!finalReasons[reason], lines...) }

func (p *problems) err() error {
	err := joinProblems(p.lines)
	if err != nil && !p.waitable {
		return Final(err)
	}
	return err
}

// finalReasons are the condition reasons that only an edit of the object
// itself can clear (which changes its generation, and the check starts
// over). Reasons that another object's arrival clears (a Service, a
// Secret, a ReferenceGrant, a parametersRef ConfigMap: a GitOps sync
// applies them in any order) are not among them.
var finalReasons = map[string]bool{
	string(gwv1.GatewayClassReasonUnsupported):   true,
	string(gwv1.GatewayReasonUnsupportedAddress): true,
	// Derived from other conditions (the listeners', also ListenerSets'),
	// whose own lines decide.
	string(gwv1.GatewayReasonListenersNotValid):    true,
	string(gwv1.GatewayReasonInvalid):              true,
	string(gwv1.ListenerReasonUnsupportedProtocol): true,
	string(gwv1.ListenerReasonInvalidRouteKinds):   true,
	string(gwv1.ListenerReasonHostnameConflict):    true,
	string(gwv1.ListenerReasonProtocolConflict):    true,
	string(gwv1.ListenerReasonUnsupportedValue):    true,
	string(gwv1.RouteReasonIncompatibleFilters):    true,
	string(gwv1.RouteReasonInvalidKind):            true,
}

// gatewayProblems are a Gateway's: its Accepted and Programmed
// conditions, then each listener's that is not accepted, programmed,
// resolved and free of conflicts.
func gatewayProblems(probs *problems, g *gwv1.Gateway, ns string) {
	what := fmt.Sprintf("Gateway %s/%s", g.Namespace, g.Name)
	for _, typ := range []string{"Accepted", "Programmed"} {
		if p, pending := conditionProblem(what, g.Generation, g.Status.Conditions, typ, true); p != "" {
			if pending {
				// Not handled (or not since the last change): the other
				// conditions and the listeners' say no more.
				probs.add(true, p, "    fix: "+notReconciled(ns))
				return
			}
			reason := conditionReason(g.Status.Conditions, typ)
			probs.reason(reason, p, "    fix: "+gatewayFix(g, reason))
		}
	}
	statuses := map[gwv1.SectionName]gwv1.ListenerStatus{}
	for _, l := range g.Status.Listeners {
		statuses[l.Name] = l
	}
	for _, l := range g.Spec.Listeners {
		lw := fmt.Sprintf("%s listener %s (port %d, %s)", what, l.Name, l.Port, l.Protocol)
		st, ok := statuses[l.Name]
		if !ok {
			probs.add(true, lw+": no status from "+names.GatewayController+" yet", "    fix: "+notReconciled(ns))
			continue
		}
		lp, reason := listenerConditionProblems(st.Conditions)
		if len(lp) > 0 {
			probs.reason(reason, lw+": "+strings.Join(lp, "; "), "    fix: "+fixFor(listenerFixes, reason, "kubectl describe gateway -n "+g.Namespace+" "+g.Name))
		}
	}
}

// listenerConditionProblems are a listener's conditions that are not as
// they should be (Accepted, Programmed, ResolvedRefs True; Conflicted
// False), and the reason that decides the fix.
func listenerConditionProblems(conds []metav1.Condition) (lp []string, reason string) {
	for _, c := range []struct {
		typ string
		ok  bool
	}{{"Accepted", true}, {"Programmed", true}, {"ResolvedRefs", true}, {"Conflicted", false}} {
		cond := findCondition(conds, c.typ)
		if cond == nil {
			if c.ok && c.typ != "ResolvedRefs" {
				lp = append(lp, "no "+c.typ+" condition")
			}
			continue
		}
		if (cond.Status == metav1.ConditionTrue) != c.ok {
			lp = append(lp, describeCondition(cond))
			// The most specific reason decides the fix: a ResolvedRefs
			// or Conflicted reason says more than Programmed's Invalid.
			if reason == "" || c.typ == "ResolvedRefs" || c.typ == "Conflicted" {
				reason = cond.Reason
			}
		}
	}
	return lp, reason
}

// listenerSetCRD is the ListenerSet CRD (a cluster without it has none to
// check).
const listenerSetCRD = "listenersets.gateway.networking.k8s.io"

// ourListenerSets returns the ListenerSets whose parentRef names one of
// gws, by namespace/name; none when the CRD is not installed.
func ourListenerSets(ctx context.Context, s *State, gws map[string]*gwv1.Gateway) (map[string]*gwv1.ListenerSet, error) {
	ok, err := hasCRD(ctx, s, listenerSetCRD)
	if err != nil || !ok {
		return nil, err
	}
	list, err := s.Gateway.GatewayV1().ListenerSets("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list ListenerSets: %w", err)
	}
	out := map[string]*gwv1.ListenerSet{}
	for i := range list.Items {
		ls := &list.Items[i]
		if k, ok := listenerSetParent(ls); ok && gws[k] != nil {
			out[ls.Namespace+"/"+ls.Name] = ls
		}
	}
	return out, nil
}

// listenerSetParent is the namespace/name of the Gateway ls's parentRef
// names.
func listenerSetParent(ls *gwv1.ListenerSet) (string, bool) {
	p := ls.Spec.ParentRef
	if (p.Group != nil && *p.Group != gwv1.GroupName) || (p.Kind != nil && *p.Kind != "Gateway") {
		return "", false
	}
	ns := ls.Namespace
	if p.Namespace != nil && *p.Namespace != "" {
		ns = string(*p.Namespace)
	}
	return ns + "/" + string(p.Name), true
}

// listenerSetProblems are a ListenerSet's: its Accepted and Programmed
// conditions, then each listener's, as a Gateway's.
func listenerSetProblems(probs *problems, ls *gwv1.ListenerSet, ns string) {
	what := fmt.Sprintf("ListenerSet %s/%s", ls.Namespace, ls.Name)
	parent, _ := listenerSetParent(ls)
	for _, typ := range []string{"Accepted", "Programmed"} {
		p, pending := conditionProblem(what, ls.Generation, ls.Status.Conditions, typ, true)
		if p == "" {
			continue
		}
		if pending {
			probs.add(true, p, "    fix: "+notReconciled(ns))
			return
		}
		reason := conditionReason(ls.Status.Conditions, typ)
		fix := fixFor(listenerSetFixes, reason, "kubectl describe listenerset -n "+ls.Namespace+" "+ls.Name)
		switch reason {
		case string(gwv1.ListenerSetReasonNotAllowed):
			fix = fmt.Sprintf("Gateway %s's spec.allowedListeners.namespaces does not admit namespace %s (the default admits none): set from to Same, All or a Selector matching it, or attach the ListenerSet to another Gateway", parent, ls.Namespace)
		case string(gwv1.ListenerSetReasonParentNotAccepted), "ParentNotProgrammed":
			fix = "see Gateway " + parent + "'s own lines: the ListenerSet follows its Gateway"
		}
		probs.reason(reason, p, "    fix: "+fix)
		if reason == string(gwv1.ListenerSetReasonNotAllowed) || reason == string(gwv1.ListenerSetReasonParentNotAccepted) {
			return // its listeners were not judged
		}
	}
	statuses := map[gwv1.SectionName]gwv1.ListenerEntryStatus{}
	for _, l := range ls.Status.Listeners {
		statuses[l.Name] = l
	}
	for _, l := range ls.Spec.Listeners {
		lw := fmt.Sprintf("%s listener %s (port %d, %s)", what, l.Name, l.Port, l.Protocol)
		st, ok := statuses[l.Name]
		if !ok {
			probs.add(true, lw+": no status from "+names.GatewayController+" yet", "    fix: "+notReconciled(ns))
			continue
		}
		if lp, reason := listenerConditionProblems(st.Conditions); len(lp) > 0 {
			fix := fixFor(listenerFixes, reason, "kubectl describe listenerset -n "+ls.Namespace+" "+ls.Name)
			switch reason {
			case string(gwv1.ListenerReasonHostnameConflict), string(gwv1.ListenerReasonProtocolConflict):
				fix = "a listener of higher precedence (the Gateway's, or an older ListenerSet's) holds this port and hostname or another protocol on it: the message names it; use another port or hostname"
			case string(gwv1.ListenerReasonRefNotPermitted):
				fix = "a certificateRef names a Secret of another namespace: add a ReferenceGrant there allowing ListenerSets of this namespace to refer to it (a Gateway's grant does not extend to its ListenerSets)"
			}
			probs.reason(reason, lw+": "+strings.Join(lp, "; "), "    fix: "+fix)
		}
	}
}

// gatewayFix is how to fix a Gateway condition's reason.
func gatewayFix(g *gwv1.Gateway, reason string) string {
	switch {
	case reason == string(gwv1.GatewayReasonPending):
		return fmt.Sprintf("the Gateway's proxies are not ready: kubectl -n %s get pods -l %s=%s; kubectl -n %s describe pods -l %s=%s",
			g.Namespace, gwv1.GatewayNameLabelKey, g.Name, g.Namespace, gwv1.GatewayNameLabelKey, g.Name)
	case reason == string(gwv1.GatewayReasonAddressNotAssigned):
		return fmt.Sprintf("the Gateway's Service has no address: a LoadBalancer Service needs a load-balancer controller in the cluster (kubectl -n %s get svc -l %s=%s), or set the annotation gateway.meridian.io/service-type to NodePort or ClusterIP",
			g.Namespace, gwv1.GatewayNameLabelKey, g.Name)
	case reason == string(gwv1.GatewayReasonListenersNotValid), reason == string(gwv1.GatewayReasonInvalid):
		return "see the listener lines below; fix the listeners they name"
	}
	return fixFor(gatewayFixes, reason, fmt.Sprintf("kubectl describe gateway -n %s %s", g.Namespace, g.Name))
}

// routeObject is what the route checks read of a route of any kind.
type routeObject struct {
	kind       string
	meta       metav1.ObjectMeta
	parentRefs []gwv1.ParentReference
	parents    []gwv1.RouteParentStatus
}

func listRoutes(ctx context.Context, s *State, kind string) ([]routeObject, error) {
	v1 := s.Gateway.GatewayV1()
	var out []routeObject
	switch kind {
	case "HTTPRoute":
		l, err := v1.HTTPRoutes("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("list HTTPRoutes: %w", err)
		}
		for _, r := range l.Items {
			out = append(out, routeObject{kind, r.ObjectMeta, r.Spec.ParentRefs, r.Status.Parents})
		}
	case "GRPCRoute":
		l, err := v1.GRPCRoutes("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("list GRPCRoutes: %w", err)
		}
		for _, r := range l.Items {
			out = append(out, routeObject{kind, r.ObjectMeta, r.Spec.ParentRefs, r.Status.Parents})
		}
	case "TLSRoute":
		l, err := v1.TLSRoutes("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("list TLSRoutes: %w", err)
		}
		for _, r := range l.Items {
			out = append(out, routeObject{kind, r.ObjectMeta, r.Spec.ParentRefs, r.Status.Parents})
		}
	case "TCPRoute":
		l, err := v1.TCPRoutes("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("list TCPRoutes: %w", err)
		}
		for _, r := range l.Items {
			out = append(out, routeObject{kind, r.ObjectMeta, r.Spec.ParentRefs, r.Status.Parents})
		}
	case "UDPRoute":
		l, err := v1.UDPRoutes("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("list UDPRoutes: %w", err)
		}
		for _, r := range l.Items {
			out = append(out, routeObject{kind, r.ObjectMeta, r.Spec.ParentRefs, r.Status.Parents})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].meta.Namespace+"/"+out[i].meta.Name < out[j].meta.Namespace+"/"+out[j].meta.Name
	})
	return out, nil
}

// routeProblems checks each of r's parentRefs that names one of gws, or
// one of sets (ListenerSets of gws): our controller's entry for it in
// status.parents must say Accepted and ResolvedRefs True. attached counts
// those parentRefs.
func routeProblems(probs *problems, r routeObject, gws map[string]*gwv1.Gateway, sets map[string]*gwv1.ListenerSet, ns string) (attached int) {
	for _, ref := range r.parentRefs {
		kind, key, ok := parentKey(ref, r.meta.Namespace)
		if !ok || (kind == "Gateway" && gws[key] == nil) || (kind == "ListenerSet" && sets[key] == nil) {
			continue
		}
		attached++
		what := fmt.Sprintf("%s %s/%s → %s", r.kind, r.meta.Namespace, r.meta.Name, describeParent(ref, kind, key))
		st := parentStatus(r.parents, ref, r.meta.Namespace)
		if st == nil {
			probs.add(true, what+": no status from "+names.GatewayController+" yet", "    fix: "+notReconciled(ns))
			continue
		}
		for _, typ := range []string{"Accepted", "ResolvedRefs"} {
			if p, pending := conditionProblem(what, r.meta.Generation, st.Conditions, typ, true); p != "" {
				if pending {
					probs.add(true, p, "    fix: "+notReconciled(ns))
					break
				}
				reason := conditionReason(st.Conditions, typ)
				probs.reason(reason, p, "    fix: "+fixFor(routeFixes, reason, fmt.Sprintf("kubectl describe %s -n %s %s", strings.ToLower(r.kind), r.meta.Namespace, r.meta.Name)))
			}
		}
	}
	return attached
}

// parentKey is the kind (Gateway or ListenerSet) and namespace/name of the
// parent ref names, from a route of namespace ns; ok is false when ref
// names something else.
func parentKey(ref gwv1.ParentReference, ns string) (kind, key string, ok bool) {
	if ref.Group != nil && *ref.Group != gwv1.GroupName {
		return "", "", false
	}
	kind = "Gateway"
	if ref.Kind != nil {
		kind = string(*ref.Kind)
	}
	if kind != "Gateway" && kind != "ListenerSet" {
		return "", "", false
	}
	if ref.Namespace != nil && *ref.Namespace != "" {
		ns = string(*ref.Namespace)
	}
	return kind, ns + "/" + string(ref.Name), true
}

func describeParent(ref gwv1.ParentReference, kind, key string) string {
	s := kind + " " + key
	if ref.SectionName != nil && *ref.SectionName != "" {
		s += " listener " + string(*ref.SectionName)
	}
	if ref.Port != nil {
		s += fmt.Sprintf(" port %d", *ref.Port)
	}
	return s
}

// parentStatus finds our controller's entry for ref (the same parent,
// sectionName and port).
func parentStatus(ps []gwv1.RouteParentStatus, ref gwv1.ParentReference, ns string) *gwv1.RouteParentStatus {
	wk, want, _ := parentKey(ref, ns)
	for i, p := range ps {
		if p.ControllerName != names.GatewayController {
			continue
		}
		if k, key, ok := parentKey(p.ParentRef, ns); !ok || k != wk || key != want {
			continue
		}
		if ptrString(p.ParentRef.SectionName) != ptrString(ref.SectionName) || ptrPort(p.ParentRef.Port) != ptrPort(ref.Port) {
			continue
		}
		return &ps[i]
	}
	return nil
}

func ptrString[T ~string](p *T) string {
	if p == nil {
		return ""
	}
	return string(*p)
}

func ptrPort(p *gwv1.PortNumber) int32 {
	if p == nil {
		return 0
	}
	return int32(*p)
}

func findCondition(cs []metav1.Condition, typ string) *metav1.Condition {
	for i := range cs {
		if cs[i].Type == typ {
			return &cs[i]
		}
	}
	return nil
}

func conditionReason(cs []metav1.Condition, typ string) string {
	if c := findCondition(cs, typ); c != nil {
		return c.Reason
	}
	return ""
}

func describeCondition(c *metav1.Condition) string {
	s := fmt.Sprintf("%s %s (%s)", c.Type, c.Status, c.Reason)
	if c.Message != "" {
		s += ": " + c.Message
	}
	return s
}

// conditionProblem says what is wrong with condition typ of an object of
// generation gen, named what: missing or Unknown (the controller has not
// handled the object: pending true), of an older generation (it has not
// caught up: pending too), or not of the status wanted (True when want).
// "" when nothing is.
func conditionProblem(what string, gen int64, cs []metav1.Condition, typ string, want bool) (problem string, pending bool) {
	c := findCondition(cs, typ)
	switch {
	case c == nil:
		return fmt.Sprintf("%s: no %s condition: not handled by %s yet", what, typ, names.GatewayController), true
	case c.Status == metav1.ConditionUnknown:
		return what + ": " + describeCondition(c), true
	case (c.Status == metav1.ConditionTrue) != want:
		return what + ": " + describeCondition(c), false
	case c.ObservedGeneration != 0 && c.ObservedGeneration < gen:
		return fmt.Sprintf("%s: %s is of generation %d, the object is at %d: the controller has not caught up", what, typ, c.ObservedGeneration, gen), true
	}
	return "", false
}

// The fixes for the reasons of the Gateway API's conditions, as Meridian's
// controller uses them; listeners and routes share some reason names
// (UnsupportedValue, RefNotPermitted, UnsupportedProtocol) with different
// meanings.
var (
	classFixes = map[string]string{
		string(gwv1.GatewayClassReasonInvalidParameters): "fix the parametersRef: a core ConfigMap, with its namespace, that exists; the message names the key and the values allowed",
		string(gwv1.GatewayClassReasonUnsupported):       "the controller does not support this GatewayClass: see the message",
	}
	gatewayFixes = map[string]string{
		string(gwv1.GatewayReasonInvalidParameters): "fix the parametersRef ConfigMap or the gateway.meridian.io/ annotation the message names (its key and the values allowed)",
	}
	listenerFixes = map[string]string{
		string(gwv1.ListenerReasonInvalidCertificateRef): "each certificateRef must name a Secret of type kubernetes.io/tls with tls.crt and tls.key that parse and match (kubectl get secret -n NAMESPACE NAME -o yaml)",
		string(gwv1.ListenerReasonRefNotPermitted):       "a certificateRef names a Secret of another namespace: add a ReferenceGrant there allowing Gateways of this namespace to refer to it",
		string(gwv1.ListenerReasonInvalidRouteKinds):     "allowedRoutes.kinds names a kind this listener's protocol cannot carry (HTTP/HTTPS: HTTPRoute, GRPCRoute; TLS: TLSRoute; TCP: TCPRoute; UDP: UDPRoute)",
		string(gwv1.ListenerReasonHostnameConflict):      "two listeners on the same port have the same hostname: give them different hostnames or ports",
		string(gwv1.ListenerReasonProtocolConflict):      "listeners on the same port use protocols that cannot share it (HTTP with HTTPS/TLS, TCP or UDP; a UDP port with any other): use another port",
		string(gwv1.ListenerReasonUnsupportedProtocol):   "the listener's protocol is not supported (allowed: HTTP, HTTPS, TLS, TCP, UDP)",
		string(gwv1.ListenerReasonUnsupportedValue):      "a field of the listener has a value Meridian does not support: the message names it and what is allowed",
		string(gwv1.ListenerReasonPortUnavailable):       "the port cannot be opened: use another",
	}
	listenerSetFixes = map[string]string{
		string(gwv1.ListenerSetReasonListenersNotValid): "see the listener lines below; fix the listeners they name",
	}
	routeFixes = map[string]string{
		string(gwv1.RouteReasonNotAllowedByListeners):      "the Gateway's listeners do not admit this route: widen their allowedRoutes (namespaces, kinds) or attach the route elsewhere",
		string(gwv1.RouteReasonNoMatchingListenerHostname): "none of the route's hostnames matches a listener's hostname: fix spec.hostnames or the listener's hostname",
		string(gwv1.RouteReasonNoMatchingParent):           "the parentRef's sectionName or port names no listener of the Gateway",
		string(gwv1.RouteReasonUnsupportedValue):           "a field has a value Meridian does not support: the message names it and what is allowed",
		string(gwv1.RouteReasonIncompatibleFilters):        "the rule's filters cannot be combined: the message says which",
		string(gwv1.RouteReasonRefNotPermitted):            "a backendRef names a Service of another namespace: add a ReferenceGrant in that namespace allowing this route kind from the route's namespace",
		string(gwv1.RouteReasonInvalidKind):                "backendRefs must name core Services",
		string(gwv1.RouteReasonBackendNotFound):            "create the Service, or fix the backendRef's name and port (kubectl get svc -n NAMESPACE)",
		string(gwv1.RouteReasonUnsupportedProtocol):        "the Service port's appProtocol is not one this route kind can use: the message says which are",
	}
)

// notReconciled is the fix when the controller (in namespace ns) has not
// handled an object (or its latest generation).
func notReconciled(ns string) string {
	return fmt.Sprintf("the controller has not handled it yet: is it running (kubectl -n %s get pods; kubectl -n %s logs deploy/%s)?", ns, ns, names.ControllerName)
}

// fixFor is fixes' entry for reason, else a pointer to the object.
func fixFor(fixes map[string]string, reason, fallback string) string {
	if f, ok := fixes[reason]; ok {
		return f
	}
	return fallback + ": the message says what to change"
}
