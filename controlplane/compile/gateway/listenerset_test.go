package gateway

import (
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// lsStatus returns ListenerSet ns/name's status in r.
func lsStatus(t testing.TB, r Result, ns, name string) gwv1.ListenerSetStatus {
	t.Helper()
	for _, s := range r.ListenerSets {
		if s.ListenerSet == key(ns, name) {
			return s.Status
		}
	}
	t.Fatalf("no status for ListenerSet %s/%s (have %v)", ns, name, r.ListenerSets)
	return gwv1.ListenerSetStatus{}
}

func lsListener(t testing.TB, st gwv1.ListenerSetStatus, name string) gwv1.ListenerEntryStatus {
	t.Helper()
	for _, l := range st.Listeners {
		if string(l.Name) == name {
			return l
		}
	}
	t.Fatalf("no listener %s in %v", name, st.Listeners)
	return gwv1.ListenerEntryStatus{}
}

// parentOf returns the route's parent status for the parentRef of kind
// and name.
func parentOf(t testing.TB, r Result, ns, name, kind, parentName string) gwv1.RouteParentStatus {
	t.Helper()
	for _, rs := range r.Routes {
		if rs.Route != key(ns, name) {
			continue
		}
		for _, p := range rs.Parents {
			k := "Gateway"
			if p.ParentRef.Kind != nil {
				k = string(*p.ParentRef.Kind)
			}
			if k == kind && string(p.ParentRef.Name) == parentName {
				return p
			}
		}
	}
	t.Fatalf("no parent status %s %s for route %s/%s", kind, parentName, ns, name)
	return gwv1.RouteParentStatus{}
}

func attachedSets(r Result) int32 {
	if r.Gateway.AttachedListenerSets == nil {
		return -1
	}
	return *r.Gateway.AttachedListenerSets
}

// wantAcceptedListener is the upstream generateAcceptedListenerConditions.
func wantAcceptedListener(t testing.TB, what string, conds []metav1.Condition) {
	t.Helper()
	wantCond(t, what, conds, "Accepted", true, "Accepted")
	wantCond(t, what, conds, "ResolvedRefs", true, "ResolvedRefs")
	wantCond(t, what, conds, "Programmed", true, "Programmed")
}

// servedPaths lists "listener hostname: route/rule path" of every HTTP
// rule in the snapshot, to check what each request of the upstream tests
// would meet.
func serves(r Result, listener, hostname, route string) bool {
	for _, p := range r.Snapshot.Ports {
		for _, l := range p.Listeners {
			if l.Name != listener {
				continue
			}
			for _, h := range l.Hosts {
				if h.Hostname != hostname {
					continue
				}
				for _, rl := range h.Rules {
					if rl.Route.Name == route {
						return true
					}
				}
			}
		}
	}
	return false
}

// TestListenerSetConformance compiles the manifests of the upstream
// ListenerSet conformance tests (v1.6.3) and checks what they check of
// status, and the snapshot their requests would meet.
func TestListenerSetConformance(t *testing.T) {
	const web = "gateway-conformance-web-backend"
	tests := []struct {
		name, file, gw string
		check          func(t *testing.T, r Result)
	}{
		{"ListenerSetDefaultNotAllowed", "listenerset-default-not-allowed.yaml", "gateway-default-does-not-allow-listenerset", func(t *testing.T, r Result) {
			wantCond(t, "gateway", r.Gateway.Conditions, "Accepted", true, "Accepted")
			if n := attachedSets(r); n != 0 {
				t.Errorf("attachedListenerSets %d, want 0", n)
			}
			st := lsStatus(t, r, infra, "listenerset-default-not-allowed")
			wantCond(t, "ls", st.Conditions, "Accepted", false, "NotAllowed")
			wantCond(t, "ls", st.Conditions, "Programmed", false, "NotAllowed")
			if len(r.Snapshot.Ports) != 1 || len(r.Snapshot.Ports[0].Listeners) != 1 {
				t.Errorf("a ListenerSet not allowed changed what the Gateway serves: %v", r.Snapshot.Ports)
			}
		}},
		{"ListenerSetAllowedNamespaceNone", "listenerset-allowed-namespace-none.yaml", "gateway-does-not-allow-listenerset", func(t *testing.T, r Result) {
			if n := attachedSets(r); n != 0 {
				t.Errorf("attachedListenerSets %d, want 0", n)
			}
			st := lsStatus(t, r, infra, "listenerset-not-allowed")
			wantCond(t, "ls", st.Conditions, "Accepted", false, "NotAllowed")
			wantCond(t, "ls", st.Conditions, "Programmed", false, "NotAllowed")
		}},
		{"ListenerSetAllowedNamespaceSame", "listenerset-allowed-namespace-same.yaml", "gateway-allows-listenerset-in-same-namespace", func(t *testing.T, r Result) {
			if n := attachedSets(r); n != 1 {
				t.Errorf("attachedListenerSets %d, want 1", n)
			}
			st := lsStatus(t, r, infra, "listenerset-in-same-namespace")
			wantCond(t, "ls", st.Conditions, "Accepted", true, "Accepted")
			wantCond(t, "ls", st.Conditions, "Programmed", true, "Programmed")
			wantAcceptedListener(t, "listener", lsListener(t, st, "listenerset-in-same-namespace-listener").Conditions)
			st = lsStatus(t, r, "gateway-api-listenerset-not-allowed-ns", "listenerset-in-different-namespace")
			wantCond(t, "other ns", st.Conditions, "Accepted", false, "NotAllowed")
			wantCond(t, "other ns", st.Conditions, "Programmed", false, "NotAllowed")
		}},
		{"ListenerSetAllowedNamespaceSelector", "listenerset-allowed-namespace-selector.yaml", "gateway-allows-listenerset-in-selected-namespace", func(t *testing.T, r Result) {
			if n := attachedSets(r); n != 1 {
				t.Errorf("attachedListenerSets %d, want 1", n)
			}
			st := lsStatus(t, r, "gateway-api-listenerset-selector-allowed-ns", "listenerset-in-selected-namespace")
			wantCond(t, "ls", st.Conditions, "Accepted", true, "Accepted")
			wantAcceptedListener(t, "listener", lsListener(t, st, "listenerset-in-selected-namespace-listener").Conditions)
			st = lsStatus(t, r, "gateway-api-listenerset-selector-not-allowed-ns", "listenerset-not-in-selected-namespace")
			wantCond(t, "not selected", st.Conditions, "Accepted", false, "NotAllowed")
		}},
		{"ListenerSetAllowedRoutesSupportedKinds", "listenerset-allowed-routes-supported-kinds.yaml", "gateway-with-listener-sets-test-supported-route-kinds", func(t *testing.T, r Result) {
			wantCond(t, "gateway", r.Gateway.Conditions, "Accepted", true, "Accepted")
			l := lsListener(t, lsStatus(t, r, infra, "listenerset-test-allowed-routes-supported-kinds"), "listener-set-listener-allowed-routes-tls-only")
			wantCond(t, "listener", l.Conditions, "ResolvedRefs", false, "InvalidRouteKinds")
			if len(l.SupportedKinds) != 0 {
				t.Errorf("supportedKinds %v, want none", l.SupportedKinds)
			}
		}},
		{"ListenerSetHostnameConflict", "listenerset-hostname-conflict.yaml", "gateway-with-listenerset-hostname-conflict", func(t *testing.T, r Result) {
			conflicted := func(what string, l gwv1.ListenerEntryStatus) {
				t.Helper()
				wantCond(t, what, l.Conditions, "Accepted", false, "HostnameConflict")
				wantCond(t, what, l.Conditions, "Programmed", false, "HostnameConflict")
				wantCond(t, what, l.Conditions, "Conflicted", true, "HostnameConflict")
			}
			wantCond(t, "gateway", r.Gateway.Conditions, "Accepted", true, "Accepted")
			wantAcceptedListener(t, "gateway-listener", listenerStatus(t, r, "gateway-listener").Conditions)
			wantAcceptedListener(t, "gateway's conflicting", listenerStatus(t, r, "hostname-conflict-with-gateway-listener").Conditions)
			if n := attachedSets(r); n != 2 {
				t.Errorf("attachedListenerSets %d, want 2", n)
			}
			st := lsStatus(t, r, infra, "listenerset-with-hostname-conflict-with-gateway-1")
			wantCond(t, "gw-1", st.Conditions, "Accepted", true, "ListenersNotValid")
			wantCond(t, "gw-1", st.Conditions, "Programmed", true, "Programmed")
			wantAcceptedListener(t, "gw-1 own", lsListener(t, st, "listener-set-1-listener").Conditions)
			conflicted("gw-1 vs gateway", lsListener(t, st, "hostname-conflict-with-gateway-listener"))
			// The same creation time: the first by namespace/name wins.
			wantAcceptedListener(t, "gw-1 first", lsListener(t, st, "hostname-conflict-with-listener-set-listener").Conditions)
			st = lsStatus(t, r, infra, "listenerset-with-hostname-conflict-with-gateway-2")
			wantCond(t, "gw-2", st.Conditions, "Accepted", false, "ListenersNotValid")
			wantCond(t, "gw-2", st.Conditions, "Programmed", false, "ListenersNotValid")
			conflicted("gw-2", lsListener(t, st, "hostname-conflict-with-gateway-listener"))
			st = lsStatus(t, r, infra, "listenerset-with-hostname-conflict-with-listener-set-1")
			wantCond(t, "ls-1", st.Conditions, "Accepted", true, "ListenersNotValid")
			wantCond(t, "ls-1", st.Conditions, "Programmed", true, "Programmed")
			wantAcceptedListener(t, "ls-1 own", lsListener(t, st, "listener-set-2-listener").Conditions)
			conflicted("ls-1", lsListener(t, st, "hostname-conflict-with-listener-set-listener"))
			st = lsStatus(t, r, infra, "listenerset-with-hostname-conflict-with-listener-set-2")
			wantCond(t, "ls-2", st.Conditions, "Accepted", false, "ListenersNotValid")
			conflicted("ls-2", lsListener(t, st, "hostname-conflict-with-listener-set-listener"))
			// Served: the Gateway's two, and the winners.
			var names []string
			for _, l := range r.Snapshot.Ports[0].Listeners {
				names = append(names, l.Name)
			}
			slices.Sort(names)
			want := []string{
				"gateway-conformance-infra/listenerset-with-hostname-conflict-with-gateway-1/hostname-conflict-with-listener-set-listener",
				"gateway-conformance-infra/listenerset-with-hostname-conflict-with-gateway-1/listener-set-1-listener",
				"gateway-conformance-infra/listenerset-with-hostname-conflict-with-listener-set-1/listener-set-2-listener",
				"gateway-listener", "hostname-conflict-with-gateway-listener",
			}
			if !slices.Equal(names, want) {
				t.Errorf("served listeners\n got %q\nwant %q", names, want)
			}
		}},
		{"ListenerSetProtocolConflict", "listenerset-protocol-conflict.yaml", "gateway-with-listenerset-protocol-conflict", func(t *testing.T, r Result) {
			conflicted := func(what string, l gwv1.ListenerEntryStatus) {
				t.Helper()
				wantCond(t, what, l.Conditions, "Accepted", false, "ProtocolConflict")
				wantCond(t, what, l.Conditions, "Programmed", false, "ProtocolConflict")
				wantCond(t, what, l.Conditions, "Conflicted", true, "ProtocolConflict")
			}
			wantCond(t, "gateway", r.Gateway.Conditions, "Accepted", true, "Accepted")
			wantAcceptedListener(t, "gateway's", listenerStatus(t, r, "protocol-conflict-with-gateway-listener").Conditions)
			if n := attachedSets(r); n != 2 {
				t.Errorf("attachedListenerSets %d, want 2", n)
			}
			st := lsStatus(t, r, infra, "listenerset-with-protocol-conflict-with-gateway-1")
			wantCond(t, "gw-1", st.Conditions, "Accepted", true, "ListenersNotValid")
			wantCond(t, "gw-1", st.Conditions, "Programmed", true, "Programmed")
			wantAcceptedListener(t, "gw-1 own", lsListener(t, st, "listener-set-1-listener").Conditions)
			conflicted("gw-1 TCP", lsListener(t, st, "protocol-conflict-with-gateway-listener"))
			wantAcceptedListener(t, "gw-1 HTTP", lsListener(t, st, "protocol-conflict-with-listener-set-listener").Conditions)
			st = lsStatus(t, r, infra, "listenerset-with-protocol-conflict-with-gateway-2")
			wantCond(t, "gw-2", st.Conditions, "Accepted", false, "ListenersNotValid")
			wantCond(t, "gw-2", st.Conditions, "Programmed", false, "ListenersNotValid")
			conflicted("gw-2", lsListener(t, st, "protocol-conflict-with-gateway-listener"))
			st = lsStatus(t, r, infra, "listenerset-with-protocol-conflict-with-listener-set-1")
			wantCond(t, "ls-1", st.Conditions, "Accepted", true, "ListenersNotValid")
			wantAcceptedListener(t, "ls-1 own", lsListener(t, st, "listener-set-2-listener").Conditions)
			conflicted("ls-1", lsListener(t, st, "protocol-conflict-with-listener-set-listener"))
			st = lsStatus(t, r, infra, "listenerset-with-protocol-conflict-with-listener-set-2")
			wantCond(t, "ls-2", st.Conditions, "Accepted", false, "ListenersNotValid")
			conflicted("ls-2", lsListener(t, st, "protocol-conflict-with-listener-set-listener"))
		}},
		{"ListenerSetReferenceGrant", "listenerset-reference-grant.yaml", "gateway-with-listener-sets-test-reference-grant", func(t *testing.T, r Result) {
			wantCond(t, "gateway", r.Gateway.Conditions, "Accepted", true, "Accepted")
			st := lsStatus(t, r, infra, "listenerset-with-reference-grant")
			wantCond(t, "granted", st.Conditions, "Accepted", true, "Accepted")
			wantCond(t, "granted", st.Conditions, "Programmed", true, "Programmed")
			wantCond(t, "granted", lsListener(t, st, "listenerset-with-reference-grant-listener").Conditions, "ResolvedRefs", true, "ResolvedRefs")
			st = lsStatus(t, r, "gateway-api-listener-sets-test-reference-grant-ns", "listenerset-without-reference-grant")
			wantCond(t, "not granted", st.Conditions, "Accepted", false, "ListenersNotValid")
			wantCond(t, "not granted", st.Conditions, "Programmed", false, "ListenersNotValid")
			wantCond(t, "not granted", lsListener(t, st, "listenerset-without-reference-grant-listener").Conditions, "ResolvedRefs", false, "RefNotPermitted")
			if n := attachedSets(r); n != 1 {
				t.Errorf("attachedListenerSets %d, want 1", n)
			}
		}},
		{"ListenerSetGatewayParentSectionNameNotFound", "listenerset-gateway-parent-section-name-not-found.yaml", "gateway-section-name", func(t *testing.T, r Result) {
			if n := attachedSets(r); n != 1 {
				t.Errorf("attachedListenerSets %d, want 1", n)
			}
			p := parentOf(t, r, infra, "route-via-listenerset", "ListenerSet", "listenerset-section-name")
			wantCond(t, "via ls", p.Conditions, "Accepted", true, "Accepted")
			p = parentOf(t, r, infra, "route-via-gateway", "Gateway", "gateway-section-name")
			wantCond(t, "via gateway", p.Conditions, "Accepted", false, "NoMatchingParent")
			ls := infra + "/listenerset-section-name/ls-only-listener"
			if !serves(r, ls, "ls-section-name.com", "route-via-listenerset") || serves(r, "gw-listener", "gw-section.com", "route-via-gateway") {
				t.Errorf("snapshot %v", r.Snapshot.Ports)
			}
		}},
		{"ListenerSetRouteStatusScopedToParentRef", "listenerset-route-status-scoped-to-parentref.yaml", "gateway-parentref", func(t *testing.T, r Result) {
			st := lsStatus(t, r, infra, "listenerset-parentref")
			l := lsListener(t, st, "listenerset-parentref-listener")
			if l.AttachedRoutes != 1 {
				t.Errorf("attachedRoutes %d, want 1", l.AttachedRoutes)
			}
			if n := listenerStatus(t, r, "gw-parentref-listener").AttachedRoutes; n != 1 {
				t.Errorf("gateway listener attachedRoutes %d, want 1", n)
			}
			for _, rt := range []string{"route-parentref-gwonly", "route-parentref-lsonly"} {
				if got := len(parentsOf(r, infra, rt)); got != 1 {
					t.Errorf("%s: %d parent statuses, want 1 (its one parentRef)", rt, got)
				}
			}
			wantCond(t, "gw only", parentOf(t, r, infra, "route-parentref-gwonly", "Gateway", "gateway-parentref").Conditions, "Accepted", true, "Accepted")
			wantCond(t, "ls only", parentOf(t, r, infra, "route-parentref-lsonly", "ListenerSet", "listenerset-parentref").Conditions, "Accepted", true, "Accepted")
		}},
		{"ListenerSetDualParentRefIndependence", "listenerset-dual-parentref-independence.yaml", "gateway-dual-parentref", func(t *testing.T, r Result) {
			l := lsListener(t, lsStatus(t, r, infra, "ls-dual-parentref"), "ls-dual-parentref-listener")
			if l.AttachedRoutes != 2 {
				t.Errorf("attachedRoutes %d, want 2", l.AttachedRoutes)
			}
			wantCond(t, "both/gw", parentOf(t, r, infra, "route-dual-parentref-both", "Gateway", "gateway-dual-parentref").Conditions, "Accepted", true, "Accepted")
			wantCond(t, "both/ls", parentOf(t, r, infra, "route-dual-parentref-both", "ListenerSet", "ls-dual-parentref").Conditions, "Accepted", true, "Accepted")
			wantCond(t, "one/gw", parentOf(t, r, infra, "route-dual-parentref-one", "Gateway", "gateway-dual-parentref").Conditions, "Accepted", false, "NoMatchingParent")
			wantCond(t, "one/ls", parentOf(t, r, infra, "route-dual-parentref-one", "ListenerSet", "ls-dual-parentref").Conditions, "Accepted", true, "Accepted")
			ls := infra + "/ls-dual-parentref/ls-dual-parentref-listener"
			if !serves(r, "gw-dual-parentref-listener", "gw-dual.com", "route-dual-parentref-both") || !serves(r, ls, "ls-dual.com", "route-dual-parentref-both") ||
				!serves(r, ls, "ls-dual.com", "route-dual-parentref-one") || serves(r, "gw-dual-parentref-listener", "gw-dual.com", "route-dual-parentref-one") {
				t.Errorf("snapshot %v", r.Snapshot.Ports)
			}
		}},
		{"ListenerSetHTTPRouting", "listenerset-http-routing.yaml", "gateway-with-listener-sets-http-routing", func(t *testing.T, r Result) {
			if n := attachedSets(r); n != 2 {
				t.Errorf("attachedListenerSets %d, want 2", n)
			}
			for _, rt := range []string{"attaches-to-all-listeners", "gateway-route", "gateway-section-route"} {
				wantCond(t, rt, parentOf(t, r, infra, rt, "Gateway", "gateway-with-listener-sets-http-routing").Conditions, "Accepted", true, "Accepted")
			}
			want := map[string]int32{
				"listener-set-http-routing-1/listener-set-http-routing-1-listener-1": 3,
				"listener-set-http-routing-1/listener-set-http-routing-1-listener-2": 2,
				"listener-set-http-routing-2/listener-set-http-routing-2-listener-1": 2,
				"listener-set-http-routing-2/listener-set-http-routing-2-listener-2": 2,
			}
			for k, n := range want {
				set, name, _ := cut(k)
				st := lsStatus(t, r, infra, set)
				wantCond(t, set, st.Conditions, "Accepted", true, "Accepted")
				l := lsListener(t, st, name)
				wantAcceptedListener(t, name, l.Conditions)
				if l.AttachedRoutes != n {
					t.Errorf("%s: attachedRoutes %d, want %d", k, l.AttachedRoutes, n)
				}
				host := name + ".com"
				if !serves(r, infra+"/"+k, host, "attaches-to-all-listeners") || serves(r, infra+"/"+k, host, "gateway-route") {
					t.Errorf("%s: snapshot %v", k, r.Snapshot.Ports)
				}
			}
			l1 := infra + "/listener-set-http-routing-1/listener-set-http-routing-1-listener-"
			if !serves(r, l1+"1", "listener-set-http-routing-1-listener-1.com", "listener-set-http-routing-1-section-route") ||
				serves(r, l1+"2", "listener-set-http-routing-1-listener-2.com", "listener-set-http-routing-1-section-route") ||
				!serves(r, "gateway-listener-1", "gateway-listener-1.com", "gateway-section-route") ||
				serves(r, "gateway-listener-2", "gateway-listener-2.com", "gateway-section-route") ||
				serves(r, "gateway-listener-1", "gateway-listener-1.com", "listener-set-http-routing-2-route") {
				t.Errorf("snapshot %v", r.Snapshot.Ports)
			}
		}},
		{"ListenerSetAllowedRoutesNamespaces", "listenerset-allowed-routes-namespaces.yaml", "gateway-with-listener-sets-test-allowed-routes", func(t *testing.T, r Result) {
			if n := attachedSets(r); n != 2 {
				t.Errorf("attachedListenerSets %d, want 2", n)
			}
			st := lsStatus(t, r, infra, "listenerset-test-allowed-routes-namespaces")
			for name, n := range map[string]int32{"listener-set-listener-allowed-routes-all": 3, "listener-set-listener-allowed-routes-same": 1, "listener-set-listener-allowed-routes-selector": 1} {
				if l := lsListener(t, st, name); l.AttachedRoutes != n {
					t.Errorf("%s: attachedRoutes %d, want %d", name, l.AttachedRoutes, n)
				}
			}
			for _, rt := range [][2]string{{infra, "route-in-same-namespace"}, {"gateway-api-routes-allowed-ns", "route-in-selected-namespace"}, {"gateway-api-routes-not-allowed-ns", "route-not-in-selected-namespace"}} {
				p := parentOf(t, r, rt[0], rt[1], "ListenerSet", "listenerset-test-allowed-routes-namespaces")
				wantCond(t, rt[1], p.Conditions, "Accepted", true, "Accepted")
				wantCond(t, rt[1], p.Conditions, "ResolvedRefs", true, "ResolvedRefs")
			}
			// A ListenerSet's Same is its own namespace, not its Gateway's.
			cross := "gateway-api-ls-cross-ns"
			l := lsListener(t, lsStatus(t, r, cross, "listenerset-test-allowed-routes-cross-ns"), "listener-set-listener-allowed-routes-cross-ns-same")
			if l.AttachedRoutes != 1 {
				t.Errorf("cross-ns attachedRoutes %d, want 1", l.AttachedRoutes)
			}
			wantCond(t, "route in ls ns", parentOf(t, r, cross, "route-in-listenerset-namespace", "ListenerSet", "listenerset-test-allowed-routes-cross-ns").Conditions, "Accepted", true, "Accepted")
			wantCond(t, "route in gw ns", parentOf(t, r, infra, "route-in-gateway-namespace", "ListenerSet", "listenerset-test-allowed-routes-cross-ns").Conditions, "Accepted", false, "NotAllowedByListeners")
			sel := infra + "/listenerset-test-allowed-routes-namespaces/listener-set-listener-allowed-routes-selector"
			if !serves(r, sel, "listener-set-listener-allowed-routes-selector.com", "route-in-selected-namespace") || serves(r, sel, "listener-set-listener-allowed-routes-selector.com", "route-in-same-namespace") {
				t.Errorf("snapshot %v", r.Snapshot.Ports)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := load(t, "conformance/manifests.yaml", "conformance/"+tc.file)
			in = add(in, tlsSecret(t, web, "certificate"))
			r := Compile(in, key(infra, tc.gw), Options{})
			if !r.Owned {
				t.Fatalf("gateway %s not owned", tc.gw)
			}
			tc.check(t, r)
			// InputFrom over a store gives the same result.
		})
	}
}

func cut(s string) (string, string, bool) {
	for i := range s {
		if s[i] == '/' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

func parentsOf(r Result, ns, name string) []gwv1.RouteParentStatus {
	for _, rs := range r.Routes {
		if rs.Route == key(ns, name) {
			return rs.Parents
		}
	}
	return nil
}

// lsOf builds ListenerSet ns/name for Gateway gw/gw, created at second
// created.
func lsOf(ns, name string, created int64, ls ...gwv1.Listener) *gwv1.ListenerSet {
	o := &gwv1.ListenerSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 4, CreationTimestamp: metav1.Unix(created, 0)}}
	o.Spec.ParentRef = gwv1.ParentGatewayReference{Name: "gw", Namespace: ptr(gwv1.Namespace("gw"))}
	for _, l := range ls {
		o.Spec.Listeners = append(o.Spec.Listeners, gwv1.ListenerEntry(l))
	}
	return o
}

func allowing(g *gwv1.Gateway, f gwv1.FromNamespaces, sel map[string]string) *gwv1.Gateway {
	g.Spec.AllowedListeners = &gwv1.AllowedListeners{Namespaces: &gwv1.ListenerNamespaces{From: &f}}
	if sel != nil {
		g.Spec.AllowedListeners.Namespaces.Selector = &metav1.LabelSelector{MatchLabels: sel}
	}
	return g
}

func viaSet(r *gwv1.HTTPRoute, ns, name, section string) *gwv1.HTTPRoute {
	p := gwv1.ParentReference{Group: ptr(gwv1.Group(Group)), Kind: ptr(gwv1.Kind("ListenerSet")), Name: gwv1.ObjectName(name), Namespace: ptr(gwv1.Namespace(ns))}
	if section != "" {
		p.SectionName = ptr(gwv1.SectionName(section))
	}
	r.Spec.ParentRefs = []gwv1.ParentReference{p}
	return r
}

// Precedence: the Gateway's listeners, then ListenerSets oldest first
// (whatever their names), then by namespace/name; a conflicting listener
// of lower precedence is refused and the other keeps serving.
func TestListenerSetPrecedence(t *testing.T) {
	g := allowing(gw(lis("http", 80, gwv1.HTTPProtocolType, "gw.com")), gwv1.NamespacesFromAll, nil)
	older := lsOf("gw", "z-older", 100, lis("a", 80, gwv1.HTTPProtocolType, "x.com"), lis("gw-host", 80, gwv1.HTTPProtocolType, "gw.com"))
	younger := lsOf("gw", "a-younger", 200, lis("a", 80, gwv1.HTTPProtocolType, "x.com"), lis("b", 8443, gwv1.HTTPSProtocolType, "y.com"))
	sameTimeLater := lsOf("other", "a", 200, lis("c", 8443, gwv1.HTTPSProtocolType, "y.com"), lis("tcp", 8443, gwv1.TCPProtocolType, ""))
	sameTimeLater.Spec.Listeners[0].TLS.CertificateRefs[0].Namespace = ptr(gwv1.Namespace("gw"))
	grant := &gwv1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "gw", Name: "g"}, Spec: gwv1.ReferenceGrantSpec{
		From: []gwv1.ReferenceGrantFrom{{Group: Group, Kind: "ListenerSet", Namespace: "other"}},
		To:   []gwv1.ReferenceGrantTo{{Group: "", Kind: "Secret"}},
	}}
	r := compile(base(t, g, younger, sameTimeLater, older, grant))

	st := lsStatus(t, r, "gw", "z-older")
	wantAcceptedListener(t, "older a", lsListener(t, st, "a").Conditions)
	c := lsListener(t, st, "gw-host").Conditions
	wantCond(t, "older gw-host", c, "Conflicted", true, "HostnameConflict")
	if m := find(t, c, "Accepted").Message; !strings.Contains(m, "the Gateway's listener http") {
		t.Errorf("message does not name the winner: %q", m)
	}
	wantAcceptedListener(t, "gateway http", listenerStatus(t, r, "http").Conditions)
	wantCond(t, "older", st.Conditions, "Accepted", true, "ListenersNotValid")
	if g := find(t, st.Conditions, "Accepted").ObservedGeneration; g != 4 {
		t.Errorf("observedGeneration %d, want the ListenerSet's 4", g)
	}

	st = lsStatus(t, r, "gw", "a-younger")
	wantCond(t, "younger a", lsListener(t, st, "a").Conditions, "Conflicted", true, "HostnameConflict")
	wantAcceptedListener(t, "younger b", lsListener(t, st, "b").Conditions)

	// Same creation time as a-younger: gw/a-younger comes before other/a.
	st = lsStatus(t, r, "other", "a")
	wantCond(t, "other c", lsListener(t, st, "c").Conditions, "Conflicted", true, "HostnameConflict")
	wantCond(t, "other tcp", lsListener(t, st, "tcp").Conditions, "Conflicted", true, "ProtocolConflict")
	wantCond(t, "other", st.Conditions, "Accepted", false, "ListenersNotValid")

	if n := attachedSets(r); n != 2 {
		t.Errorf("attachedListenerSets %d, want 2", n)
	}
	if !slices.Equal(r.ListenerSetPorts, []ListenerPort{{80, gwv1.HTTPProtocolType}, {8443, gwv1.HTTPSProtocolType}}) {
		t.Errorf("ports %v", r.ListenerSetPorts)
	}
	var names []string
	for _, p := range r.Snapshot.Ports {
		for _, l := range p.Listeners {
			names = append(names, l.Name)
		}
	}
	slices.Sort(names)
	if want := []string{"gw/a-younger/b", "gw/z-older/a", "http"}; !slices.Equal(names, want) {
		t.Errorf("served %q, want %q", names, want)
	}
}

// A ListenerSet the Gateway does not allow (or whose Gateway is not
// accepted) is rejected in its own status, changes nothing the Gateway
// serves, and a route naming it is not accepted.
func TestListenerSetNotAttached(t *testing.T) {
	ls := lsOf("other", "ls", 100, lis("a", 8080, gwv1.HTTPProtocolType, ""))
	rt := viaSet(hroute("other", "r", nil, gwv1.HTTPRouteRule{BackendRefs: []gwv1.HTTPBackendRef{bref("a", 80)}}), "other", "ls", "")
	for _, tc := range []struct {
		name   string
		g      *gwv1.Gateway
		reason string
	}{
		{"default", gw(lis("http", 80, gwv1.HTTPProtocolType, "")), "NotAllowed"},
		{"Same, another namespace", allowing(gw(lis("http", 80, gwv1.HTTPProtocolType, "")), gwv1.NamespacesFromSame, nil), "NotAllowed"},
		{"Selector not matching", allowing(gw(lis("http", 80, gwv1.HTTPProtocolType, "")), gwv1.NamespacesFromSelector, map[string]string{"team": "y"}), "NotAllowed"},
		{"Selector missing", allowing(gw(lis("http", 80, gwv1.HTTPProtocolType, "")), gwv1.NamespacesFromSelector, nil), "NotAllowed"},
		{"parent not accepted", allowing(gw(lis("sctp", 53, gwv1.ProtocolType("SCTP"), "")), gwv1.NamespacesFromAll, nil), "ParentNotAccepted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := compile(base(t, tc.g, ls, rt))
			st := lsStatus(t, r, "other", "ls")
			wantCond(t, "ls", st.Conditions, "Accepted", false, tc.reason)
			wantCond(t, "ls", st.Conditions, "Programmed", false, tc.reason)
			if len(st.Listeners) != 0 || attachedSets(r) != 0 || len(r.ListenerSetPorts) != 0 {
				t.Errorf("listeners %v, attached %d, ports %v", st.Listeners, attachedSets(r), r.ListenerSetPorts)
			}
			for _, p := range r.Snapshot.Ports {
				if p.Port == 8080 {
					t.Errorf("port 8080 served")
				}
			}
			wantCond(t, "route", parentOf(t, r, "other", "r", "ListenerSet", "ls").Conditions, "Accepted", false, "NotAllowedByListeners")
		})
	}
	// Selector matching: attached.
	r := compile(base(t, allowing(gw(lis("http", 80, gwv1.HTTPProtocolType, "")), gwv1.NamespacesFromSelector, map[string]string{"team": "x"}), ls, rt))
	wantCond(t, "selected", lsStatus(t, r, "other", "ls").Conditions, "Accepted", true, "Accepted")
	wantCond(t, "route", parentOf(t, r, "other", "r", "ListenerSet", "ls").Conditions, "Accepted", true, "Accepted")
	if !serves(r, "other/ls/a", "", "r") {
		t.Errorf("snapshot %v", r.Snapshot.Ports)
	}
}

// A ListenerSet's certificateRefs default to its namespace; another
// namespace's needs a ReferenceGrant from ListenerSets: the Gateway's
// grant does not extend to it.
func TestListenerSetCertificates(t *testing.T) {
	g := allowing(gw(lis("http", 80, gwv1.HTTPProtocolType, "")), gwv1.NamespacesFromAll, nil)
	own := lsOf("other", "own", 100, lis("a", 443, gwv1.HTTPSProtocolType, "a.com"))
	cross := lsOf("other", "cross", 100, lis("b", 443, gwv1.HTTPSProtocolType, "b.com"))
	cross.Spec.Listeners[0].TLS.CertificateRefs[0].Namespace = ptr(gwv1.Namespace("gw"))
	gatewayGrant := &gwv1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "gw", Name: "g"}, Spec: gwv1.ReferenceGrantSpec{
		From: []gwv1.ReferenceGrantFrom{{Group: Group, Kind: "Gateway", Namespace: "other"}},
		To:   []gwv1.ReferenceGrantTo{{Group: "", Kind: "Secret"}},
	}}
	r := compile(base(t, g, own, cross, gatewayGrant, tlsSecret(t, "other", "cert")))
	wantAcceptedListener(t, "own", lsListener(t, lsStatus(t, r, "other", "own"), "a").Conditions)
	if l := snapListener(t, r.Snapshot, "other/own/a"); !slices.Equal(l.Certificates, []string{"other/cert"}) {
		t.Errorf("certificates %v", l.Certificates)
	}
	c := lsListener(t, lsStatus(t, r, "other", "cross"), "b").Conditions
	wantCond(t, "cross", c, "ResolvedRefs", false, "RefNotPermitted")
	wantCond(t, "cross", c, "Programmed", false, "Invalid")
}
