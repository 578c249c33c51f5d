package status

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/meridian-mesh/meridian/test/apiserver"
)

const ours gwv1.GatewayController = "meridian.io/gateway-controller"

var (
	t0 = time.Unix(1_700_000_000, 0)
	t1 = t0.Add(time.Hour)
)

func cond(typ string, ok bool, reason string) metav1.Condition {
	s := metav1.ConditionFalse
	if ok {
		s = metav1.ConditionTrue
	}
	return metav1.Condition{Type: typ, Status: s, Reason: reason, Message: reason, ObservedGeneration: 1}
}

func TestConditionsKeepTransitionTimes(t *testing.T) {
	stored := Conditions(nil, []metav1.Condition{cond("Accepted", true, "Accepted"), cond("Programmed", false, "Pending")}, t0)
	next := Conditions(stored, []metav1.Condition{cond("Accepted", true, "Accepted"), cond("Programmed", true, "Programmed")}, t1)
	if !next[0].LastTransitionTime.Time.Equal(t0) {
		t.Fatalf("Accepted stayed True: time %v, want %v", next[0].LastTransitionTime, t0)
	}
	if !next[1].LastTransitionTime.Time.Equal(t1) {
		t.Fatalf("Programmed turned True: time %v, want %v", next[1].LastTransitionTime, t1)
	}
	if !Same(next, Conditions(next, []metav1.Condition{cond("Accepted", true, "Accepted"), cond("Programmed", true, "Programmed")}, t1.Add(time.Hour)), ConditionsTimes) {
		t.Fatal("the same conditions computed again are not Same")
	}
	if Same(stored, next, ConditionsTimes) {
		t.Fatal("a changed status is Same")
	}
	if !stored[1].LastTransitionTime.Time.Equal(t0) {
		t.Fatal("Same modified its argument")
	}
}

func ref(ns, name string) gwv1.ParentReference {
	r := gwv1.ParentReference{Name: gwv1.ObjectName(name)}
	if ns != "" {
		r.Namespace = ptr.To(gwv1.Namespace(ns))
	}
	return r
}

func parent(controller gwv1.GatewayController, r gwv1.ParentReference, ok bool) gwv1.RouteParentStatus {
	return gwv1.RouteParentStatus{ParentRef: r, ControllerName: controller, Conditions: []metav1.Condition{cond("Accepted", ok, "Accepted")}}
}

// Another controller's entries, and ours for another Gateway, are kept; ours
// for this Gateway are replaced (and removed when there are none).
func TestRouteParents(t *testing.T) {
	gw := Key{"edge", "public"}
	other := parent("example.com/other", ref("", "public"), true) // same Gateway name, another controller
	mineElsewhere := parent(ours, ref("infra", "internal"), true)
	stale := parent(ours, ref("edge", "public"), false)
	got := RouteParents([]gwv1.RouteParentStatus{other, stale, mineElsewhere}, []gwv1.RouteParentStatus{parent(ours, ref("", "public"), true)}, ours, "edge", gw, t1)
	if len(got) != 3 || got[0].ControllerName != "example.com/other" || got[1].ParentRef.Namespace == nil || *got[1].ParentRef.Namespace != "infra" || got[2].ParentRef.Namespace != nil {
		t.Fatalf("parents %+v", got)
	}
	if got = RouteParents(got, nil, ours, "edge", gw, t1); len(got) != 2 {
		t.Fatalf("after removing ours: %+v", got)
	}
	if !ForGateway(ref("", "public"), "edge", gw) || ForGateway(ref("", "public"), "apps", gw) || ForGateway(gwv1.ParentReference{Name: "public", Kind: ptr.To(gwv1.Kind("Service"))}, "edge", gw) {
		t.Fatal("ForGateway")
	}
}

// Against a real API server with the Gateway API CRDs: statuses are
// written, written again only when they change, and keep other
// controllers' route parents.
func TestWriter(t *testing.T) {
	apiserver.Need(t)
	cfg := apiserver.Start(t, apiserver.GatewayAPICRDs())
	cs := kubernetes.NewForConfigOrDie(cfg)
	gc := gwclient.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "edge"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	now := t0
	w := &Writer{Client: gc, Controller: ours, Now: func() time.Time { return now }}

	if _, err := gc.GatewayV1().GatewayClasses().Create(ctx, &gwv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "meridian"}, Spec: gwv1.GatewayClassSpec{ControllerName: ours}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if wrote, err := w.GatewayClass(ctx, "meridian", []metav1.Condition{cond("Accepted", true, "Accepted")}); err != nil || !wrote {
		t.Fatalf("GatewayClass: wrote %v, %v", wrote, err)
	}
	if wrote, err := w.GatewayClass(ctx, "meridian", []metav1.Condition{cond("Accepted", true, "Accepted")}); err != nil || wrote {
		t.Fatalf("GatewayClass again: wrote %v, %v; want no update", wrote, err)
	}

	g := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "public", Namespace: "edge"}, Spec: gwv1.GatewaySpec{
		GatewayClassName: "meridian",
		Listeners:        []gwv1.Listener{{Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType}},
	}}
	if _, err := gc.GatewayV1().Gateways("edge").Create(ctx, g, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	st := gwv1.GatewayStatus{
		Conditions: []metav1.Condition{cond("Accepted", true, "Accepted"), cond("Programmed", false, "Pending")},
		Listeners: []gwv1.ListenerStatus{{Name: "http", AttachedRoutes: 1, SupportedKinds: []gwv1.RouteGroupKind{{Group: ptr.To(gwv1.Group(gwv1.GroupName)), Kind: "HTTPRoute"}},
			Conditions: []metav1.Condition{cond("Accepted", true, "Accepted"), cond("Programmed", true, "Programmed"), cond("ResolvedRefs", true, "ResolvedRefs"), cond("Conflicted", false, "NoConflicts")}}},
	}
	addrs := []gwv1.GatewayStatusAddress{{Type: ptr.To(gwv1.IPAddressType), Value: "10.96.0.20"}}
	if wrote, err := w.Gateway(ctx, Key{"edge", "public"}, st, addrs); err != nil || !wrote {
		t.Fatalf("Gateway: wrote %v, %v", wrote, err)
	}
	now = t1
	if wrote, err := w.Gateway(ctx, Key{"edge", "public"}, st, addrs); err != nil || wrote {
		t.Fatalf("Gateway again: wrote %v, %v; want no update", wrote, err)
	}
	st.Conditions[1] = cond("Programmed", true, "Programmed")
	if wrote, err := w.Gateway(ctx, Key{"edge", "public"}, st, addrs); err != nil || !wrote {
		t.Fatalf("Gateway programmed: wrote %v, %v", wrote, err)
	}
	got, err := gc.GatewayV1().Gateways("edge").Get(ctx, "public", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !got.Status.Conditions[0].LastTransitionTime.Time.Equal(t0) || !got.Status.Conditions[1].LastTransitionTime.Time.Equal(t1) || got.Status.Addresses[0].Value != "10.96.0.20" || got.Status.Listeners[0].AttachedRoutes != 1 {
		t.Fatalf("stored status %+v", got.Status)
	}

	route := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "edge"}, Spec: gwv1.HTTPRouteSpec{
		CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{ref("", "public"), ref("", "theirs")}},
	}}
	route, err = gc.GatewayV1().HTTPRoutes("edge").Create(ctx, route, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Another controller's entry, written before ours.
	route.Status.Parents = []gwv1.RouteParentStatus{parent("example.com/other", ref("", "theirs"), true)}
	route.Status.Parents[0].Conditions[0].LastTransitionTime = metav1.NewTime(t0)
	if _, err := gc.GatewayV1().HTTPRoutes("edge").UpdateStatus(ctx, route, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if wrote, err := w.Route(ctx, "HTTPRoute", "edge", "web", Key{"edge", "public"}, []gwv1.RouteParentStatus{parent(ours, ref("", "public"), true)}); err != nil || !wrote {
		t.Fatalf("Route: wrote %v, %v", wrote, err)
	}
	if wrote, err := w.Route(ctx, "HTTPRoute", "edge", "web", Key{"edge", "public"}, []gwv1.RouteParentStatus{parent(ours, ref("", "public"), true)}); err != nil || wrote {
		t.Fatalf("Route again: wrote %v, %v; want no update", wrote, err)
	}
	r, err := gc.GatewayV1().HTTPRoutes("edge").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Status.Parents) != 2 || r.Status.Parents[0].ControllerName != "example.com/other" || r.Status.Parents[1].ControllerName != ours {
		t.Fatalf("parents %+v", r.Status.Parents)
	}
	if wrote, err := w.Route(ctx, "HTTPRoute", "edge", "web", Key{"edge", "public"}, nil); err != nil || !wrote {
		t.Fatalf("Route removal: wrote %v, %v", wrote, err)
	}
	if r, _ = gc.GatewayV1().HTTPRoutes("edge").Get(ctx, "web", metav1.GetOptions{}); len(r.Status.Parents) != 1 || r.Status.Parents[0].ControllerName != "example.com/other" {
		t.Fatalf("after removal %+v", r.Status.Parents)
	}
	// The last entry removed: status.parents is required, and written as [].
	solo := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: "solo", Namespace: "edge"}, Spec: gwv1.HTTPRouteSpec{
		CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{ref("", "public")}},
	}}
	if _, err := gc.GatewayV1().HTTPRoutes("edge").Create(ctx, solo, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if wrote, err := w.Route(ctx, "HTTPRoute", "edge", "solo", Key{"edge", "public"}, []gwv1.RouteParentStatus{parent(ours, ref("", "public"), true)}); err != nil || !wrote {
		t.Fatalf("solo route: wrote %v, %v", wrote, err)
	}
	if wrote, err := w.Route(ctx, "HTTPRoute", "edge", "solo", Key{"edge", "public"}, nil); err != nil || !wrote {
		t.Fatalf("solo route's last parent removed: wrote %v, %v", wrote, err)
	}
	if r, _ = gc.GatewayV1().HTTPRoutes("edge").Get(ctx, "solo", metav1.GetOptions{}); len(r.Status.Parents) != 0 {
		t.Fatalf("solo route after removal %+v", r.Status.Parents)
	}
	if wrote, err := w.Route(ctx, "HTTPRoute", "edge", "gone", Key{"edge", "public"}, nil); err != nil || wrote {
		t.Fatalf("a deleted route: wrote %v, %v", wrote, err)
	}
	if _, err := w.Route(ctx, "Ingress", "edge", "web", Key{"edge", "public"}, nil); err == nil || !strings.Contains(err.Error(), "HTTPRoute, GRPCRoute, TLSRoute, TCPRoute and UDPRoute") {
		t.Fatalf("unknown kind: %v", err)
	}

	// A ListenerSet's status: written with its listeners, again only on a
	// change, transition times kept; the Gateway's attachedListenerSets.
	lset := &gwv1.ListenerSet{ObjectMeta: metav1.ObjectMeta{Name: "team", Namespace: "edge"}, Spec: gwv1.ListenerSetSpec{
		ParentRef: gwv1.ParentGatewayReference{Name: "public"},
		Listeners: []gwv1.ListenerEntry{{Name: "a", Port: 8080, Protocol: gwv1.HTTPProtocolType}},
	}}
	if _, err := gc.GatewayV1().ListenerSets("edge").Create(ctx, lset, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	now = t0
	lst := gwv1.ListenerSetStatus{
		Conditions: []metav1.Condition{cond("Accepted", true, "Accepted"), cond("Programmed", true, "Programmed")},
		Listeners: []gwv1.ListenerEntryStatus{{Name: "a", AttachedRoutes: 2, SupportedKinds: []gwv1.RouteGroupKind{{Group: ptr.To(gwv1.Group(gwv1.GroupName)), Kind: "HTTPRoute"}},
			Conditions: []metav1.Condition{cond("Accepted", true, "Accepted"), cond("Programmed", true, "Programmed")}}},
	}
	if wrote, err := w.ListenerSet(ctx, Key{"edge", "team"}, lst); err != nil || !wrote {
		t.Fatalf("ListenerSet: wrote %v, %v", wrote, err)
	}
	now = t1
	if wrote, err := w.ListenerSet(ctx, Key{"edge", "team"}, lst); err != nil || wrote {
		t.Fatalf("ListenerSet again: wrote %v, %v; want no update", wrote, err)
	}
	got2, err := gc.GatewayV1().ListenerSets("edge").Get(ctx, "team", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got2.Status.Conditions) != 2 || !got2.Status.Conditions[0].LastTransitionTime.Time.Equal(t0) || got2.Status.Listeners[0].AttachedRoutes != 2 {
		t.Fatalf("stored ListenerSet status %+v", got2.Status)
	}
	if wrote, err := w.ListenerSet(ctx, Key{"edge", "gone"}, lst); err != nil || wrote {
		t.Fatalf("a deleted ListenerSet: wrote %v, %v", wrote, err)
	}
	st.AttachedListenerSets = ptr.To(int32(1))
	if wrote, err := w.Gateway(ctx, Key{"edge", "public"}, st, addrs); err != nil || !wrote {
		t.Fatalf("Gateway attachedListenerSets: wrote %v, %v", wrote, err)
	}
	if got, _ := gc.GatewayV1().Gateways("edge").Get(ctx, "public", metav1.GetOptions{}); got.Status.AttachedListenerSets == nil || *got.Status.AttachedListenerSets != 1 {
		t.Fatalf("attachedListenerSets %v", got.Status.AttachedListenerSets)
	}
}

// A policy's status.ancestors is a map keyed by ancestorRef and
// controllerName: ours for the Gateway is replaced (times kept when the
// status holds) or removed; other entries stay where they are; a full list
// (16) gets no new entry.
func TestPolicyAncestors(t *testing.T) {
	gw := Key{Namespace: "ns", Name: "edge"}
	ref := func(name string) gwv1.ParentReference {
		return gwv1.ParentReference{Namespace: ptr.To(gwv1.Namespace("ns")), Name: gwv1.ObjectName(name)}
	}
	entry := func(ctrl gwv1.GatewayController, name string, ok bool) gwv1.PolicyAncestorStatus {
		return gwv1.PolicyAncestorStatus{AncestorRef: ref(name), ControllerName: ctrl, Conditions: []metav1.Condition{cond("Accepted", ok, "Accepted")}}
	}
	mine := entry(ours, "edge", true)
	stored, full := PolicyAncestors([]gwv1.PolicyAncestorStatus{entry("example.com/x", "edge", false)}, &mine, ours, "ns", gw, t0)
	if full || len(stored) != 2 || stored[0].ControllerName != "example.com/x" || stored[1].ControllerName != ours {
		t.Fatalf("first write: %+v", stored)
	}
	if *stored[1].AncestorRef.Kind != "Gateway" || *stored[1].AncestorRef.Group != gwv1.GroupName {
		t.Fatalf("ancestorRef not defaulted: %+v", stored[1].AncestorRef)
	}
	next, _ := PolicyAncestors(stored, &mine, ours, "ns", gw, t1)
	if !Same(stored, next, AncestorsTimes) || !next[1].Conditions[0].LastTransitionTime.Time.Equal(t0) {
		t.Fatalf("an unchanged entry changed: %+v", next)
	}
	next, _ = PolicyAncestors(stored, nil, ours, "ns", gw, t1)
	if len(next) != 1 || next[0].ControllerName != "example.com/x" {
		t.Fatalf("removal: %+v", next)
	}
	var many []gwv1.PolicyAncestorStatus
	for i := range MaxAncestors {
		many = append(many, entry("example.com/x", "gw"+string(rune('a'+i)), true))
	}
	if out, full := PolicyAncestors(many, &mine, ours, "ns", gw, t0); !full || len(out) != MaxAncestors {
		t.Fatalf("a full list: full=%v, %d entries", full, len(out))
	}
	// Our own entry in a full list is still updated.
	many[3] = entry(ours, "edge", false)
	if out, full := PolicyAncestors(many, &mine, ours, "ns", gw, t0); full || len(out) != MaxAncestors || out[MaxAncestors-1].Conditions[0].Status != metav1.ConditionTrue {
		t.Fatalf("updating ours in a full list: full=%v, %+v", full, out)
	}
}

// An Owner replaces our entries for its Gateway and its ListenerSets, and
// keeps ours for another ListenerSet and another Gateway.
func TestRouteParentsListenerSets(t *testing.T) {
	ls := func(ns, name string) gwv1.ParentReference {
		r := ref(ns, name)
		r.Kind = ptr.To(gwv1.Kind("ListenerSet"))
		r.Group = ptr.To(gwv1.Group(gwv1.GroupName))
		return r
	}
	o := Owner{Gateway: Key{"edge", "public"}, ListenerSets: []Key{{"apps", "team"}}}
	stale := parent(ours, ls("", "team"), false)
	otherSet := parent(ours, ls("", "other"), true)
	gwEntry := parent(ours, ref("edge", "public"), true)
	got := RouteParents([]gwv1.RouteParentStatus{stale, otherSet, gwEntry}, []gwv1.RouteParentStatus{parent(ours, ls("apps", "team"), true)}, ours, "apps", o, t1)
	if len(got) != 2 || got[0].ParentRef.Name != "other" || got[1].ParentRef.Name != "team" || got[1].Conditions[0].Status != metav1.ConditionTrue {
		t.Fatalf("parents %+v", got)
	}
	// The ListenerSet parentRef named without a namespace is the route's.
	if !o.Owns(ls("", "team"), "apps") || o.Owns(ls("", "team"), "edge") || o.Owns(ref("", "team"), "apps") || !o.Owns(ref("edge", "public"), "apps") {
		t.Fatal("Owns")
	}
	// A Key owns its Gateway only.
	if (Key{"edge", "public"}).Owns(ls("edge", "public"), "edge") {
		t.Fatal("a Key owns a ListenerSet parentRef")
	}
}

func TestListenerSetStatusMerge(t *testing.T) {
	computed := gwv1.ListenerSetStatus{
		Conditions: []metav1.Condition{cond("Accepted", true, "Accepted"), cond("Programmed", true, "Programmed")},
		Listeners:  []gwv1.ListenerEntryStatus{{Name: "a", Conditions: []metav1.Condition{cond("Accepted", true, "Accepted")}}},
	}
	stored := ListenerSet(gwv1.ListenerSetStatus{}, computed, t0)
	computed.Conditions[1] = cond("Programmed", false, "ListenersNotValid")
	next := ListenerSet(stored, computed, t1)
	if !next.Conditions[0].LastTransitionTime.Time.Equal(t0) || !next.Conditions[1].LastTransitionTime.Time.Equal(t1) || !next.Listeners[0].Conditions[0].LastTransitionTime.Time.Equal(t0) {
		t.Fatalf("times %+v", next)
	}
	if Same(stored, next, ListenerSetTimes) || !Same(next, ListenerSet(next, computed, t1.Add(time.Hour)), ListenerSetTimes) {
		t.Fatal("Same")
	}
}
