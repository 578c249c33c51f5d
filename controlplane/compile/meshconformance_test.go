package compile_test

import (
	"net/http"
	"net/http/httptest"
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
	"github.com/meridian-mesh/meridian/proxy/profile"
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

// meshRequest is one request of a conformance test, as a mesh client
// sends it to authority.
type meshRequest struct {
	authority, path string
	headers         map[string]string
}

// meshAnswer is where the proxy's routing sends a request: the backend
// Service's name (or the status it is answered with), the request's
// headers as the backend sees them, and the response headers.
type meshAnswer struct {
	backend string
	status  int
	path    string // as the backend sees it; "" when not checked
	req     http.Header
	resp    http.Header
}

// route routes rq as a sidecar does: the profile compiled from the store,
// through the destination API's form, into the proxy's profile
// (proxy/profile); its first matching route, its backend (each rule of
// these tests has one) and its filters.
func route(t *testing.T, st *store.Store, rq meshRequest) meshAnswer {
	t.Helper()
	p := compile.Profile(st, rq.authority, opts)
	prof, err := profile.FromProto(p.ToProto())
	if err != nil {
		t.Fatalf("%s: the proxy refuses the profile: %v", rq.authority, err)
	}
	req := httptest.NewRequest("GET", "http://"+rq.authority+rq.path, nil)
	for k, v := range rq.headers {
		req.Header.Set(k, v)
	}
	var a meshAnswer
	h := http.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.req = r.Header.Clone()
		a.path = r.URL.EscapedPath()
		w.WriteHeader(200)
	}))
	backend := rq.authority
	rt := prof.Match(req)
	if rt.OwnsSplit() {
		b, ok := rt.Pick()
		switch {
		case rt.Status != 0:
			return meshAnswer{status: rt.Status}
		case !ok || b != nil && b.Authority == "":
			return meshAnswer{status: 500}
		case b != nil:
			backend = b.Authority
			if b.Filters != nil {
				h = b.Filters(h)
			}
		}
		if rt.Filters != nil {
			h = rt.Filters(h)
		}
	} else if s := prof.Pick(); s != "" {
		backend = s
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	a.backend, _, _ = strings.Cut(backend, ".")
	a.backend, _, _ = strings.Cut(a.backend, ":")
	a.status, a.resp = rec.Code, rec.Header()
	if a.status != 200 {
		a.backend = "" // answered by the proxy
	}
	return a
}

// The GAMMA conformance tests (tests/mesh, v1.6.3): their manifests in the
// store, and their requests routed as a sidecar routes them (route, above),
// meet the backends, statuses and headers the tests expect; the routes'
// statuses are what the tests wait for (Accepted). The mesh suite itself
// needs a cluster; test/integration sends the same kind of requests
// through real proxies on loopback.
func TestMeshConformanceManifests(t *testing.T) {
	dir := conformanceDir(t)
	const echoV1, echoV2 = "echo-v1", "echo-v2"
	type c struct {
		rq   meshRequest
		want meshAnswer // backend, or status; req/resp: headers that must be there ("" must not)
	}
	get := func(path string, hdr ...string) meshRequest {
		rq := meshRequest{authority: "echo.gateway-conformance-mesh:80", path: path, headers: map[string]string{}}
		for i := 0; i+1 < len(hdr); i += 2 {
			rq.headers[hdr[i]] = hdr[i+1]
		}
		return rq
	}
	to := func(b string) meshAnswer { return meshAnswer{backend: b, status: 200} }
	withReq := func(b string, kv ...string) meshAnswer {
		a := to(b)
		a.req = http.Header{}
		for i := 0; i+1 < len(kv); i += 2 {
			a.req[kv[i]] = []string{kv[i+1]}
		}
		return a
	}
	withResp := func(b string, kv ...string) meshAnswer {
		a := to(b)
		a.resp = http.Header{}
		for i := 0; i+1 < len(kv); i += 2 {
			a.resp[kv[i]] = []string{kv[i+1]}
		}
		return a
	}
	redirect := func(status int, location string) meshAnswer {
		return meshAnswer{status: status, resp: http.Header{"Location": {location}}}
	}
	rewritten := func(path string) meshAnswer { a := to(echoV1); a.path = path; return a }
	headerCases := []c{
		{get("/set", "Some-Other-Header", "val"), withReq(echoV1, "Some-Other-Header", "val", "X-Header-Set", "set-overwrites-values")},
		{get("/set", "Some-Other-Header", "val", "X-Header-Set", "some-other-value"), withReq(echoV1, "X-Header-Set", "set-overwrites-values")},
		{get("/add", "Some-Other-Header", "val"), withReq(echoV1, "X-Header-Add", "add-appends-values")},
		{get("/add", "X-Header-Add", "some-other-value"), withReq(echoV1, "X-Header-Add", "some-other-value,add-appends-values")},
		{get("/remove", "X-Header-Remove", "val"), withReq(echoV1, "X-Header-Remove", "")},
		{get("/multiple", "X-Header-Set-2", "set-val-2", "X-Header-Add-2", "add-val-2", "X-Header-Remove-2", "remove-val-2", "Another-Header", "another-header-val"),
			withReq(echoV1, "X-Header-Set-1", "header-set-1", "X-Header-Set-2", "header-set-2", "X-Header-Add-1", "header-add-1", "X-Header-Add-2", "add-val-2,header-add-2",
				"X-Header-Add-3", "header-add-3", "Another-Header", "another-header-val", "X-Header-Remove-1", "", "X-Header-Remove-2", "")},
		{get("/case-insensitivity", "x-header-set", "original-val-set", "x-header-add", "original-val-add", "x-header-remove", "original-val-remove"),
			withReq(echoV1, "X-Header-Set", "header-set", "X-Header-Add", "original-val-add,header-add", "X-Header-Remove", "")},
	}
	for _, tc := range []struct {
		test, file string
		accepted   string // the route's Accepted reason
		cases      []c
		weights    []string // the default split (DstOverrides) of weightsOf, when checked
		weightsOf  string
	}{
		{"MeshHTTPRouteWeight", "httproute-weight.yaml", "Accepted", nil,
			[]string{"echo-v1.gateway-conformance-mesh.svc.cluster.local:8080=70", "echo-v2.gateway-conformance-mesh.svc.cluster.local:8080=30"}, "echo.gateway-conformance-mesh:80"},
		{"MeshGRPCRouteWeight", "grpcroute-weight.yaml", "Accepted", nil,
			[]string{"echo-v1.gateway-conformance-mesh.svc.cluster.local:7070=70", "echo-v2.gateway-conformance-mesh.svc.cluster.local:7070=30"}, "echo.gateway-conformance-mesh:7070"},
		{"MeshHTTPRouteSimpleSameNamespace", "httproute-simple-same-namespace.yaml", "Accepted", []c{{get("/"), to(echoV1)}}, nil, ""},
		{"MeshTrafficSplit", "mesh-split.yaml", "Accepted", []c{{get("/v1"), to(echoV1)}, {get("/v2"), to(echoV2)}}, nil, ""},
		{"MeshHTTPRouteMatching", "httproute-matching.yaml", "Accepted", []c{
			{get("/"), to(echoV1)}, {get("/example"), to(echoV1)}, {get("/", "Version", "one"), to(echoV1)},
			{get("/v2"), to(echoV2)}, {get("/v2/example"), to(echoV2)}, {get("/", "Version", "two"), to(echoV2)}, {get("/v2/"), to(echoV2)},
			{get("/v2example"), to(echoV1)}, {get("/foo/v2/example"), to(echoV1)}}, nil, ""},
		{"MeshHTTPRouteQueryParamMatching", "httproute-query-param-matching.yaml", "Accepted", []c{
			{get("/?animal=whale"), to(echoV1)}, {get("/?animal=dolphin"), to(echoV2)},
			{get("/?animal=whale&otherparam=irrelevant"), to(echoV1)}, {get("/?animal=dolphin&color=yellow"), to(echoV2)},
			{get("/?color=blue"), meshAnswer{status: 404}}, {get("/?animal=dog"), meshAnswer{status: 404}},
			{get("/?animal=whaledolphin"), meshAnswer{status: 404}}, {get("/"), meshAnswer{status: 404}},
			{get("/path1?animal=whale"), to(echoV1)}, {get("/?animal=whale", "version", "one"), to(echoV2)},
			{get("/path3?animal=shark"), to(echoV1)}, {get("/path4?animal=kraken", "version", "three"), to(echoV1)},
			{get("/?animal=shark"), meshAnswer{status: 404}}, {get("/path4?animal=kraken"), meshAnswer{status: 404}},
			{get("/path5?animal=hydra"), to(echoV1)}}, nil, ""},
		{"MeshHTTPRouteNamedRule", "httproute-named-rule.yaml", "Accepted", []c{{get("/named"), to(echoV1)}, {get("/unnamed"), to(echoV2)}}, nil, ""},
		{"MeshHTTPRouteRequestHeaderModifier", "httproute-request-header-modifier.yaml", "Accepted", headerCases, nil, ""},
		{"MeshHTTPRouteBackendRequestHeaderModifier", "httproute-request-header-modifier-backend.yaml", "Accepted", headerCases, nil, ""},
		{"MeshPorts", "mesh-ports.yaml", "Accepted", []c{
			{meshRequest{authority: "echo-v1.gateway-conformance-mesh:80", path: "/"}, withResp(echoV1, "X-Header-Set", "v1")},
			{meshRequest{authority: "echo-v1.gateway-conformance-mesh:8080", path: "/"}, withResp(echoV1, "X-Header-Set", "")},
			{meshRequest{authority: "echo-v2.gateway-conformance-mesh:80", path: "/"}, withResp(echoV2, "X-Header-Set", "v2")},
			{meshRequest{authority: "echo-v2.gateway-conformance-mesh:8080", path: "/"}, withResp(echoV2, "X-Header-Set", "v2")}}, nil, ""},
		// Redirects answer in the client's proxy (the Location from the
		// request's authority, port 80 left out); rewrites change the
		// request the backend gets.
		{"MeshHTTPRouteRedirectHostAndStatus", "httproute-redirect-host-and-status.yaml", "Accepted", []c{
			{get("/hostname-redirect"), redirect(302, "http://example.org/hostname-redirect")},
			{get("/host-and-status"), redirect(301, "http://example.org/host-and-status")}}, nil, ""},
		{"MeshHTTPRouteRedirectPath", "httproute-redirect-path.yaml", "Accepted", []c{
			{get("/original-prefix/lemon"), redirect(302, "http://echo.gateway-conformance-mesh/replacement-prefix/lemon")},
			{get("/full/path/original"), redirect(302, "http://echo.gateway-conformance-mesh/full-path-replacement")},
			{get("/path-and-host"), redirect(302, "http://example.org/replacement-prefix")},
			{get("/path-and-status"), redirect(301, "http://echo.gateway-conformance-mesh/replacement-prefix")},
			{get("/full-path-and-host"), redirect(302, "http://example.org/replacement-full")},
			{get("/full-path-and-status"), redirect(301, "http://echo.gateway-conformance-mesh/replacement-full")}}, nil, ""},
		{"MeshHTTPRouteRedirectPort", "httproute-redirect-port.yaml", "Accepted", []c{
			{get("/port"), redirect(302, "http://echo.gateway-conformance-mesh:8083/port")},
			{get("/port-and-host"), redirect(302, "http://example.org:8083/port-and-host")},
			{get("/port-and-status"), redirect(301, "http://echo.gateway-conformance-mesh:8083/port-and-status")}}, nil, ""},
		{"MeshHTTPRouteSchemeRedirect", "httproute-redirect-scheme.yaml", "Accepted", []c{
			{get("/scheme"), redirect(302, "https://echo.gateway-conformance-mesh/scheme")},
			{get("/scheme-and-host"), redirect(302, "https://example.org/scheme-and-host")},
			{get("/scheme-and-status"), redirect(301, "https://echo.gateway-conformance-mesh/scheme-and-status")}}, nil, ""},
		{"MeshHTTPRoute303Redirect", "httproute-303-redirect.yaml", "Accepted", []c{
			{get("/redirect"), redirect(303, "http://echo.gateway-conformance-mesh/redirect")}}, nil, ""},
		{"MeshHTTPRouteRewritePath", "httproute-rewrite-path.yaml", "Accepted", []c{
			{get("/prefix/one/two"), rewritten("/one/two")},
			{get("/strip-prefix/three"), rewritten("/three")},
			{get("/strip-prefix"), rewritten("/")},
			{get("/full/one/two"), rewritten("/one")}}, nil, ""},
		// Consumer routes (another namespace than their Service) are refused.
		{"MeshConsumerRoute (not supported)", "mesh-consumer-route.yaml", "UnsupportedValue", nil, nil, ""},
	} {
		t.Run(tc.test, func(t *testing.T) {
			st := store.New()
			loadManifests(t, st, filepath.Join(dir, "mesh", "manifests.yaml"))
			routes := loadManifests(t, st, filepath.Join(dir, "tests", "mesh", tc.file))
			if tc.weights != nil {
				if got := dsts(compile.Profile(st, tc.weightsOf, opts)); !slices.Equal(got, tc.weights) {
					t.Errorf("DstOverrides = %v, want %v", got, tc.weights)
				}
			}
			for _, x := range tc.cases {
				got := route(t, st, x.rq)
				if got.backend != x.want.backend && x.want.backend != "" || got.status != x.want.status || x.want.path != "" && got.path != x.want.path {
					t.Errorf("%s%s %v: %s%s (%d), want %s%s (%d)", x.rq.authority, x.rq.path, x.rq.headers, got.backend, got.path, got.status, x.want.backend, x.want.path, x.want.status)
				}
				for k, v := range x.want.req {
					if g := strings.Join(got.req.Values(k), ","); g != v[0] {
						t.Errorf("%s%s: request header %s = %q, want %q", x.rq.authority, x.rq.path, k, g, v[0])
					}
				}
				for k, v := range x.want.resp {
					if g := got.resp.Get(k); g != v[0] {
						t.Errorf("%s%s: response header %s = %q, want %q", x.rq.authority, x.rq.path, k, g, v[0])
					}
				}
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
