package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/meridian-mesh/meridian/cli/kubeclient"
	"github.com/meridian-mesh/meridian/test/apiserver"
)

// runIdentity runs `meridian identity args...` and returns its output.
func runIdentity(ctx context.Context, args ...string) (string, error) {
	cmd := newIdentityCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

const sampleIdentity = "# SPIFFE ID: spiffe://cluster.local/ns/emojivoto/sa/web\n# Not after:  2030-01-01T00:00:00Z\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

// The address form: a GET of /identity from a proxy admin server, printed
// as it is; an error status is an error that says so.
func TestIdentityAdminAddr(t *testing.T) {
	var ready bool
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path != "/identity" || r.Method != http.MethodGet {
			http.NotFound(w, r)
			return
		}
		if !ready {
			http.Error(w, "no certificate yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, sampleIdentity)
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	ctx := context.Background()

	_, err := runIdentity(ctx, addr)
	if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "no certificate yet") {
		t.Fatalf("proxy without a certificate: %v", err)
	}
	mu.Lock()
	ready = true
	mu.Unlock()
	out, err := runIdentity(ctx, addr)
	if err != nil || out != sampleIdentity {
		t.Fatalf("got %q, %v; want the body as served", out, err)
	}
	// Kubernetes flags do not turn an address into a name.
	if out, err := runIdentity(ctx, addr, "-n", "emojivoto"); err != nil || out != sampleIdentity {
		t.Fatalf("with -n: %q, %v", out, err)
	}
}

func TestIdentityArgs(t *testing.T) {
	for s, want := range map[string]bool{
		"127.0.0.1:4191": true, "localhost:4191": true, "[::1]:4191": true, "web:4191": true,
		"web": false, "deploy/web": false, "pod/web-1": false, "web:admin": false, "web:99999": false,
	} {
		if got := isAdminAddr(s); got != want {
			t.Errorf("isAdminAddr(%q) = %v, want %v", s, got, want)
		}
	}
	ctx := context.Background()
	if _, err := runIdentity(ctx); err == nil {
		t.Error("no name and no selector: no error")
	}
	if _, err := runIdentity(ctx, "web", "-l", "app=web"); err == nil {
		t.Error("a name and a selector: no error")
	}
	if _, err := runIdentity(ctx, "rs/web", "--kubeconfig", filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("a kubeconfig that does not exist: no error")
	}
}

// podProxyPath is the API server's pod proxy to a port (with or without a
// scheme), e.g. /api/v1/namespaces/shop/pods/http:web-1:4191/proxy/identity.
var podProxyPath = regexp.MustCompile(`^/api/v1/namespaces/([^/]+)/pods/(?:https?:)?([^/:]+):(\d+)/proxy/(.*)$`)

// apiServer stands in front of a real kube-apiserver and forwards
// everything to it except the pod proxy, which needs a kubelet (envtest
// runs none): that it answers itself, as each pod's proxy admin server
// would, from admin ("ns/name:port" → /identity body; empty: 503 as a
// proxy without a certificate; missing: the real API server answers).
type apiServer struct {
	*httptest.Server
	mu    sync.Mutex
	asked []string // "ns/name:port/path" of every pod proxy request
}

// realAPIServer forwards requests to the API server cfg reaches, with
// cfg's credentials.
func realAPIServer(t *testing.T, cfg *rest.Config) *httputil.ReverseProxy {
	t.Helper()
	target, _, err := rest.DefaultServerUrlFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := rest.TransportFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &httputil.ReverseProxy{Transport: rt, Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(target) }}
}

func startAPIServer(t *testing.T, cfg *rest.Config, admin map[string]string) *apiServer {
	t.Helper()
	rp := realAPIServer(t, cfg)
	a := &apiServer{}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m := podProxyPath.FindStringSubmatch(r.URL.Path)
		if m == nil {
			rp.ServeHTTP(w, r)
			return
		}
		pod := m[1] + "/" + m[2] + ":" + m[3]
		a.mu.Lock()
		a.asked = append(a.asked, pod+"/"+m[4])
		a.mu.Unlock()
		body, ok := admin[pod]
		switch {
		case !ok:
			rp.ServeHTTP(w, r) // the real API server's answer
		case r.Method != http.MethodGet || m[4] != "identity" || body == "":
			http.Error(w, "no certificate yet", http.StatusServiceUnavailable)
		default:
			fmt.Fprint(w, body)
		}
	}))
	t.Cleanup(a.Close)
	return a
}

// takeAsked returns the pod proxy requests since the last call.
func (a *apiServer) takeAsked() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	asked := a.asked
	a.asked = nil
	return asked
}

// writeKubeconfig points context "shop" (namespace shop, the current one)
// and context "bare" (no namespace) at server.
func writeKubeconfig(t *testing.T, server string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
users:
- name: test
  user: {}
contexts:
- name: shop
  context: {cluster: test, user: test, namespace: shop}
- name: bare
  context: {cluster: test, user: test}
current-context: shop
`, server)
	if err := os.WriteFile(p, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func identityBody(ns, name string) string {
	return fmt.Sprintf("# SPIFFE ID: spiffe://cluster.local/ns/%s/sa/%s\n-----BEGIN CERTIFICATE-----\n%s\n-----END CERTIFICATE-----\n", ns, name, name)
}

// `meridian identity POD|TYPE/NAME|-l SELECTOR` against a real
// kube-apiserver: names and selectors resolve to the right pods through the
// API server, unmeshed and missing objects fail clearly, and each pod's
// proxy is asked for /identity through the pod proxy subresource.
func TestIdentityKube(t *testing.T) {
	cfg := apiserver.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cs := kubernetes.NewForConfigOrDie(cfg)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}

	for _, ns := range []string{"shop", "other"} {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		must(err)
	}
	tmpl := func(app string) corev1.PodTemplateSpec {
		return corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
	}
	sel := func(app string) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
	}
	for _, app := range []string{"web", "mixed"} {
		_, err := cs.AppsV1().Deployments("shop").Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: app},
			Spec: appsv1.DeploymentSpec{Selector: sel(app), Template: tmpl(app)}}, metav1.CreateOptions{})
		must(err)
	}
	_, err := cs.AppsV1().StatefulSets("shop").Create(ctx, &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db"},
		Spec: appsv1.StatefulSetSpec{Selector: sel("db"), Template: tmpl("db")}}, metav1.CreateOptions{})
	must(err)
	_, err = cs.AppsV1().DaemonSets("shop").Create(ctx, &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "agent"},
		Spec: appsv1.DaemonSetSpec{Selector: sel("agent"), Template: tmpl("agent")}}, metav1.CreateOptions{})
	must(err)

	// Pods as the injector leaves them: the proxy as a native sidecar (an
	// init container that keeps running), or, as older injections did, as
	// a regular container. No kubelet runs: their status is set by hand.
	// (Only the admin port: the API server rejects "meridian-inbound", 16
	// characters, as a port name; they may have 15 at most.)
	sidecar := corev1.Container{Name: "meridian-proxy", Image: "proxy", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
		Ports: []corev1.ContainerPort{{Name: "meridian-admin", ContainerPort: 4191}}}
	type podSpec struct {
		ns, name, app string
		mesh          string // "init", "container" (admin on 4192, named), "" (not meshed)
		phase         corev1.PodPhase
	}
	pods := []podSpec{
		{"shop", "web-1", "web", "init", corev1.PodRunning},
		{"shop", "web-2", "web", "container", corev1.PodRunning},
		{"shop", "voting-1", "voting", "init", corev1.PodRunning},
		{"shop", "plain", "plain", "", corev1.PodRunning},
		{"shop", "db-0", "db", "init", corev1.PodRunning},
		{"shop", "agent-x", "agent", "init", corev1.PodRunning},
		{"shop", "mixed-1", "mixed", "init", corev1.PodRunning},
		{"shop", "mixed-2", "mixed", "", corev1.PodRunning},
		{"shop", "pending-1", "pending", "init", ""},
		{"shop", "nocert-1", "nocert", "init", corev1.PodRunning},
		{"shop", "unreachable-1", "unreachable", "init", corev1.PodRunning},
		{"other", "web-9", "web", "init", corev1.PodRunning}, // same labels, another namespace
	}
	admin := map[string]string{}
	for _, p := range pods {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: p.ns, Labels: map[string]string{"app": p.app}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
		port := "4191"
		switch p.mesh {
		case "init":
			pod.Spec.InitContainers = []corev1.Container{sidecar}
		case "container":
			c := sidecar
			c.RestartPolicy = nil
			c.Ports = []corev1.ContainerPort{{Name: "meridian-admin", ContainerPort: 4192}}
			pod.Spec.Containers = append(pod.Spec.Containers, c)
			port = "4192"
		}
		created, err := cs.CoreV1().Pods(p.ns).Create(ctx, pod, metav1.CreateOptions{})
		must(err)
		if p.phase != "" {
			created.Status.Phase = p.phase
			_, err = cs.CoreV1().Pods(p.ns).UpdateStatus(ctx, created, metav1.UpdateOptions{})
			must(err)
		}
		switch {
		case p.app == "nocert":
			admin[p.ns+"/"+p.name+":"+port] = ""
		case p.app == "unreachable":
		case p.mesh != "":
			admin[p.ns+"/"+p.name+":"+port] = identityBody(p.ns, p.name)
		}
	}

	// Resolution straight against the real API server (its own TLS and
	// credentials): a Deployment's selector picks its pods in its namespace.
	c, err := kubeclient.NewClient(cfg, "shop")
	must(err)
	got, err := c.Pods(ctx, kubeclient.Ref{Kind: kubeclient.KindDeployment, Name: "web"})
	must(err)
	var names []string
	for _, p := range got {
		names = append(names, p.Namespace+"/"+p.Name)
	}
	if want := []string{"shop/web-1", "shop/web-2"}; !slices.Equal(names, want) {
		t.Fatalf("deploy/web resolved to %v, want %v", names, want)
	}

	// The command, end to end, through a kubeconfig.
	api := startAPIServer(t, cfg, admin)
	kc := writeKubeconfig(t, api.URL)
	header := func(ns, name string) string { return "POD " + ns + "/" + name + "\n" + identityBody(ns, name) }
	for _, tc := range []struct {
		name  string
		args  []string
		out   string   // the whole output
		asked []string // pod proxy requests
		err   string   // substring of the error; "" for none
	}{
		{name: "deployment", args: []string{"deploy/web"},
			out:   header("shop", "web-1") + header("shop", "web-2"),
			asked: []string{"shop/web-1:4191/identity", "shop/web-2:4192/identity"}},
		{name: "long kind", args: []string{"deployments/web"},
			out:   header("shop", "web-1") + header("shop", "web-2"),
			asked: []string{"shop/web-1:4191/identity", "shop/web-2:4192/identity"}},
		{name: "pod", args: []string{"voting-1"},
			out: header("shop", "voting-1"), asked: []string{"shop/voting-1:4191/identity"}},
		{name: "pod/", args: []string{"pod/web-1"},
			out: header("shop", "web-1"), asked: []string{"shop/web-1:4191/identity"}},
		{name: "statefulset", args: []string{"sts/db"},
			out: header("shop", "db-0"), asked: []string{"shop/db-0:4191/identity"}},
		{name: "daemonset", args: []string{"ds/agent"},
			out: header("shop", "agent-x"), asked: []string{"shop/agent-x:4191/identity"}},
		{name: "selector", args: []string{"-l", "app=web"},
			out:   header("shop", "web-1") + header("shop", "web-2"),
			asked: []string{"shop/web-1:4191/identity", "shop/web-2:4192/identity"}},
		{name: "namespace flag", args: []string{"--context", "bare", "-n", "other", "web-9"},
			out: header("other", "web-9"), asked: []string{"other/web-9:4191/identity"}},
		{name: "namespace default", args: []string{"--context", "bare", "web-1"},
			err: "pod default/web-1 not found"},
		{name: "not meshed", args: []string{"plain"},
			err: "pod shop/plain is not meshed: no meridian-proxy container; inject it with meridian inject"},
		{name: "one pod of a workload not meshed", args: []string{"deploy/mixed"},
			out: header("shop", "mixed-1"), asked: []string{"shop/mixed-1:4191/identity"},
			err: "pod shop/mixed-2 is not meshed"},
		{name: "pod not found", args: []string{"nope"}, err: "pod shop/nope not found"},
		{name: "deployment not found", args: []string{"deploy/nope"}, err: "deployment shop/nope not found"},
		{name: "statefulset not found", args: []string{"-n", "other", "sts/db"}, err: "statefulset other/db not found"},
		{name: "daemonset not found", args: []string{"daemonset/nope"}, err: "daemonset shop/nope not found"},
		{name: "unknown kind", args: []string{"svc/web"}, err: `unknown kind "svc"`},
		{name: "selector matches nothing", args: []string{"-l", "app=nope"}, err: "no pods in namespace shop match app=nope"},
		{name: "not running", args: []string{"pending-1"}, err: "pod shop/pending-1 is not running"},
		{name: "proxy answers an error", args: []string{"nocert-1"},
			asked: []string{"shop/nocert-1:4191/identity"},
			err:   "pod shop/nocert-1: the proxy answered GET :4191/identity with 503 Service Unavailable: no certificate yet"},
		{name: "API server cannot reach the pod", args: []string{"unreachable-1"},
			asked: []string{"shop/unreachable-1:4191/identity"}, err: "pod shop/unreachable-1: GET :4191/identity through the API server: address not allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runIdentity(ctx, append(tc.args, "--kubeconfig", kc)...)
			if err != nil {
				t.Log(err)
			}
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("error: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("error %v, want one saying %q", err, tc.err)
			}
			if out != tc.out {
				t.Errorf("output:\n%s\nwant:\n%s", out, tc.out)
			}
			if asked := api.takeAsked(); !slices.Equal(asked, tc.asked) {
				t.Errorf("pod proxy requests %v, want %v", asked, tc.asked)
			}
		})
	}
}
