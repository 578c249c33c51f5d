package gateway

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Builders for the unit tables: Gateway "gw/gw" of class meridian, routes
// in namespace "gw" unless said otherwise, Services "gw/a", "gw/b".

func gw(ls ...gwv1.Listener) *gwv1.Gateway {
	return &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "gw", Name: "gw", Generation: 3}, Spec: gwv1.GatewaySpec{GatewayClassName: "meridian", Listeners: ls}}
}

func lis(name string, port int32, proto gwv1.ProtocolType, hostname string) gwv1.Listener {
	l := gwv1.Listener{Name: gwv1.SectionName(name), Port: port, Protocol: proto}
	if hostname != "" {
		l.Hostname = ptr(gwv1.Hostname(hostname))
	}
	if proto == gwv1.HTTPSProtocolType {
		l.TLS = &gwv1.ListenerTLSConfig{CertificateRefs: []gwv1.SecretObjectReference{{Name: "cert"}}}
	}
	if proto == gwv1.TLSProtocolType {
		l.TLS = &gwv1.ListenerTLSConfig{Mode: ptr(gwv1.TLSModePassthrough)}
	}
	return l
}

func from(l gwv1.Listener, f gwv1.FromNamespaces, sel map[string]string) gwv1.Listener {
	l.AllowedRoutes = &gwv1.AllowedRoutes{Namespaces: &gwv1.RouteNamespaces{From: &f}}
	if sel != nil {
		l.AllowedRoutes.Namespaces.Selector = &metav1.LabelSelector{MatchLabels: sel}
	}
	return l
}

func svc(ns, name string, port int32, appProtocol string) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "p", Port: port}}}}
	if appProtocol != "" {
		s.Spec.Ports[0].AppProtocol = &appProtocol
	}
	return s
}

func bref(name string, port int32) gwv1.HTTPBackendRef {
	return gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: gwv1.ObjectName(name), Port: ptr(port)}}}
}

func hroute(ns, name string, hostnames []string, rules ...gwv1.HTTPRouteRule) *gwv1.HTTPRoute {
	r := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 2, CreationTimestamp: metav1.Unix(1000, 0)}}
	r.Spec.ParentRefs = []gwv1.ParentReference{{Name: "gw", Namespace: ptr(gwv1.Namespace("gw"))}}
	for _, h := range hostnames {
		r.Spec.Hostnames = append(r.Spec.Hostnames, gwv1.Hostname(h))
	}
	r.Spec.Rules = rules
	if len(rules) == 0 {
		r.Spec.Rules = []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{bref("a", 80)}}}
	}
	return r
}

func prefix(p string) gwv1.HTTPRouteMatch {
	return gwv1.HTTPRouteMatch{Path: &gwv1.HTTPPathMatch{Type: ptr(gwv1.PathMatchPathPrefix), Value: ptr(p)}}
}

func base(t testing.TB, objs ...any) Input {
	in := Input{GatewayClasses: []*gwv1.GatewayClass{class()}}
	in.Services = []*corev1.Service{svc("gw", "a", 80, ""), svc("gw", "b", 80, "")}
	in.Secrets = []*corev1.Secret{tlsSecret(t, "gw", "cert")}
	in.Namespaces = []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: "gw"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "other", Labels: map[string]string{"team": "x"}}},
	}
	for _, o := range objs {
		switch o := o.(type) {
		case *gwv1.Gateway:
			in.Gateways = append(in.Gateways, o)
		case *gwv1.HTTPRoute:
			in.HTTPRoutes = append(in.HTTPRoutes, o)
		case *gwv1.GRPCRoute:
			in.GRPCRoutes = append(in.GRPCRoutes, o)
		case *gwv1.TLSRoute:
			in.TLSRoutes = append(in.TLSRoutes, o)
		case *gwv1.TCPRoute:
			in.TCPRoutes = append(in.TCPRoutes, o)
		case *gwv1.UDPRoute:
			in.UDPRoutes = append(in.UDPRoutes, o)
		case *gwv1.ReferenceGrant:
			in.ReferenceGrants = append(in.ReferenceGrants, o)
		case *gwv1.BackendTLSPolicy:
			in.BackendTLSPolicies = append(in.BackendTLSPolicies, o)
		case *gwv1.ListenerSet:
			in.ListenerSets = append(in.ListenerSets, o)
		case *corev1.Service:
			in.Services = append(in.Services, o)
		case *corev1.Secret:
			in.Secrets = append(in.Secrets, o)
		case *corev1.ConfigMap:
			in.ConfigMaps = append(in.ConfigMaps, o)
		default:
			t.Fatalf("base: %T", o)
		}
	}
	return in
}

func compile(in Input) Result { return Compile(in, key("gw", "gw"), Options{}) }

func TestIntersect(t *testing.T) {
	tests := []struct {
		listener, route, want string
		ok                    bool
	}{
		{"", "foo.com", "foo.com", true},
		{"", "*.foo.com", "*.foo.com", true},
		{"foo.com", "foo.com", "foo.com", true},
		{"foo.com", "bar.com", "", false},
		{"*.foo.com", "a.foo.com", "a.foo.com", true},
		{"*.foo.com", "a.b.foo.com", "a.b.foo.com", true}, // wildcards span labels
		{"*.foo.com", "foo.com", "", false},
		{"*.foo.com", "afoo.com", "", false},
		{"a.foo.com", "*.foo.com", "a.foo.com", true},
		{"*.foo.com", "*.a.foo.com", "*.a.foo.com", true},
		{"*.a.foo.com", "*.foo.com", "*.a.foo.com", true},
		{"*.foo.com", "*.bar.com", "", false},
		{"*.foo.com", "*.foo.com", "*.foo.com", true},
	}
	for _, tc := range tests {
		got, ok := intersect(tc.listener, tc.route)
		if got != tc.want || ok != tc.ok {
			t.Errorf("intersect(%q, %q) = %q, %v; want %q, %v", tc.listener, tc.route, got, ok, tc.want, tc.ok)
		}
	}
}

func TestClass(t *testing.T) {
	if ours, _ := ClassConditions(&gwv1.GatewayClass{Spec: gwv1.GatewayClassSpec{ControllerName: "example.com/other"}}); ours {
		t.Error("another controller's class is ours")
	}
	ours, conds := ClassConditions(class())
	if !ours {
		t.Fatal("class not ours")
	}
	wantCond(t, "class", conds, "Accepted", true, "Accepted")

	// A Gateway of another class, or a missing one, is not ours: nothing
	// may be written.
	g := gw(lis("http", 80, gwv1.HTTPProtocolType, ""))
	g.Spec.GatewayClassName = "other"
	if r := compile(base(t, g)); r.Owned || r.Snapshot != nil {
		t.Errorf("a Gateway of another class compiled: %+v", r)
	}
	if r := compile(base(t)); r.Owned {
		t.Error("a missing Gateway compiled")
	}
}

func TestListeners(t *testing.T) {
	type want struct {
		accepted   string // reason, "" for True
		conflicted string
		refs       string // reason, "" for True
		programmed bool
	}
	badCert := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "gw", Name: "bad"}, Data: map[string][]byte{"tls.crt": []byte("x"), "tls.key": []byte("y")}}
	other := tlsSecret(t, "other", "cert")
	withCert := func(l gwv1.Listener, ns, name string) gwv1.Listener {
		l.TLS = &gwv1.ListenerTLSConfig{CertificateRefs: []gwv1.SecretObjectReference{{Name: gwv1.ObjectName(name)}}}
		if ns != "" {
			l.TLS.CertificateRefs[0].Namespace = ptr(gwv1.Namespace(ns))
		}
		return l
	}
	grant := &gwv1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "g"}, Spec: gwv1.ReferenceGrantSpec{
		From: []gwv1.ReferenceGrantFrom{{Group: Group, Kind: "Gateway", Namespace: "gw"}},
		To:   []gwv1.ReferenceGrantTo{{Group: "", Kind: "Secret"}},
	}}
	terminate := func(name, hostname string) gwv1.Listener {
		l := withCert(lis(name, 443, gwv1.TLSProtocolType, hostname), "", "cert")
		l.TLS.Mode = ptr(gwv1.TLSModeTerminate)
		return l
	}
	noCerts := terminate("t", "")
	noCerts.TLS.CertificateRefs = nil
	crossNS := withCert(terminate("t", ""), "other", "cert")
	crossNS.TLS.Mode = ptr(gwv1.TLSModeTerminate)
	badMode := lis("t", 443, gwv1.TLSProtocolType, "")
	badMode.TLS.Mode = ptr(gwv1.TLSModeType("Reencrypt"))
	kinds := lis("k", 80, gwv1.HTTPProtocolType, "")
	kinds.AllowedRoutes = &gwv1.AllowedRoutes{Kinds: []gwv1.RouteGroupKind{{Kind: "TLSRoute"}, {Kind: "HTTPRoute"}}}
	tests := []struct {
		name  string
		ls    []gwv1.Listener
		extra []any
		want  map[string]want
	}{
		{"http", []gwv1.Listener{lis("a", 80, gwv1.HTTPProtocolType, "")}, nil, map[string]want{"a": {programmed: true}}},
		{"unsupported protocol", []gwv1.Listener{lis("a", 53, gwv1.ProtocolType("SCTP"), ""), lis("b", 80, gwv1.HTTPProtocolType, "")}, nil,
			map[string]want{"a": {accepted: "UnsupportedProtocol"}, "b": {programmed: true}}},
		{"same port, protocol conflict", []gwv1.Listener{lis("a", 80, gwv1.HTTPProtocolType, ""), lis("b", 80, gwv1.HTTPSProtocolType, "x.com"), lis("c", 81, gwv1.HTTPProtocolType, "")}, nil,
			map[string]want{"a": {accepted: "ProtocolConflict", conflicted: "ProtocolConflict"}, "b": {accepted: "ProtocolConflict", conflicted: "ProtocolConflict"}, "c": {programmed: true}}},
		{"same port, hostname conflict", []gwv1.Listener{lis("a", 80, gwv1.HTTPProtocolType, "x.com"), lis("b", 80, gwv1.HTTPProtocolType, "x.com"), lis("c", 80, gwv1.HTTPProtocolType, "y.com")}, nil,
			map[string]want{"a": {accepted: "HostnameConflict", conflicted: "HostnameConflict"}, "b": {accepted: "HostnameConflict", conflicted: "HostnameConflict"}, "c": {programmed: true}}},
		{"https and tls passthrough share a port by SNI", []gwv1.Listener{lis("a", 443, gwv1.HTTPSProtocolType, "x.com"), lis("b", 443, gwv1.TLSProtocolType, "y.com")}, nil,
			map[string]want{"a": {programmed: true}, "b": {programmed: true}}},
		{"https and tls same hostname", []gwv1.Listener{lis("a", 443, gwv1.HTTPSProtocolType, "x.com"), lis("b", 443, gwv1.TLSProtocolType, "x.com")}, nil,
			map[string]want{"a": {accepted: "HostnameConflict", conflicted: "HostnameConflict"}, "b": {accepted: "HostnameConflict", conflicted: "HostnameConflict"}}},
		{"tls terminate", []gwv1.Listener{terminate("t", "")}, nil, map[string]want{"t": {programmed: true}}},
		{"tls terminate without certificates", []gwv1.Listener{noCerts}, nil, map[string]want{"t": {refs: "InvalidCertificateRef"}}},
		{"tls terminate, cross-namespace secret without grant", []gwv1.Listener{crossNS}, []any{other}, map[string]want{"t": {refs: "RefNotPermitted"}}},
		{"tls terminate, cross-namespace secret with grant", []gwv1.Listener{crossNS}, []any{other, grant}, map[string]want{"t": {programmed: true}}},
		{"tls mode not known", []gwv1.Listener{badMode}, nil, map[string]want{"t": {accepted: "UnsupportedValue"}}},
		{"https, tls terminate and passthrough share a port by SNI", []gwv1.Listener{lis("a", 443, gwv1.HTTPSProtocolType, "x.com"), terminate("b", "y.com"), lis("c", 443, gwv1.TLSProtocolType, "z.com")}, nil,
			map[string]want{"a": {programmed: true}, "b": {programmed: true}, "c": {programmed: true}}},
		// Listeners that differ only in TLS config conflict (the spec).
		{"tls terminate and passthrough same hostname", []gwv1.Listener{terminate("a", "x.com"), lis("b", 443, gwv1.TLSProtocolType, "x.com")}, nil,
			map[string]want{"a": {accepted: "HostnameConflict", conflicted: "HostnameConflict"}, "b": {accepted: "HostnameConflict", conflicted: "HostnameConflict"}}},
		{"missing secret", []gwv1.Listener{withCert(lis("a", 443, gwv1.HTTPSProtocolType, ""), "", "nope")}, nil, map[string]want{"a": {refs: "InvalidCertificateRef"}}},
		{"malformed secret", []gwv1.Listener{withCert(lis("a", 443, gwv1.HTTPSProtocolType, ""), "", "bad")}, []any{badCert}, map[string]want{"a": {refs: "InvalidCertificateRef"}}},
		{"cross-namespace secret without grant", []gwv1.Listener{withCert(lis("a", 443, gwv1.HTTPSProtocolType, ""), "other", "cert")}, []any{other}, map[string]want{"a": {refs: "RefNotPermitted"}}},
		{"cross-namespace secret with grant", []gwv1.Listener{withCert(lis("a", 443, gwv1.HTTPSProtocolType, ""), "other", "cert")}, []any{other, grant}, map[string]want{"a": {programmed: true}}},
		{"invalid route kind", []gwv1.Listener{kinds}, nil, map[string]want{"k": {refs: "InvalidRouteKinds", programmed: true}}},
		{"selector missing", []gwv1.Listener{from(lis("a", 80, gwv1.HTTPProtocolType, ""), gwv1.NamespacesFromSelector, nil)}, nil, map[string]want{"a": {accepted: "UnsupportedValue"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := compile(base(t, append([]any{gw(tc.ls...)}, tc.extra...)...))
			for name, w := range tc.want {
				l := listenerStatus(t, r, name)
				if w.accepted == "" {
					wantCond(t, name, l.Conditions, "Accepted", true, "Accepted")
				} else {
					wantCond(t, name, l.Conditions, "Accepted", false, w.accepted)
				}
				if w.conflicted == "" {
					wantCond(t, name, l.Conditions, "Conflicted", false, "NoConflicts")
				} else {
					wantCond(t, name, l.Conditions, "Conflicted", true, w.conflicted)
				}
				if w.refs == "" {
					wantCond(t, name, l.Conditions, "ResolvedRefs", true, "ResolvedRefs")
				} else {
					wantCond(t, name, l.Conditions, "ResolvedRefs", false, w.refs)
				}
				if w.programmed {
					wantCond(t, name, l.Conditions, "Programmed", true, "Programmed")
				} else if w.conflicted != "" {
					wantCond(t, name, l.Conditions, "Programmed", false, w.conflicted)
				} else {
					wantCond(t, name, l.Conditions, "Programmed", false, "Invalid")
				}
				inSnap := false
				for _, p := range r.Snapshot.Ports {
					for _, sl := range p.Listeners {
						inSnap = inSnap || sl.Name == name
					}
				}
				if inSnap != w.programmed {
					t.Errorf("%s: in snapshot %v, programmed %v", name, inSnap, w.programmed)
				}
				if (w.accepted != "" || w.refs != "") && len(r.Snapshot.Rejected) == 0 {
					t.Errorf("%s: nothing in snapshot.rejected", name)
				}
			}
		})
	}
}

func TestGatewayConditions(t *testing.T) {
	r := compile(base(t, gw(lis("a", 80, gwv1.HTTPProtocolType, ""), lis("b", 53, gwv1.ProtocolType("SCTP"), ""))))
	wantCond(t, "gw", r.Gateway.Conditions, "Accepted", true, "ListenersNotValid")
	wantCond(t, "gw", r.Gateway.Conditions, "Programmed", true, "Programmed")
	if c := find(t, r.Gateway.Conditions, "Accepted"); c.ObservedGeneration != 3 || !strings.Contains(c.Message, "b (UnsupportedProtocol)") {
		t.Errorf("accepted %+v", c)
	}
	r = compile(base(t, gw(lis("b", 53, gwv1.ProtocolType("SCTP"), ""))))
	wantCond(t, "gw", r.Gateway.Conditions, "Accepted", false, "ListenersNotValid")
	wantCond(t, "gw", r.Gateway.Conditions, "Programmed", false, "Invalid")
}

func TestAttachment(t *testing.T) {
	sec := func(r *gwv1.HTTPRoute, name string, port int32) *gwv1.HTTPRoute {
		if name != "" {
			r.Spec.ParentRefs[0].SectionName = ptr(gwv1.SectionName(name))
		}
		if port != 0 {
			r.Spec.ParentRefs[0].Port = ptr(port)
		}
		return r
	}
	listeners := []gwv1.Listener{
		lis("plain", 80, gwv1.HTTPProtocolType, ""),
		from(lis("all", 81, gwv1.HTTPProtocolType, "all.com"), gwv1.NamespacesFromAll, nil),
		from(lis("sel", 82, gwv1.HTTPProtocolType, "sel.com"), gwv1.NamespacesFromSelector, map[string]string{"team": "x"}),
		from(lis("none", 83, gwv1.HTTPProtocolType, "none.com"), gwv1.NamespacesFromNone, nil),
		lis("wild", 84, gwv1.HTTPProtocolType, "*.wild.com"),
		lis("tls", 443, gwv1.TLSProtocolType, ""),
	}
	tests := []struct {
		name     string
		route    *gwv1.HTTPRoute
		reason   string              // Accepted reason
		attached map[string][]string // listener → effective hostnames
	}{
		{"all same-namespace listeners", hroute("gw", "r", nil), "Accepted", map[string][]string{"plain": {""}, "all": {"all.com"}, "wild": {"*.wild.com"}}},
		{"sectionName", sec(hroute("gw", "r", nil), "wild", 0), "Accepted", map[string][]string{"wild": {"*.wild.com"}}},
		{"port", sec(hroute("gw", "r", nil), "", 81), "Accepted", map[string][]string{"all": {"all.com"}}},
		{"sectionName and port disagree", sec(hroute("gw", "r", nil), "wild", 81), "NoMatchingParent", nil},
		{"unknown sectionName", sec(hroute("gw", "r", nil), "nope", 0), "NoMatchingParent", nil},
		{"other namespace: All", hroute("other", "r", nil), "Accepted", map[string][]string{"all": {"all.com"}, "sel": {"sel.com"}}},
		{"other namespace to Same", sec(hroute("other", "r", nil), "plain", 0), "NotAllowedByListeners", nil},
		{"unlabelled namespace to Selector", sec(hroute("third", "r", nil), "sel", 0), "NotAllowedByListeners", nil},
		{"None", sec(hroute("gw", "r", nil), "none", 0), "NotAllowedByListeners", nil},
		{"kind not allowed (TLS listener)", sec(hroute("gw", "r", nil), "tls", 0), "NotAllowedByListeners", nil},
		{"hostnames intersect", hroute("gw", "r", []string{"a.wild.com", "b.c.wild.com", "x.org"}), "Accepted", map[string][]string{"plain": {"a.wild.com", "b.c.wild.com", "x.org"}, "wild": {"a.wild.com", "b.c.wild.com"}}},
		{"no hostname intersects", sec(hroute("gw", "r", []string{"x.org"}), "wild", 0), "NoMatchingListenerHostname", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := base(t, gw(listeners...), tc.route, svc(tc.route.Namespace, "a", 80, ""))
			r := compile(in)
			p := parent(t, r, "HTTPRoute", tc.route.Namespace, "r")
			wantCond(t, "route", p.Conditions, "Accepted", tc.reason == "Accepted", tc.reason)
			if find(t, p.Conditions, "Accepted").ObservedGeneration != 2 {
				t.Error("route conditions carry the route's generation")
			}
			for _, l := range r.Gateway.Listeners {
				hs := tc.attached[string(l.Name)]
				if want := int32(min(len(hs), 1)); l.AttachedRoutes != want {
					t.Errorf("listener %s: attachedRoutes %d, want %d", l.Name, l.AttachedRoutes, want)
				}
				if len(hs) == 0 {
					continue
				}
				var got []string
				for _, h := range snapListener(t, r.Snapshot, string(l.Name)).Hosts {
					got = append(got, h.Hostname)
				}
				slices.Sort(got)
				if !slices.Equal(got, hs) {
					t.Errorf("listener %s hosts %q, want %q", l.Name, got, hs)
				}
			}
		})
	}
}

func TestParentRefsOfOtherGatewaysIgnored(t *testing.T) {
	r1 := hroute("gw", "r", nil)
	r1.Spec.ParentRefs = append(r1.Spec.ParentRefs, gwv1.ParentReference{Name: "elsewhere"})
	r2 := hroute("gw", "r2", nil)
	r2.Spec.ParentRefs = []gwv1.ParentReference{{Name: "elsewhere"}}
	r := compile(base(t, gw(lis("http", 80, gwv1.HTTPProtocolType, "")), r1, r2))
	if len(r.Routes) != 1 || len(r.Routes[0].Parents) != 1 || r.Routes[0].Parents[0].ParentRef.Name != "gw" {
		t.Errorf("route statuses %+v", r.Routes)
	}
}
