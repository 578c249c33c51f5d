package check

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/meridian-mesh/meridian/internal/names"
	"github.com/meridian-mesh/meridian/test/apiserver"
)

const (
	checkClasses  = "Meridian's GatewayClasses are accepted"
	checkGateways = "Meridian's Gateways are accepted and programmed"
	checkRoutes   = "routes attached to Meridian's Gateways are accepted"
)

// Without the Gateway API's CRDs the group has nothing to check: it is
// left out of the report, and the run passes.
func TestGatewayWithoutGatewayAPI(t *testing.T) {
	_, cfg := sharedEnv(t)
	rep := run(t, Options{RESTConfig: cfg}, Runner{}, GroupGateway)
	if len(rep.Results) != 0 || !rep.Success() {
		t.Fatalf("results %+v", rep.Results)
	}
}

func gwCond(typ string, ok bool, reason, msg string, gen int64) metav1.Condition {
	s := metav1.ConditionFalse
	if ok {
		s = metav1.ConditionTrue
	}
	return metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen, LastTransitionTime: metav1.Now()}
}

// The Gateway API checks against a real API server, with objects and the
// statuses Meridian's controller would write (written here through the
// status subresource): a listener whose certificate is missing, a Gateway
// whose proxies are not ready, a Gateway whose status is of an older
// generation, routes rejected by the listeners, with an unresolved backend
// and without a status yet are each named with the condition, reason,
// message and a fix; another controller's class, Gateway and routes are
// not looked at; once the statuses are good every check passes.
func TestGatewayChecks(t *testing.T) {
	apiserver.Need(t)
	cfg := apiserver.Start(t, apiserver.GatewayAPICRDs())
	kube := kubernetes.NewForConfigOrDie(cfg)
	gc := gwclient.NewForConfigOrDie(cfg)
	ctx := testCtx(t)
	v1 := gc.GatewayV1()
	createNS(t, kube, "edge")
	o := Options{RESTConfig: cfg}

	// Our class, before the controller has seen it: the API server's
	// default condition (Unknown, Pending).
	ours, err := v1.GatewayClasses().Create(ctx, &gwv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "meridian"},
		Spec: gwv1.GatewayClassSpec{ControllerName: names.GatewayController}}, metav1.CreateOptions{})
	must(t, err)
	_, err = v1.GatewayClasses().Create(ctx, &gwv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "theirs"},
		Spec: gwv1.GatewayClassSpec{ControllerName: "example.com/other"}}, metav1.CreateOptions{})
	must(t, err)
	rep := run(t, o, Runner{}, GroupGateway)
	expect(t, rep, checkClasses, Error, "GatewayClass meridian: Accepted Unknown (Pending)", "the controller has not handled it yet")
	ours.Status.Conditions = []metav1.Condition{gwCond("Accepted", true, "Accepted", "accepted by "+names.GatewayController, ours.Generation)}
	must(t, ignore(v1.GatewayClasses().UpdateStatus(ctx, ours, metav1.UpdateOptions{})))

	gateway := func(name, class string, listeners ...gwv1.Listener) *gwv1.Gateway {
		g, err := v1.Gateways("edge").Create(ctx, &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "edge"},
			Spec: gwv1.GatewaySpec{GatewayClassName: gwv1.ObjectName(class), Listeners: listeners}}, metav1.CreateOptions{})
		must(t, err)
		return g
	}
	http := gwv1.Listener{Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType}
	https := gwv1.Listener{Name: "https", Port: 443, Protocol: gwv1.HTTPSProtocolType,
		TLS: &gwv1.ListenerTLSConfig{Mode: ptr.To(gwv1.TLSModeTerminate), CertificateRefs: []gwv1.SecretObjectReference{{Name: "missing"}}}}
	listenerOK := func(name string, gen int64) gwv1.ListenerStatus {
		return gwv1.ListenerStatus{Name: gwv1.SectionName(name), SupportedKinds: []gwv1.RouteGroupKind{}, Conditions: []metav1.Condition{
			gwCond("Accepted", true, "Accepted", "", gen), gwCond("Programmed", true, "Programmed", "", gen),
			gwCond("ResolvedRefs", true, "ResolvedRefs", "", gen), gwCond("Conflicted", false, "NoConflicts", "", gen)}}
	}
	setStatus := func(g *gwv1.Gateway, st gwv1.GatewayStatus) {
		t.Helper()
		g, err := v1.Gateways("edge").Get(ctx, g.Name, metav1.GetOptions{})
		must(t, err)
		g.Status = st
		must(t, ignore(v1.Gateways("edge").UpdateStatus(ctx, g, metav1.UpdateOptions{})))
	}
	public := gateway("public", "meridian", http, https)
	badHTTPS := listenerOK("https", 1)
	badHTTPS.Conditions[1] = gwCond("Programmed", false, "Invalid", "not served: see ResolvedRefs", 1)
	badHTTPS.Conditions[2] = gwCond("ResolvedRefs", false, "InvalidCertificateRef", "certificateRefs[0]: Secret edge/missing does not exist", 1)
	setStatus(public, gwv1.GatewayStatus{
		Conditions: []metav1.Condition{gwCond("Accepted", true, "Accepted", "", 1), gwCond("Programmed", true, "Programmed", "", 1)},
		Listeners:  []gwv1.ListenerStatus{listenerOK("http", 1), badHTTPS},
	})
	pending := gateway("pending", "meridian", http)
	setStatus(pending, gwv1.GatewayStatus{
		Conditions: []metav1.Condition{gwCond("Accepted", true, "Accepted", "", 1), gwCond("Programmed", false, "Pending", "Deployment edge/pending-meridian has no ready proxy yet", 1)},
		Listeners:  []gwv1.ListenerStatus{listenerOK("http", 1)},
	})
	stale := gateway("stale", "meridian", http)
	setStatus(stale, gwv1.GatewayStatus{
		Conditions: []metav1.Condition{gwCond("Accepted", true, "Accepted", "", 1), gwCond("Programmed", true, "Programmed", "", 1)},
		Listeners:  []gwv1.ListenerStatus{listenerOK("http", 1)},
	})
	stale, err = v1.Gateways("edge").Get(ctx, "stale", metav1.GetOptions{})
	must(t, err)
	stale.Spec.Listeners[0].Port = 8080 // generation 2
	must(t, ignore(v1.Gateways("edge").Update(ctx, stale, metav1.UpdateOptions{})))
	other := gateway("other", "theirs", http)
	setStatus(other, gwv1.GatewayStatus{Conditions: []metav1.Condition{gwCond("Accepted", false, "Invalid", "not mine", 1)}})

	port := gwv1.PortNumber(80)
	backend := gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: "web", Port: &port}}
	parent := func(gw string, section string) gwv1.ParentReference {
		p := gwv1.ParentReference{Name: gwv1.ObjectName(gw)}
		if section != "" {
			p.SectionName = ptr.To(gwv1.SectionName(section))
		}
		return p
	}
	status := func(ref gwv1.ParentReference, ctrl gwv1.GatewayController, conds ...metav1.Condition) gwv1.RouteParentStatus {
		ref.Group, ref.Kind, ref.Namespace = ptr.To(gwv1.Group(gwv1.GroupName)), ptr.To(gwv1.Kind("Gateway")), ptr.To(gwv1.Namespace("edge"))
		return gwv1.RouteParentStatus{ParentRef: ref, ControllerName: ctrl, Conditions: conds}
	}
	good := []metav1.Condition{gwCond("Accepted", true, "Accepted", "", 1), gwCond("ResolvedRefs", true, "ResolvedRefs", "", 1)}
	httpRoute := func(name string, ref gwv1.ParentReference, parents ...gwv1.RouteParentStatus) {
		t.Helper()
		r, err := v1.HTTPRoutes("edge").Create(ctx, &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "edge"}, Spec: gwv1.HTTPRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{ref}},
			Rules:           []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: backend}}}}}}, metav1.CreateOptions{})
		must(t, err)
		if len(parents) > 0 {
			r.Status.Parents = parents
			must(t, ignore(v1.HTTPRoutes("edge").UpdateStatus(ctx, r, metav1.UpdateOptions{})))
		}
	}
	// Accepted by us, and by another controller for its own Gateway.
	httpRoute("web", parent("public", ""), status(parent("public", ""), names.GatewayController, good...))
	httpRoute("broken", parent("public", ""), status(parent("public", ""), names.GatewayController,
		gwCond("Accepted", false, "NotAllowedByListeners", "no listener of Gateway edge/public allows HTTPRoutes from namespace edge", 1),
		gwCond("ResolvedRefs", true, "ResolvedRefs", "", 1)))
	httpRoute("foreign", parent("other", ""), status(parent("other", ""), "example.com/other",
		gwCond("Accepted", false, "NotAllowedByListeners", "their business", 1)))
	g, err := v1.GRPCRoutes("edge").Create(ctx, &gwv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Name: "grpc", Namespace: "edge"}, Spec: gwv1.GRPCRouteSpec{
		CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{parent("public", "http")}},
		Rules:           []gwv1.GRPCRouteRule{{BackendRefs: []gwv1.GRPCBackendRef{{BackendRef: backend}}}}}}, metav1.CreateOptions{})
	must(t, err)
	g.Status.Parents = []gwv1.RouteParentStatus{
		// Another controller's entry for the same Gateway does not count.
		status(parent("public", "http"), "example.com/other", good...),
		status(parent("public", "http"), names.GatewayController, gwCond("Accepted", true, "Accepted", "", 1),
			gwCond("ResolvedRefs", false, "BackendNotFound", "rules[0].backendRefs[0]: Service edge/web does not exist", 1)),
	}
	must(t, ignore(v1.GRPCRoutes("edge").UpdateStatus(ctx, g, metav1.UpdateOptions{})))
	_, err = v1.TLSRoutes("edge").Create(ctx, &gwv1.TLSRoute{ObjectMeta: metav1.ObjectMeta{Name: "fresh", Namespace: "edge"}, Spec: gwv1.TLSRouteSpec{
		CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{parent("public", "")}},
		Hostnames:       []gwv1.Hostname{"db.example.com"},
		Rules:           []gwv1.TLSRouteRule{{BackendRefs: []gwv1.BackendRef{backend}}}}}, metav1.CreateOptions{})
	must(t, err)

	rep = run(t, o, Runner{}, GroupGateway)
	expect(t, rep, checkClasses, Success)
	r := expect(t, rep, checkGateways, Error,
		"Gateway edge/public listener https (port 443, HTTPS): Programmed False (Invalid): not served: see ResolvedRefs; ResolvedRefs False (InvalidCertificateRef): certificateRefs[0]: Secret edge/missing does not exist",
		"fix: each certificateRef must name a Secret of type kubernetes.io/tls",
		"Gateway edge/pending: Programmed False (Pending): Deployment edge/pending-meridian has no ready proxy yet",
		"fix: the Gateway's proxies are not ready: kubectl -n edge get pods -l gateway.networking.k8s.io/gateway-name=pending",
		"Gateway edge/stale: Accepted is of generation 1, the object is at 2: the controller has not caught up")
	for _, not := range []string{"edge/other", "listener http ", "Gateway edge/stale: Programmed"} {
		if strings.Contains(r.Err.Error(), not) {
			t.Errorf("%q reported: %v", not, r.Err)
		}
	}
	r = expect(t, rep, checkRoutes, Error,
		"HTTPRoute edge/broken → Gateway edge/public: Accepted False (NotAllowedByListeners): no listener of Gateway edge/public allows HTTPRoutes from namespace edge",
		"fix: the Gateway's listeners do not admit this route: widen their allowedRoutes",
		"GRPCRoute edge/grpc → Gateway edge/public listener http: ResolvedRefs False (BackendNotFound): rules[0].backendRefs[0]: Service edge/web does not exist",
		"fix: create the Service, or fix the backendRef's name and port",
		"TLSRoute edge/fresh → Gateway edge/public: no status from meridian.io/gateway-controller yet")
	for _, not := range []string{"HTTPRoute edge/web ", "edge/foreign"} {
		if strings.Contains(r.Err.Error(), not) {
			t.Errorf("%q reported: %v", not, r.Err)
		}
	}

	// The controller catches up, while the checks wait: every check passes.
	fixed := make(chan struct{})
	go func() {
		defer close(fixed)
		time.Sleep(500 * time.Millisecond)
		ctx := context.Background()
		for _, name := range []string{"public", "pending", "stale"} {
			g, err := v1.Gateways("edge").Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Error(err)
				return
			}
			gen := g.Generation
			var ls []gwv1.ListenerStatus
			for _, l := range g.Spec.Listeners {
				ls = append(ls, listenerOK(string(l.Name), gen))
			}
			g.Status = gwv1.GatewayStatus{Conditions: []metav1.Condition{gwCond("Accepted", true, "Accepted", "", gen), gwCond("Programmed", true, "Programmed", "", gen)}, Listeners: ls}
			if _, err := v1.Gateways("edge").UpdateStatus(ctx, g, metav1.UpdateOptions{}); err != nil {
				t.Error(err)
			}
		}
		b, _ := v1.HTTPRoutes("edge").Get(ctx, "broken", metav1.GetOptions{})
		b.Status.Parents = []gwv1.RouteParentStatus{status(parent("public", ""), names.GatewayController, good...)}
		if _, err := v1.HTTPRoutes("edge").UpdateStatus(ctx, b, metav1.UpdateOptions{}); err != nil {
			t.Error(err)
		}
		gr, _ := v1.GRPCRoutes("edge").Get(ctx, "grpc", metav1.GetOptions{})
		gr.Status.Parents[1].Conditions = good
		if _, err := v1.GRPCRoutes("edge").UpdateStatus(ctx, gr, metav1.UpdateOptions{}); err != nil {
			t.Error(err)
		}
		tr, _ := v1.TLSRoutes("edge").Get(ctx, "fresh", metav1.GetOptions{})
		tr.Status.Parents = []gwv1.RouteParentStatus{status(parent("public", ""), names.GatewayController, good...)}
		if _, err := v1.TLSRoutes("edge").UpdateStatus(ctx, tr, metav1.UpdateOptions{}); err != nil {
			t.Error(err)
		}
	}()
	rep = run(t, o, Runner{Wait: 60 * time.Second}, GroupGateway)
	<-fixed
	allPass(t, rep)
	if len(rep.Results) != 3 {
		t.Fatalf("results %+v", rep.Results)
	}
}

// ignore drops a value, keeping the error.
func ignore[T any](_ T, err error) error { return err }

// ListenerSets of Meridian's Gateways, with the statuses the controller
// would write: one not allowed and a listener refused by a conflict are
// named with a fix, a route whose ListenerSet parent is not accepted too;
// a ListenerSet of another controller's Gateway is not looked at.
func TestGatewayListenerSetChecks(t *testing.T) {
	apiserver.Need(t)
	cfg := apiserver.Start(t, apiserver.GatewayAPICRDs())
	kube := kubernetes.NewForConfigOrDie(cfg)
	gc := gwclient.NewForConfigOrDie(cfg)
	ctx := testCtx(t)
	v1 := gc.GatewayV1()
	createNS(t, kube, "edge")
	createNS(t, kube, "team")
	o := Options{RESTConfig: cfg}
	for class, ctrl := range map[string]gwv1.GatewayController{"meridian": names.GatewayController, "theirs": "example.com/other"} {
		c, err := v1.GatewayClasses().Create(ctx, &gwv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: class}, Spec: gwv1.GatewayClassSpec{ControllerName: ctrl}}, metav1.CreateOptions{})
		must(t, err)
		c.Status.Conditions = []metav1.Condition{gwCond("Accepted", true, "Accepted", "", c.Generation)}
		must(t, ignore(v1.GatewayClasses().UpdateStatus(ctx, c, metav1.UpdateOptions{})))
	}
	http := gwv1.Listener{Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType}
	for name, class := range map[string]string{"public": "meridian", "other": "theirs"} {
		g, err := v1.Gateways("edge").Create(ctx, &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "edge"},
			Spec: gwv1.GatewaySpec{GatewayClassName: gwv1.ObjectName(class), Listeners: []gwv1.Listener{http}}}, metav1.CreateOptions{})
		must(t, err)
		g.Status = gwv1.GatewayStatus{Conditions: []metav1.Condition{gwCond("Accepted", true, "Accepted", "", 1), gwCond("Programmed", true, "Programmed", "", 1)},
			Listeners: []gwv1.ListenerStatus{{Name: "http", SupportedKinds: []gwv1.RouteGroupKind{}, Conditions: []metav1.Condition{
				gwCond("Accepted", true, "Accepted", "", 1), gwCond("Programmed", true, "Programmed", "", 1),
				gwCond("ResolvedRefs", true, "ResolvedRefs", "", 1), gwCond("Conflicted", false, "NoConflicts", "", 1)}}}}
		must(t, ignore(v1.Gateways("edge").UpdateStatus(ctx, g, metav1.UpdateOptions{})))
	}
	edge := gwv1.Namespace("edge")
	listenerSet := func(ns, name, gw string, st gwv1.ListenerSetStatus) {
		t.Helper()
		ls, err := v1.ListenerSets(ns).Create(ctx, &gwv1.ListenerSet{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: gwv1.ListenerSetSpec{
			ParentRef: gwv1.ParentGatewayReference{Name: gwv1.ObjectName(gw), Namespace: &edge},
			Listeners: []gwv1.ListenerEntry{{Name: "a", Port: 80, Protocol: gwv1.HTTPProtocolType}, {Name: "b", Port: 8080, Protocol: gwv1.HTTPProtocolType}}}}, metav1.CreateOptions{})
		must(t, err)
		ls.Status = st
		must(t, ignore(v1.ListenerSets(ns).UpdateStatus(ctx, ls, metav1.UpdateOptions{})))
	}
	notAllowed := "ListenerSet team/outside: Gateway edge/public's spec.allowedListeners allows no ListenerSet"
	listenerSet("team", "outside", "public", gwv1.ListenerSetStatus{Conditions: []metav1.Condition{
		gwCond("Accepted", false, "NotAllowed", notAllowed, 1), gwCond("Programmed", false, "NotAllowed", notAllowed, 1)}})
	conflict := "ListenerSet edge/inside: spec.listeners[a]: the Gateway's listener http on port 80 has the same hostname and takes precedence"
	listenerSet("edge", "inside", "public", gwv1.ListenerSetStatus{
		Conditions: []metav1.Condition{gwCond("Accepted", true, "ListenersNotValid", "listeners not programmed: a (HostnameConflict)", 1), gwCond("Programmed", true, "Programmed", "", 1)},
		Listeners: []gwv1.ListenerEntryStatus{
			{Name: "a", SupportedKinds: []gwv1.RouteGroupKind{}, Conditions: []metav1.Condition{gwCond("Accepted", false, "HostnameConflict", conflict, 1),
				gwCond("Programmed", false, "HostnameConflict", conflict, 1), gwCond("ResolvedRefs", true, "ResolvedRefs", "", 1), gwCond("Conflicted", true, "HostnameConflict", conflict, 1)}},
			{Name: "b", SupportedKinds: []gwv1.RouteGroupKind{}, Conditions: []metav1.Condition{gwCond("Accepted", true, "Accepted", "", 1),
				gwCond("Programmed", true, "Programmed", "", 1), gwCond("ResolvedRefs", true, "ResolvedRefs", "", 1), gwCond("Conflicted", false, "NoConflicts", "", 1)}},
		}})
	listenerSet("edge", "foreign", "other", gwv1.ListenerSetStatus{Conditions: []metav1.Condition{gwCond("Accepted", false, "Invalid", "their business", 1)}})

	team := gwv1.Namespace("team")
	ref := gwv1.ParentReference{Group: ptr.To(gwv1.Group(gwv1.GroupName)), Kind: ptr.To(gwv1.Kind("ListenerSet")), Name: "outside", Namespace: &team}
	r, err := v1.HTTPRoutes("team").Create(ctx, &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "team"}, Spec: gwv1.HTTPRouteSpec{
		CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{ref}}}}, metav1.CreateOptions{})
	must(t, err)
	r.Status.Parents = []gwv1.RouteParentStatus{{ParentRef: ref, ControllerName: names.GatewayController, Conditions: []metav1.Condition{
		gwCond("Accepted", false, "NotAllowedByListeners", "the ListenerSet is not attached to Gateway edge/public (NotAllowed)", 1), gwCond("ResolvedRefs", true, "ResolvedRefs", "", 1)}}}
	must(t, ignore(v1.HTTPRoutes("team").UpdateStatus(ctx, r, metav1.UpdateOptions{})))

	rep := run(t, o, Runner{}, GroupGateway)
	res := expect(t, rep, "ListenerSets attached to Meridian's Gateways are accepted", Error,
		"ListenerSet team/outside: Accepted False (NotAllowed): "+notAllowed,
		"fix: Gateway edge/public's spec.allowedListeners.namespaces does not admit namespace team",
		"ListenerSet edge/inside listener a (port 80, HTTP): Accepted False (HostnameConflict)",
		"fix: a listener of higher precedence")
	for _, not := range []string{"edge/foreign", "listener b", "team/outside listener"} {
		if strings.Contains(res.Err.Error(), not) {
			t.Errorf("%q reported: %v", not, res.Err)
		}
	}
	expect(t, rep, checkRoutes, Error, "HTTPRoute team/web → ListenerSet team/outside: Accepted False (NotAllowedByListeners)")
}

// A rejection only an edit fixes is Final (check --wait does not wait for
// it); one that another object's arrival may fix, or a pending one, is not.
func TestGatewayProblemsFinal(t *testing.T) {
	l := func(reason string) gwv1.ListenerStatus {
		return gwv1.ListenerStatus{Name: "l", Conditions: []metav1.Condition{
			gwCond("Accepted", reason == "InvalidCertificateRef", reason, "", 1), gwCond("Programmed", false, "Invalid", "", 1),
			gwCond("ResolvedRefs", reason != "InvalidCertificateRef", reason, "", 1)}}
	}
	gw := func(accepted string, listener gwv1.ListenerStatus) *gwv1.Gateway {
		g := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "g", Namespace: "edge", Generation: 1},
			Spec: gwv1.GatewaySpec{Listeners: []gwv1.Listener{{Name: "l", Port: 80, Protocol: "UDP"}}}}
		g.Status.Conditions = []metav1.Condition{gwCond("Accepted", accepted == "", accepted, "", 1), gwCond("Programmed", false, "Invalid", "", 1)}
		if accepted == "Unknown" {
			g.Status.Conditions[0].Status = metav1.ConditionUnknown
		}
		g.Status.Listeners = []gwv1.ListenerStatus{listener}
		return g
	}
	var f final
	for _, tc := range []struct {
		name  string
		g     *gwv1.Gateway
		final bool
	}{
		{"unsupported protocol", gw("ListenersNotValid", l("UnsupportedProtocol")), true},
		{"missing certificate", gw("ListenersNotValid", l("InvalidCertificateRef")), false},
		{"not handled yet", gw("Unknown", l("UnsupportedProtocol")), false},
	} {
		var p problems
		gatewayProblems(&p, tc.g, "meridian")
		err := p.err()
		if err == nil || errors.As(err, &f) != tc.final {
			t.Errorf("%s: %v (final %v), want final %v", tc.name, err, errors.As(err, &f), tc.final)
		}
	}
}
