package integration

import (
	"context"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"

	pb "github.com/meridian-mesh/meridian/api/proto/destination"
	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/compile"
	"github.com/meridian-mesh/meridian/controlplane/destination"
	"github.com/meridian-mesh/meridian/controlplane/store"
	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/dstclient"
	"github.com/meridian-mesh/meridian/proxy/sidecar"
)

// named answers every request with its name (/slow after 5 s), and echoes
// the request's X-Header-Set and X-Route headers back (as X-Saw-...).
func named(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}
		w.Header().Set("X-Saw-Header-Set", r.Header.Get("X-Header-Set"))
		w.Header().Set("X-Saw-Route", r.Header.Get("X-Route"))
		w.Header().Set("X-Saw-Path", r.URL.Path)
		w.Header().Set("X-Saw-Host", r.Host)
		w.Write([]byte(name))
	})
}

// send sends one request for authority through p's outbound listener.
func send(t *testing.T, c *http.Client, p *sidecar.Proxy, authority, path string, hdr map[string]string) (int, string, http.Header) {
	t.Helper()
	out, _, _ := p.Addrs()
	req, _ := http.NewRequest("GET", "http://"+out.String()+path, nil)
	req.Host = authority
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s%s: %v", authority, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// A GAMMA HTTPRoute (the conformance suite's MeshHTTPRouteMatching rules,
// plus header modifiers, a redirect, a rewrite, a rule the mesh cannot
// honour and weights) with its Service as parent: real requests through a
// sidecar reach the backends its rules name, with their filters and
// timeouts applied, in the Gateway API's precedence; requests no rule
// matches get 404.
func TestMeshHTTPRouteRules(t *testing.T) {
	cc := controlPlane(t, service("echo")+service("echo-v1")+service("echo-v2")+`---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mesh-matching, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 80}]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /}
    - headers: [{name: version, value: one}]
    backendRefs: [{name: echo-v1, port: 80}]
  - matches:
    - path: {type: PathPrefix, value: /v2}
    - headers: [{name: version, value: two}]
    backendRefs: [{name: echo-v2, port: 80}]
  - matches: [{path: {type: Exact, value: /set}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: X-Header-Set, value: set-overwrites-values}]}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {add: [{name: X-Rule, value: set}]}
    backendRefs:
    - name: echo-v2
      port: 80
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: X-Route, value: backend-v2}]}
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {hostname: elsewhere, statusCode: 301, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
    backendRefs: [{name: echo-v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /rewrite}}]
    filters:
    - type: URLRewrite
      urlRewrite: {hostname: rewritten.example, path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}
    backendRefs: [{name: echo-v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /cors}}]
    filters:
    - type: CORS
      cors: {allowOrigins: ["https://example.com"]}
    backendRefs: [{name: echo-v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /split}}]
    backendRefs: [{name: echo-v1, port: 80, weight: 80}, {name: echo-v2, port: 80, weight: 20}]
  - matches: [{path: {type: Exact, value: /slow}}]
    timeouts: {request: 200ms}
    backendRefs: [{name: echo-v1, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: only-paths, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: echo-v1}]
  rules:
  - matches: [{path: {type: Exact, value: /only}}]
    backendRefs: [{name: echo-v1, port: 80}]
`)
	meshed(t, cc, "echo-v1", named("echo-v1"))
	meshed(t, cc, "echo-v2", named("echo-v2"))
	p := proxy(t, cc)
	// Redirects are the answer, not followed.
	c := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct {
		path   string
		hdr    map[string]string
		status int
		body   string
	}{
		{"/", nil, 200, "echo-v1"}, {"/example", nil, 200, "echo-v1"}, {"/", map[string]string{"Version": "one"}, 200, "echo-v1"},
		{"/v2", nil, 200, "echo-v2"}, {"/v2/example", nil, 200, "echo-v2"}, {"/", map[string]string{"Version": "two"}, 200, "echo-v2"},
		{"/v2/", nil, 200, "echo-v2"}, {"/v2example", nil, 200, "echo-v1"}, {"/foo/v2/example", nil, 200, "echo-v1"},
		{"/cors/x", nil, 500, ""}, {"/slow", nil, 504, ""},
	} {
		code, body, _ := send(t, c, p, "echo.default:80", tc.path, tc.hdr)
		if code != tc.status || tc.body != "" && body != tc.body {
			t.Errorf("%s %v: %d %q, want %d %q", tc.path, tc.hdr, code, body, tc.status, tc.body)
		}
	}
	// The redirect answers in the client's proxy; the rewrite reaches the
	// backend rewritten.
	if code, _, h := send(t, c, p, "echo.default:80", "/old/x?q=1", nil); code != 301 || h.Get("Location") != "http://elsewhere/new/x?q=1" {
		t.Errorf("/old/x: %d Location %q, want 301 http://elsewhere/new/x?q=1", code, h.Get("Location"))
	}
	if code, body, h := send(t, c, p, "echo.default:80", "/rewrite/a/b", nil); code != 200 || body != "echo-v1" || h.Get("X-Saw-Path") != "/a/b" || h.Get("X-Saw-Host") != "rewritten.example" {
		t.Errorf("/rewrite/a/b: %d %q, the backend saw path %q host %q, want echo-v1 /a/b rewritten.example", code, body, h.Get("X-Saw-Path"), h.Get("X-Saw-Host"))
	}
	code, body, h := send(t, c, p, "echo.default:80", "/set", map[string]string{"X-Header-Set": "some-other-value"})
	if code != 200 || body != "echo-v2" || h.Get("X-Saw-Header-Set") != "set-overwrites-values" || h.Get("X-Saw-Route") != "backend-v2" || h.Get("X-Rule") != "set" {
		t.Errorf("/set: %d %q, the backend saw X-Header-Set %q X-Route %q, response X-Rule %q", code, body, h.Get("X-Saw-Header-Set"), h.Get("X-Saw-Route"), h.Get("X-Rule"))
	}
	// No rule of only-paths matches "/": 404, as the Gateway API says.
	if code, _, h := send(t, c, p, "echo-v1.default:80", "/", nil); code != 404 {
		t.Errorf("echo-v1 /: %d (%s), want 404", code, h.Get("Meridian-Proxy-Error"))
	}
	if code, body, _ := send(t, c, p, "echo-v1.default:80", "/only", nil); code != 200 || body != "echo-v1" {
		t.Errorf("echo-v1 /only: %d %q", code, body)
	}
	// Weights within a rule: 80/20 over 2,000 requests.
	n, v2 := 2000, 0
	for range n {
		if _, body, _ := send(t, c, p, "echo.default:80", "/split", nil); body == "echo-v2" {
			v2++
		}
	}
	if s := float64(v2) / float64(n); math.Abs(s-0.2) > 0.04 {
		t.Errorf("/split: echo-v2 got %.3f of requests, want 0.20±0.04", s)
	}
	// The route label is the rule's.
	if out := scrape(t, p); !contains(out, `route="HTTPRoute/default/mesh-matching/1"`) {
		t.Errorf("no request_total for the rule's route label in:\n%s", grep(out, "request_total"))
	}
}

func contains(s, sub string) bool { return len(grep(s, sub)) > 0 }

// hashed is an EndpointSlice of service svc with one endpoint at addr,
// the pod name pod (which carries the Rollout's pod-template hash).
func hashed(svc, pod string, addr string) *discoveryv1.EndpointSlice {
	host, portS, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portS)
	p, name, tcp := int32(port), "http", corev1.ProtocolTCP
	return &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: svc + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{{Name: &name, Port: &p, Protocol: &tcp}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{host}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: pod}}}}
}

// A Rollout with Meridian's own split (trafficRouting.meridian: {}) at a
// setHeaderRoute step: requests with the header reach the canary pods
// whatever the weights, the others go by weight; the next steps keep it,
// promotion removes it. Each status write is one profile message on the
// destination stream. Kubernetes objects in the store as the Kubernetes
// source fills it; the pods are HTTP servers on loopback, reached through
// a real sidecar over the real destination API.
func TestRolloutHeaderRoute(t *testing.T) {
	st := store.New(store.WithClusterDomain("cluster.local"))
	stable, canary := backend(t, named("stable")), backend(t, named("canary"))
	svc := func(name string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name},
			Spec: corev1.ServiceSpec{ClusterIP: "None", Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}}}
	}
	hr := &v1alpha1.SetHeaderRoute{Name: "beta", Match: []v1alpha1.HeaderRoutingMatch{{HeaderName: "X-Beta", HeaderValue: &v1alpha1.StringMatch{Exact: "yes"}}}}
	rollout := func(step int32, stableHash string, stableW int32, canaryHash string) *v1alpha1.Rollout {
		return &v1alpha1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}, Spec: v1alpha1.RolloutSpec{
			Strategy: v1alpha1.RolloutStrategy{Canary: &v1alpha1.CanaryStrategy{StableService: "web-stable", CanaryService: "web-canary",
				TrafficRouting: &v1alpha1.RolloutTrafficRouting{Meridian: &v1alpha1.MeridianTrafficRouting{}, ManagedRoutes: []v1alpha1.MangedRoutes{{Name: "beta"}}},
				Steps:          []v1alpha1.CanaryStep{{SetHeaderRoute: hr}, {Pause: &v1alpha1.RolloutPause{}}, {SetWeight: ptr(int32(50))}, {Pause: &v1alpha1.RolloutPause{}}}}}},
			Status: v1alpha1.RolloutStatus{CurrentStepIndex: &step, Canary: v1alpha1.CanaryStatus{Weights: &v1alpha1.TrafficWeights{
				Stable: v1alpha1.WeightDestination{ServiceName: "web-stable", PodTemplateHash: stableHash, Weight: stableW},
				Canary: v1alpha1.WeightDestination{ServiceName: "web-canary", PodTemplateHash: canaryHash, Weight: 100 - stableW}}}}}
	}
	for _, o := range []runtime.Object{
		svc("web-stable"), svc("web-canary"),
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "s", Labels: map[string]string{v1alpha1.DefaultRolloutUniqueLabelKey: "aaa"}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "c", Labels: map[string]string{v1alpha1.DefaultRolloutUniqueLabelKey: "bbb"}}},
		hashed("web-stable", "s", stable), hashed("web-canary", "c", canary),
		rollout(0, "aaa", 100, "bbb"),
	} {
		if err := st.Upsert(o); err != nil {
			t.Fatal(err)
		}
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	pb.RegisterDestinationServer(g, destination.New(st, st, destination.Options{Compile: compile.Options{ClusterDomain: "cluster.local", TrustDomain: "cluster.local"}}))
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	cc, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })

	// The destination stream: the header route in the first profile, and
	// one message per status write after it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const apex = "web-stable.shop.svc.cluster.local:80"
	ps, err := pb.NewDestinationClient(cc).GetProfile(ctx, &pb.GetDestination{Authority: apex})
	if err != nil {
		t.Fatal(err)
	}
	var msgs atomic.Int64
	first := make(chan *pb.DestinationProfile, 1)
	go func() {
		for {
			m, err := ps.Recv()
			if err != nil {
				return
			}
			if msgs.Add(1) == 1 {
				first <- m
			}
		}
	}()
	select {
	case m := <-first:
		if len(m.GetHttpRoutes()) != 1 || m.GetHttpRoutes()[0].GetBackends()[0].GetAuthority() != "bbb.web-stable.shop.svc.cluster.local:80" {
			t.Fatalf("first profile's http_routes: %v", m.GetHttpRoutes())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no profile")
	}

	p, err := sidecar.New(sidecar.Config{
		OutboundAddr: "127.0.0.1:0", InboundAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		Resolver: dstclient.New(cc, dstclient.Options{Log: quiet}),
		Balancer: balance.PeakEWMA, DrainTimeout: time.Second, Log: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(pctx); close(done) }()
	t.Cleanup(func() { pcancel(); <-done })
	c := &http.Client{Timeout: 10 * time.Second}
	beta := map[string]string{"X-Beta": "yes"}
	// shares sends n requests (with hdr) and returns the canary's share.
	shares := func(n int, hdr map[string]string) float64 {
		got := 0
		for range n {
			code, body, h := send(t, c, p, apex, "/", hdr)
			if code != 200 {
				t.Fatalf("%d (%s)", code, h.Get("Meridian-Proxy-Error"))
			}
			if body == "canary" {
				got++
			}
		}
		return float64(got) / float64(n)
	}
	// eventually waits until the proxy routes as the store now says.
	eventually := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// Step 0, setHeaderRoute at weight 0: the header → canary, the rest → stable.
	if s := shares(200, beta); s != 1 {
		t.Errorf("setHeaderRoute: header requests to the canary: %.3f, want 1", s)
	}
	if s := shares(200, nil); s != 0 {
		t.Errorf("setHeaderRoute: other requests to the canary: %.3f, want 0", s)
	}
	// Step 2, setWeight 50: the header route stays; the rest is split.
	before := msgs.Load()
	if err := st.Upsert(rollout(2, "aaa", 50, "bbb")); err != nil {
		t.Fatal(err)
	}
	eventually("setWeight 50", func() bool { return shares(20, nil) > 0 })
	if s := shares(200, beta); s != 1 {
		t.Errorf("setWeight 50: header requests to the canary: %.3f, want 1", s)
	}
	if s := shares(1000, nil); math.Abs(s-0.5) > 0.07 {
		t.Errorf("setWeight 50: other requests to the canary: %.3f, want 0.50±0.07", s)
	}
	if n := msgs.Load() - before; n != 1 {
		t.Errorf("setWeight 50: %d profile messages, want 1 (one status write)", n)
	}
	// Promotion: bbb is stable, no canary: no header route, all to bbb.
	before = msgs.Load()
	if err := st.Upsert(rollout(4, "bbb", 100, "bbb")); err != nil {
		t.Fatal(err)
	}
	eventually("promotion", func() bool { return shares(20, nil) == 1 })
	time.Sleep(200 * time.Millisecond)
	if n := msgs.Load() - before; n != 1 {
		t.Errorf("promotion: %d profile messages, want 1", n)
	}
	if out := scrape(t, p); !contains(out, `route="Rollout/shop/web/beta"`) {
		t.Errorf("no request_total for the header route's label in:\n%s", grep(out, "request_total"))
	}
}

func ptr[T any](v T) *T { return &v }

// grpcServer answers TestService's UnaryCall with its name as ServerId.
type grpcServer struct {
	testgrpc.UnimplementedTestServiceServer
	name string
}

// EmptyCall succeeds: an UNIMPLEMENTED answer can only be the proxy's.
func (s *grpcServer) EmptyCall(context.Context, *testgrpc.Empty) (*testgrpc.Empty, error) {
	return &testgrpc.Empty{}, nil
}

func (s *grpcServer) UnaryCall(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{ServerId: s.name}, nil
}

// A GAMMA GRPCRoute: real gRPC calls through a sidecar reach the backend
// of the rule their method and metadata match; a method no rule matches
// is UNIMPLEMENTED.
func TestMeshGRPCRouteRules(t *testing.T) {
	cc := controlPlane(t, service("echo")+service("echo-v1")+service("echo-v2")+`---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: mesh-grpc, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: echo}]
  rules:
  - matches:
    - method: {service: grpc.testing.TestService, method: UnaryCall}
      headers: [{name: x-version, value: two}]
    backendRefs: [{name: echo-v2, port: 80}]
  - matches:
    - method: {service: grpc.testing.TestService, method: UnaryCall}
    backendRefs: [{name: echo-v1, port: 80}]
`)
	for _, name := range []string{"echo-v1", "echo-v2"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := grpc.NewServer()
		testgrpc.RegisterTestServiceServer(s, &grpcServer{name: name})
		go s.Serve(ln)
		t.Cleanup(s.Stop)
		p := proxyFor(t, cc, ln.Addr().String())
		_, in, _ := p.Addrs()
		register(t, cc, name, in.String())
	}
	p := proxy(t, cc)
	out, _, _ := p.Addrs()
	conn, err := grpc.NewClient("passthrough:///"+out.String(), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("echo.default:80"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := testgrpc.NewTestServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, tc := range []struct {
		md   []string
		want string
	}{{nil, "echo-v1"}, {[]string{"x-version", "two"}, "echo-v2"}, {[]string{"x-version", "three"}, "echo-v1"}} {
		cctx := ctx
		if tc.md != nil {
			cctx = metadata.AppendToOutgoingContext(ctx, tc.md...)
		}
		resp, err := client.UnaryCall(cctx, &testgrpc.SimpleRequest{})
		if err != nil || resp.GetServerId() != tc.want {
			t.Errorf("UnaryCall %v: %q %v, want %s", tc.md, resp.GetServerId(), err, tc.want)
		}
	}
	if _, err := client.EmptyCall(ctx, &testgrpc.Empty{}); status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "no_route") {
		t.Errorf("EmptyCall (no rule): %v, want Unimplemented", err)
	}
}
