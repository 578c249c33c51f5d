package compile_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	"github.com/meridian-mesh/meridian/controlplane/compile"
	"github.com/meridian-mesh/meridian/controlplane/store"
)

// conformanceDir is the Gateway API conformance module's directory, or the
// test is skipped when it is not in the module cache.
func conformanceDir(t *testing.T) string {
	t.Helper()
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		home, _ := os.UserHomeDir()
		gopath = filepath.Join(home, "go")
	}
	dir := filepath.Join(gopath, "pkg", "mod", "sigs.k8s.io", "gateway-api", "conformance@v1.6.3")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("the conformance module is not in the module cache: %v", err)
	}
	return dir
}

// loadManifests upserts the Services, HTTPRoutes and GRPCRoutes of YAML
// files into st.
func loadManifests(t *testing.T, st *store.Store, files ...string) []runtime.Object {
	t.Helper()
	var out []runtime.Object
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range strings.Split(string(b), "\n---") {
			var u unstructured.Unstructured
			if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil || u.Object == nil {
				continue
			}
			var obj runtime.Object
			switch u.GetKind() {
			case "Service":
				obj = &corev1.Service{}
			case "HTTPRoute":
				obj = &gwv1.HTTPRoute{}
			case "GRPCRoute":
				obj = &gwv1.GRPCRoute{}
			default:
				continue
			}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, obj); err != nil {
				t.Fatal(err)
			}
			if err := st.Upsert(obj); err != nil {
				t.Fatal(err)
			}
			out = append(out, obj)
		}
	}
	return out
}

// The GAMMA conformance manifests (tests/mesh, v1.6.3) read by the mesh
// compiler: the weight tests compile to the weights they check; the tests
// whose rules match paths, headers or query parameters are reported as not
// carried (the profile has one split per authority: README, Bugs). This
// checks what the control plane tells proxies, not traffic: the mesh suite
// itself needs a cluster.
func TestMeshConformanceManifests(t *testing.T) {
	dir := conformanceDir(t)
	for _, tc := range []struct {
		test, file, authority string
		want                  []string
		accepted              string // the route's Accepted reason
	}{
		{"MeshHTTPRouteWeight", "httproute-weight.yaml", "echo.gateway-conformance-mesh:80",
			[]string{"echo-v1.gateway-conformance-mesh.svc.cluster.local:8080=70", "echo-v2.gateway-conformance-mesh.svc.cluster.local:8080=30"}, "Accepted"},
		{"MeshGRPCRouteWeight", "grpcroute-weight.yaml", "echo.gateway-conformance-mesh:7070",
			[]string{"echo-v1.gateway-conformance-mesh.svc.cluster.local:7070=70", "echo-v2.gateway-conformance-mesh.svc.cluster.local:7070=30"}, "Accepted"},
		{"MeshHTTPRouteSimpleSameNamespace", "httproute-simple-same-namespace.yaml", "echo.gateway-conformance-mesh:80",
			[]string{"echo-v1.gateway-conformance-mesh.svc.cluster.local:8080=1"}, "Accepted"},
		{"MeshTrafficSplit (path matches: not carried)", "mesh-split.yaml", "echo.gateway-conformance-mesh:80", []string{}, "UnsupportedValue"},
		{"MeshHTTPRouteMatching (not carried)", "httproute-matching.yaml", "echo.gateway-conformance-mesh:80", []string{}, "UnsupportedValue"},
	} {
		t.Run(tc.test, func(t *testing.T) {
			st := store.New()
			loadManifests(t, st, filepath.Join(dir, "mesh", "manifests.yaml"))
			routes := loadManifests(t, st, filepath.Join(dir, "tests", "mesh", tc.file))
			p := compile.Profile(st, tc.authority, opts)
			if got := dsts(p); !slices.Equal(got, tc.want) {
				t.Errorf("DstOverrides = %v, want %v (warnings %v)", got, tc.want, p.Warnings)
			}
			for _, r := range routes {
				if _, ok := r.(*corev1.Service); ok {
					continue
				}
				for _, ps := range compile.MeshRouteParents(st, r, opts) {
					for _, c := range ps.Conditions {
						if c.Type == "Accepted" && c.Reason != tc.accepted {
							t.Errorf("Accepted = %s/%s (%s), want reason %s", c.Status, c.Reason, c.Message, tc.accepted)
						}
					}
				}
			}
		})
	}
}
