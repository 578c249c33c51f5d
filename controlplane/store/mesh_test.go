package store

import (
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
)

func meshRoute(ns, name string, parents ...string) *gwv1.HTTPRoute {
	r := testRoute(ns, name, "web-v2")
	core, svc := gwv1.Group(""), gwv1.Kind("Service")
	for _, p := range parents {
		r.Spec.ParentRefs = append(r.Spec.ParentRefs, gwv1.ParentReference{Group: &core, Kind: &svc, Name: gwv1.ObjectName(p)})
	}
	return r
}

func testRollout(ns, name, stable, canary string) *v1alpha1.Rollout {
	return &v1alpha1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: v1alpha1.RolloutSpec{
		Strategy: v1alpha1.RolloutStrategy{Canary: &v1alpha1.CanaryStrategy{StableService: stable, CanaryService: canary}}}}
}

func routeNames(rs []*gwv1.HTTPRoute) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Name)
	}
	slices.Sort(out)
	return out
}

// GAMMA routes wake the Services they name as parents (their profiles are
// compiled from them), old and new, besides any Gateway parent; the store
// indexes them by those Services.
func TestMeshRoutes(t *testing.T) {
	web, api := Key{"ns", "web"}, Key{"ns", "api"}
	s := New()
	step := func(name string, o op, want []string) {
		t.Helper()
		a := affected{}
		o(t, s, a)
		if got := topics(a); !slices.Equal(got, want) {
			t.Errorf("%s: woke %v, want %v", name, got, want)
		}
	}
	step("add", up(meshRoute("ns", "r", "web")), mesh(svcTopics(web)))
	if got := routeNames(s.MeshHTTPRoutes(web)); !slices.Equal(got, []string{"r"}) {
		t.Errorf("MeshHTTPRoutes(web) = %v", got)
	}
	step("same again", up(meshRoute("ns", "r", "web")), nil)
	step("move to api", up(meshRoute("ns", "r", "api")), mesh(svcTopics(web, api)))
	r := meshRoute("ns", "r", "api")
	r.Spec.ParentRefs = append(r.Spec.ParentRefs, gwv1.ParentReference{Name: "gw"})
	step("with a Gateway parent", up(r), mesh(join(svcTopics(api), gwTopics(Key{"ns", "gw"}))))
	if got := s.MeshHTTPRoutes(web); len(got) != 0 {
		t.Errorf("MeshHTTPRoutes(web) = %v after the move", routeNames(got))
	}
	if got := routeNames(s.MeshHTTPRoutes(api)); !slices.Equal(got, []string{"r"}) {
		t.Errorf("MeshHTTPRoutes(api) = %v", got)
	}
	// A grant from ns wakes the Service parents of ns's mesh routes.
	grant := &gwv1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "g"}, Spec: gwv1.ReferenceGrantSpec{
		From: []gwv1.ReferenceGrantFrom{{Group: gwv1.GroupName, Kind: "HTTPRoute", Namespace: "ns"}},
		To:   []gwv1.ReferenceGrantTo{{Group: "", Kind: "Service"}}}}
	step("grant", up(grant), mesh(svcTopics(api)))
	step("delete", del(r), mesh(join(svcTopics(api), gwTopics(Key{"ns", "gw"}))))
	if len(s.routeTable().byParent) != 0 {
		t.Errorf("byParent left: %v", s.routeTable().byParent)
	}
	// A GRPCRoute the same.
	core, svc := gwv1.Group(""), gwv1.Kind("Service")
	gr := &gwv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "g"}, Spec: gwv1.GRPCRouteSpec{CommonRouteSpec: gwv1.CommonRouteSpec{
		ParentRefs: []gwv1.ParentReference{{Group: &core, Kind: &svc, Name: "web"}}}}}
	step("grpc add", up(gr), mesh(svcTopics(web)))
	if got := s.MeshGRPCRoutes(web); len(got) != 1 {
		t.Errorf("MeshGRPCRoutes(web) = %d routes", len(got))
	}
	// A Service parent with group unset is a Gateway (group defaults to
	// gateway.networking.k8s.io): no mesh parent.
	bad := testRoute("ns", "x", "web")
	bad.Spec.ParentRefs = []gwv1.ParentReference{{Kind: &svc, Name: "web"}}
	if got := ServiceParents("ns", bad.Spec.ParentRefs); len(got) != 0 {
		t.Errorf("ServiceParents(kind Service, no group) = %v", got)
	}
}

func (s *Store) routeTable() *objTable[*gwv1.HTTPRoute] {
	return objects[*gwv1.HTTPRoute](s, &httpRouteKind)
}

// A Rollout wakes its own topic and its stable and canary Services, old and
// new, and is indexed by its stable Service.
func TestRollouts(t *testing.T) {
	ro := Key{"ns", "web"}
	stable, canary, other := Key{"ns", "web-stable"}, Key{"ns", "web-canary"}, Key{"ns", "other"}
	s := New()
	step := func(name string, o op, want []string) {
		t.Helper()
		a := affected{}
		o(t, s, a)
		if got := topics(a); !slices.Equal(got, want) {
			t.Errorf("%s: woke %v, want %v", name, got, want)
		}
	}
	rt := []string{RolloutTopic(ro).String()}
	r1 := testRollout("ns", "web", "web-stable", "web-canary")
	r1.ResourceVersion = "1"
	step("add", up(r1), join(rt, svcTopics(stable, canary)))
	if got := s.Rollouts(stable); len(got) != 1 || got[0] != r1 {
		t.Errorf("Rollouts(stable) = %v", got)
	}
	step("resync", up(r1.DeepCopy()), nil)
	r2 := testRollout("ns", "web", "other", "web-canary")
	r2.ResourceVersion = "2"
	step("stable changes", up(r2), join(rt, svcTopics(stable, canary, other)))
	if len(s.Rollouts(stable)) != 0 || len(s.Rollouts(other)) != 1 {
		t.Errorf("index not moved")
	}
	if got, ok := s.Rollout(ro); !ok || got != r2 {
		t.Errorf("Rollout(%s) = %v, %v", ro, got, ok)
	}
	step("delete", del(r2), join(rt, svcTopics(canary, other)))
	if len(s.Rollouts(other)) != 0 {
		t.Errorf("index left")
	}
	bg := &v1alpha1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "bg"}}
	step("blue-green", up(bg), []string{RolloutTopic(Key{"ns", "bg"}).String()})
}

// mesh adds MeshRoutesTopic to the topics woken.
func mesh(ts []string) []string { return join(ts, []string{MeshRoutesTopic.String()}) }
