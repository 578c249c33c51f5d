package gateway

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// benchInput: one Gateway with an HTTP listener and n HTTPRoutes, each
// with its own hostname, two path rules and a Service.
func benchInput(b *testing.B, n int) Input {
	objs := []any{httpGW()}
	for i := range n {
		name := fmt.Sprintf("r%d", i)
		r := hroute("gw", name, []string{name + ".example.com"},
			gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{prefix("/api")}, BackendRefs: []gwv1.HTTPBackendRef{bref(name, 80)}},
			gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{prefix("/")}, BackendRefs: []gwv1.HTTPBackendRef{bref(name, 80)}})
		r.CreationTimestamp = metav1.Unix(int64(i), 0)
		objs = append(objs, r, svc("gw", name, 80, ""))
	}
	in := base(b, objs...)
	in.Services = append([]*corev1.Service(nil), in.Services...)
	return in
}

// BenchmarkCompile: the time to compile a Gateway with n routes (the issue
// asks 1,000 routes to serve within 2 s of the last apply).
func BenchmarkCompile(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			in := benchInput(b, n)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if r := compile(in); len(r.Routes) != n {
					b.Fatalf("%d route statuses", len(r.Routes))
				}
			}
		})
	}
}
