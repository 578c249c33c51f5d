package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	compilegateway "github.com/meridian-mesh/meridian/controlplane/compile/gateway"
	"github.com/meridian-mesh/meridian/controlplane/gateway/provision"
	"github.com/meridian-mesh/meridian/controlplane/inject"
	"github.com/meridian-mesh/meridian/controlplane/store"
	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/gateway"
	"github.com/meridian-mesh/meridian/proxy/sidecar"
	"github.com/meridian-mesh/meridian/proxy/tlsid/tlsidtest"
	"github.com/meridian-mesh/meridian/test/apiserver"
	"github.com/meridian-mesh/meridian/viz/stat"
)

// On Kubernetes a Gateway's proxies are the Deployment <gateway>-meridian
// that provisioning renders (container meridian-gateway): `viz stat
// deploy` reads its pod like a meshed one and shows what it served, and
// `viz edges` shows its calls into web over mutual TLS with its identity.
// A real kube-apiserver, whose pod proxy requests reach a real gateway and
// a real sidecar on loopback.
func TestVizGatewayKube(t *testing.T) {
	cfg := apiserver.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cs := kubernetes.NewForConfigOrDie(cfg)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{})
	must(err)
	running := func(pod *corev1.Pod) {
		t.Helper()
		created, err := cs.CoreV1().Pods("shop").Create(ctx, pod, metav1.CreateOptions{})
		must(err)
		created.Status.Phase = corev1.PodRunning
		_, err = cs.CoreV1().Pods("shop").UpdateStatus(ctx, created, metav1.UpdateOptions{})
		must(err)
	}

	// web: a Deployment, its meshed pod, a real sidecar in front of an
	// application that fails /fail.
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			http.Error(w, "no", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer app.Close()
	ids := tlsidtest.Start(t, time.Hour)
	web, err := sidecar.New(sidecar.Config{OutboundAddr: "127.0.0.1:0", InboundAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		InboundForward: strings.TrimPrefix(app.URL, "http://"), DrainTimeout: time.Second, Identity: ids.Identity(t, "shop", "web")})
	must(err)
	wctx, wstop := context.WithCancel(context.Background())
	wdone := make(chan struct{})
	go func() { defer close(wdone); web.Run(wctx) }()
	defer func() { wstop(); <-wdone }()
	_, webIn, webAdmin := web.Addrs()
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
	_, err = cs.AppsV1().Deployments("shop").Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{Selector: sel, Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: sel.MatchLabels},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}}}, metav1.CreateOptions{})
	must(err)
	running(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "shop", Labels: sel.MatchLabels},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}},
			InitContainers: []corev1.Container{{Name: "meridian-proxy", Image: "proxy", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
				Ports: []corev1.ContainerPort{{Name: "meridian-admin", ContainerPort: 4191}}}}}})

	// The Gateway edge, as the controller provisions it: its Deployment
	// and a pod of it.
	gw := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "edge", Namespace: "shop", UID: "uid-edge"},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: "meridian",
			Listeners: []gatewayv1.Listener{{Name: "http", Port: 8080, Protocol: gatewayv1.HTTPProtocolType}}}}
	objs, err := provision.Render(gw, provision.Params{}, inject.DefaultConfig("v1.0.0", "meridian"))
	must(err)
	dep, err := cs.AppsV1().Deployments("shop").Create(ctx, objs.Deployment, metav1.CreateOptions{})
	must(err)
	tmpl := dep.Spec.Template
	running(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: dep.Name + "-0", Namespace: "shop", Labels: tmpl.Labels}, Spec: tmpl.Spec})

	// Its proxy: the snapshot the controller compiles for the Gateway and
	// an HTTPRoute to web, web's endpoint from service discovery.
	st := store.New()
	must(st.ReplaceAll([]runtime.Object{
		&gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "meridian"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: compilegateway.ControllerName}},
		gw,
		&gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"}, Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "edge"}}},
			Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{
				BackendObjectReference: gatewayv1.BackendObjectReference{Name: "web", Port: ptr.To(gatewayv1.PortNumber(80))}}}}}}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}},
	}))
	key := types.NamespacedName{Namespace: "shop", Name: "edge"}
	res := compilegateway.Compile(compilegateway.InputFrom(st, key), key, compilegateway.Options{})
	if !res.Owned {
		t.Fatalf("the Gateway is not ours: %+v", res)
	}
	resolver, err := discover.NewStatic([]discover.Destination{{Authority: "web.shop.svc.cluster.local:80",
		Endpoints: []discover.Endpoint{{Addr: webIn.String(), Identity: tlsidtest.ID("shop", "web").String()}}}})
	must(err)
	g, err := gateway.New(gateway.Config{Bind: func(uint32) string { return "127.0.0.1:0" }, AdminAddr: "127.0.0.1:0",
		Resolver: resolver, Balancer: balance.RoundRobin, Identity: ids.Identity(t, "shop", dep.Name), Namespace: "shop", DrainTimeout: time.Second})
	must(err)
	must(g.Apply(res.Snapshot))
	gctx, gstop := context.WithCancel(context.Background())
	gdone := make(chan struct{})
	go func() { defer close(gdone); g.Run(gctx) }()
	defer func() { gstop(); <-gdone }()
	gwAddr := g.Ports()[8080].String()

	front := newPodProxyFront(t, cfg, map[string]string{
		"shop/web-1:4191": webAdmin.String(), "shop/" + dep.Name + "-0:4191": g.AdminAddr().String()})
	kc := writeKubeconfig(t, front.URL)
	// Inside the window: 10 requests from outside through the gateway,
	// 3 of them failing at web.
	traffic := func() {
		c := &http.Client{Timeout: 5 * time.Second}
		for i := range 10 {
			path := "/"
			if i < 3 {
				path = "/fail"
			}
			resp, err := c.Get("http://" + gwAddr + path)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}

	front.afterReads(2, traffic)
	out, err := runViz(ctx, "stat", "deploy", "--kubeconfig", kc, "--window", "1s", "-o", "json")
	must(err)
	var rows []stat.Row
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	byName := map[string]stat.Row{}
	for _, r := range rows {
		byName[r.Name] = r
	}
	for _, name := range []string{dep.Name, "web"} {
		r := byName[name]
		if r.MeshedPods != 1 || r.TotalPods != 1 || r.Requests == nil || *r.Requests != 10 || *r.SuccessRate != 0.7 || r.LatencyP50 == nil {
			t.Errorf("%s: %+v\n%s", name, r, out)
		}
	}

	front.afterReads(2, traffic)
	out, err = runViz(ctx, "edges", "deploy", "--kubeconfig", kc, "--window", "1s")
	must(err)
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
		f := strings.Fields(l)
		got = append(got, strings.Join(f[:len(f)-1], " ")) // not RPS
	}
	// The gateway's clients from outside are no edge; its calls are web's.
	if want := []string{dep.Name + " shop web shop √"}; !slices.Equal(got, want) {
		t.Errorf("edges:\n%s\nwant rows %q", out, want)
	}
}
