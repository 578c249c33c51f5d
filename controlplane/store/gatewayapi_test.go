package store

import (
	"fmt"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func gwTopics(ks ...Key) []string {
	var out []string
	for _, k := range ks {
		out = append(out, GatewayTopic(k).String())
	}
	slices.Sort(out)
	return out
}

func join(a ...[]string) []string {
	var out []string
	for _, x := range a {
		out = append(out, x...)
	}
	slices.Sort(out)
	return out
}

func testGateway(ns, name string) *gwv1.Gateway {
	return &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: gwv1.GatewaySpec{GatewayClassName: "meridian"}}
}

func testRoute(ns, name string, svc string, parents ...string) *gwv1.HTTPRoute {
	r := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	for _, p := range parents {
		r.Spec.ParentRefs = append(r.Spec.ParentRefs, gwv1.ParentReference{Name: gwv1.ObjectName(p)})
	}
	if svc != "" {
		port := gwv1.PortNumber(80)
		r.Spec.Rules = []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: gwv1.ObjectName(svc), Port: &port}}}}}}
	}
	return r
}

func testListenerSet(ns, name, gwNS, gw string) *gwv1.ListenerSet {
	n := gwv1.Namespace(gwNS)
	return &gwv1.ListenerSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: gwv1.ListenerSetSpec{ParentRef: gwv1.ParentGatewayReference{Name: gwv1.ObjectName(gw), Namespace: &n}}}
}

// The gateway's kinds: add, update, delete and exactly the Gateway topics
// each write wakes.
func TestGatewayKinds(t *testing.T) {
	g1, g2 := Key{"ns", "g1"}, Key{"ns", "g2"}
	gws := []runtime.Object{testGateway("ns", "g1"), testGateway("ns", "g2")}
	tlsSecret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "cert"}, Type: corev1.SecretTypeTLS}
	opaque := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "cert"}, Type: corev1.SecretTypeOpaque}
	ca := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "ca"}, Data: map[string]string{"ca.crt": "x"}}
	other := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "other"}, Data: map[string]string{"k": "v"}}
	grpc := &gwv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "g"}, Spec: gwv1.GRPCRouteSpec{CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "g2"}}}}}
	tcpr := &gwv1.TCPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "t"}, Spec: gwv1.TCPRouteSpec{CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "g2"}}}}}
	udpr := &gwv1.UDPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "u"}, Spec: gwv1.UDPRouteSpec{CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "g1"}}}}}
	tlsr := &gwv1.TLSRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "t"}, Spec: gwv1.TLSRouteSpec{CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "g1"}}}}}
	crossNS := testRoute("app", "r", "", "g1")
	ns := gwv1.Namespace("ns")
	crossNS.Spec.ParentRefs[0].Namespace = &ns
	meshParent := testRoute("ns", "mesh", "")
	lsKind := gwv1.Kind("ListenerSet")
	lsRoute := testRoute("app", "via-ls", "", "ls")
	lsRoute.Spec.ParentRefs[0].Kind = &lsKind
	lsRoute2 := testRoute("app", "via-ls", "", "ls")
	lsRoute2.Spec.ParentRefs[0].Kind = &lsKind
	lsRoute2.Spec.ParentRefs[0].Port = new(gwv1.PortNumber(80))
	group, kind := gwv1.Group(""), gwv1.Kind("Service")
	meshParent.Spec.ParentRefs = []gwv1.ParentReference{{Group: &group, Kind: &kind, Name: "a"}}
	type step struct {
		name  string
		do    op
		want  []string
		check func(s *Store) error
	}
	for _, tc := range []struct {
		kind  string
		setup []runtime.Object
		steps []step
	}{
		{kind: "Gateway", steps: []step{
			{"add", up(testGateway("ns", "g1")), join(gwTopics(g1), []string{GatewaysTopic.String()}), func(s *Store) error {
				if _, ok := s.Gateway(g1); !ok || len(s.Gateways()) != 1 {
					return fmt.Errorf("gateway missing")
				}
				return nil
			}},
			{"same again", up(testGateway("ns", "g1")), nil, nil},
			{"delete", del(testGateway("ns", "g1")), join(gwTopics(g1), []string{GatewaysTopic.String()}), nil},
		}},
		{kind: "GatewayClass", setup: gws, steps: []step{
			{"add", up(&gwv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "meridian"}}), gwTopics(g1, g2), func(s *Store) error {
				if len(s.GatewayClasses()) != 1 {
					return fmt.Errorf("class missing")
				}
				return nil
			}},
		}},
		{kind: "HTTPRoute", setup: gws, steps: []step{
			{"add", up(testRoute("ns", "r", "a", "g1")), gwTopics(g1), func(s *Store) error {
				if len(s.HTTPRoutes()) != 1 {
					return fmt.Errorf("route missing")
				}
				return nil
			}},
			{"move to g2", up(testRoute("ns", "r", "b", "g2")), gwTopics(g1, g2), nil},
			{"its old backend changes: no one", up(service("ns", "a")), svcTopics(Key{"ns", "a"}), nil},
			{"its backend changes: its gateway", up(service("ns", "b")), join(svcTopics(Key{"ns", "b"}), gwTopics(g2)), nil},
			{"cross-namespace parent", up(crossNS), gwTopics(g1), nil},
			{"a Service parent wakes no gateway, but that Service (GAMMA)", up(meshParent), mesh(svcTopics(Key{"ns", "a"})), nil},
			{"delete", del(testRoute("ns", "r", "")), gwTopics(g2), func(s *Store) error {
				if len(objects[*gwv1.HTTPRoute](s, &httpRouteKind).byService) != 0 {
					return fmt.Errorf("service index left: %v", objects[*gwv1.HTTPRoute](s, &httpRouteKind).byService)
				}
				return nil
			}},
		}},
		{kind: "GRPCRoute", setup: gws, steps: []step{
			{"add", up(grpc), gwTopics(g2), nil},
			{"delete", del(grpc), gwTopics(g2), nil},
		}},
		{kind: "TLSRoute", setup: gws, steps: []step{
			{"add", up(tlsr), gwTopics(g1), nil},
		}},
		{kind: "TCPRoute", setup: gws, steps: []step{
			{"add", up(tcpr), gwTopics(g2), func(s *Store) error {
				if len(s.TCPRoutes()) != 1 {
					return fmt.Errorf("tcproute missing")
				}
				return nil
			}},
			{"delete", del(tcpr), gwTopics(g2), nil},
		}},
		{kind: "UDPRoute", setup: gws, steps: []step{
			{"add", up(udpr), gwTopics(g1), func(s *Store) error {
				if len(s.UDPRoutes()) != 1 {
					return fmt.Errorf("udproute missing")
				}
				return nil
			}},
			{"delete", del(udpr), gwTopics(g1), nil},
		}},
		{kind: "ListenerSet", setup: gws, steps: []step{
			{"add", up(testListenerSet("app", "ls", "ns", "g1")), gwTopics(g1), func(s *Store) error {
				if _, ok := s.ListenerSet(Key{"app", "ls"}); !ok || len(s.ListenerSets()) != 1 {
					return fmt.Errorf("listenerset missing")
				}
				return nil
			}},
			{"move to g2", up(testListenerSet("app", "ls", "ns", "g2")), gwTopics(g1, g2), nil},
			{"a route naming it wakes its gateway", up(lsRoute), gwTopics(g2), nil},
			{"delete", del(testListenerSet("app", "ls", "ns", "g2")), gwTopics(g2), nil},
			{"a route naming a missing one wakes no one", up(lsRoute2), nil, nil},
		}},
		{kind: "ReferenceGrant", setup: gws, steps: []step{
			{"add", up(&gwv1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "g"}}), gwTopics(g1, g2), nil},
		}},
		{kind: "BackendTLSPolicy", setup: gws, steps: []step{
			{"add", up(&gwv1.BackendTLSPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p"}}), gwTopics(g1, g2), nil},
		}},
		{kind: "Secret", setup: gws, steps: []step{
			{"add tls", up(tlsSecret), gwTopics(g1, g2), func(s *Store) error {
				if _, ok := s.Secret(Key{"ns", "cert"}); !ok {
					return fmt.Errorf("tls secret missing")
				}
				return nil
			}},
			{"becomes opaque: removed", up(opaque), gwTopics(g1, g2), func(s *Store) error {
				if _, ok := s.Secret(Key{"ns", "cert"}); ok {
					return fmt.Errorf("opaque secret held")
				}
				return nil
			}},
			{"opaque again: nothing held, no one woken", up(opaque), nil, nil},
		}},
		{kind: "ConfigMap", setup: gws, steps: []step{
			{"add ca", up(ca), gwTopics(g1, g2), nil},
			{"not a CA bundle", up(other), nil, func(s *Store) error {
				if _, ok := s.ConfigMap(Key{"ns", "other"}); ok {
					return fmt.Errorf("non-CA configmap held")
				}
				return nil
			}},
		}},
		{kind: "Namespace labels", setup: gws, steps: []step{
			{"add", up(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "app"}}), gwTopics(g1, g2), nil},
		}},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			s := New()
			mustUpsert(t, s, tc.setup...)
			for _, st := range tc.steps {
				a := affected{}
				s.mu.Lock()
				st.do(t, s, a)
				s.mu.Unlock()
				if got := topics(a); !slices.Equal(got, st.want) {
					t.Errorf("%s: woke %v, want %v", st.name, got, st.want)
				}
				if st.check != nil {
					if err := st.check(s); err != nil {
						t.Errorf("%s: %v", st.name, err)
					}
				}
			}
		})
	}
}

// A Watch on a Gateway's topic wakes on a route change through Upsert.
func TestGatewayWatch(t *testing.T) {
	s := New()
	mustUpsert(t, s, testGateway("ns", "g1"))
	ch, cancel := s.Watch(GatewayTopic(Key{"ns", "g1"}))
	defer cancel()
	other, cancel2 := s.Watch(GatewayTopic(Key{"ns", "g2"}))
	defer cancel2()
	mustUpsert(t, s, testRoute("ns", "r", "a", "g1"))
	select {
	case <-ch:
	default:
		t.Fatal("gateway g1 not woken")
	}
	select {
	case <-other:
		t.Fatal("gateway g2 woken")
	default:
	}
}
