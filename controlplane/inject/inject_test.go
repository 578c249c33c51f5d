package inject

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/meridian-mesh/meridian/internal/names"
)

const testAnchors = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

func testConfig() Config {
	c := DefaultConfig("v1.2.3", "meridian")
	c.TrustAnchorsPEM = testAnchors
	return c
}

func testPod(ann map[string]string) (*metav1.ObjectMeta, *corev1.PodSpec) {
	meta := &metav1.ObjectMeta{Name: "web-1", Namespace: "shop", Annotations: ann}
	spec := &corev1.PodSpec{
		InitContainers: []corev1.Container{{Name: "migrate", Image: "migrate:1"}},
		Containers: []corev1.Container{{Name: "web", Image: "web:1", Ports: []corev1.ContainerPort{
			{Name: "http", ContainerPort: 8080}, {Name: "mysql", ContainerPort: 3306},
		}}},
		Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
	}
	return meta, spec
}

func containerNames(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func find(cs []corev1.Container, name string) *corev1.Container {
	for i := range cs {
		if cs[i].Name == name {
			return &cs[i]
		}
	}
	return nil
}

func TestPodInjectsTheContract(t *testing.T) {
	meta, spec := testPod(nil)
	changed, rep, err := Pod(meta, spec, map[string]string{names.AnnotationInject: names.InjectEnabled}, testConfig())
	if err != nil || !changed || !rep.Injected {
		t.Fatalf("Pod = %v, %v, %v", changed, rep, err)
	}
	if got, want := containerNames(spec.InitContainers), []string{"meridian-init", "meridian-proxy", "migrate"}; !slices.Equal(got, want) {
		t.Fatalf("init containers %v, want %v", got, want)
	}
	if got := containerNames(spec.Containers); !slices.Equal(got, []string{"web"}) {
		t.Fatalf("containers %v", got)
	}
	if meta.Annotations[names.AnnotationProxyVersion] != "v1.2.3" {
		t.Fatalf("annotations %v", meta.Annotations)
	}

	init := spec.InitContainers[0]
	if init.Image != "ghcr.io/meridian-mesh/proxy-init:v1.2.3" || init.RestartPolicy != nil {
		t.Fatalf("meridian-init: image %s restartPolicy %v", init.Image, init.RestartPolicy)
	}
	wantInit := []string{"--inbound-port=4143", "--outbound-port=4140", "--proxy-uid=2102", "--skip-inbound-ports=4190,4191"}
	if !slices.Equal(init.Args, wantInit) {
		t.Fatalf("meridian-init args %q, want %q", init.Args, wantInit)
	}
	sc := init.SecurityContext
	if *sc.RunAsUser != 0 || *sc.RunAsNonRoot || !slices.Equal(sc.Capabilities.Add, []corev1.Capability{"NET_ADMIN", "NET_RAW"}) {
		t.Fatalf("meridian-init security context %+v", sc)
	}

	p := spec.InitContainers[1]
	if p.Image != "ghcr.io/meridian-mesh/proxy:v1.2.3" || p.RestartPolicy == nil || *p.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Fatalf("meridian-proxy: image %s restartPolicy %v", p.Image, p.RestartPolicy)
	}
	wantArgs := []string{
		"--outbound-addr=127.0.0.1:4140,[::1]:4140", "--inbound-addr=0.0.0.0:4143,[::]:4143", "--admin-addr=0.0.0.0:4191,[::]:4191",
		"--destination-addr=meridian-controller.meridian.svc.cluster.local:8086",
		"--identity-trust-domain=cluster.local",
		"--identity-token-file=/var/run/meridian/identity/token/token",
		"--log-level=info",
	}
	if !slices.Equal(p.Args, wantArgs) {
		t.Fatalf("meridian-proxy args\n%q\nwant\n%q", p.Args, wantArgs)
	}
	if *p.SecurityContext.RunAsUser != 2102 || !*p.SecurityContext.RunAsNonRoot {
		t.Fatalf("meridian-proxy security context %+v", p.SecurityContext)
	}
	if len(p.Env) != 1 || p.Env[0].Name != "MERIDIAN_PROXY_TRUST_ANCHORS" || p.Env[0].Value != testAnchors {
		t.Fatalf("meridian-proxy env %+v", p.Env)
	}
	if len(p.Ports) != 2 || p.Ports[0].Name != "meridian-proxy" || p.Ports[0].ContainerPort != 4143 ||
		p.Ports[1].Name != "meridian-admin" || p.Ports[1].ContainerPort != 4191 {
		t.Fatalf("meridian-proxy ports %+v", p.Ports)
	}
	for what, pr := range map[string]*corev1.Probe{"/live": p.StartupProbe, "/live ": p.LivenessProbe, "/ready": p.ReadinessProbe} {
		if pr == nil || pr.HTTPGet == nil || pr.HTTPGet.Path != strings.TrimSpace(what) || pr.HTTPGet.Port.IntValue() != 4191 {
			t.Fatalf("probe %s: %+v", what, pr)
		}
	}
	if len(p.VolumeMounts) != 1 || p.VolumeMounts[0].Name != TokenVolumeName || p.VolumeMounts[0].MountPath != "/var/run/meridian/identity/token" || !p.VolumeMounts[0].ReadOnly {
		t.Fatalf("meridian-proxy mounts %+v", p.VolumeMounts)
	}
	if len(p.Resources.Requests)+len(p.Resources.Limits) != 0 {
		t.Fatalf("meridian-proxy resources without config %+v", p.Resources)
	}

	if len(spec.Volumes) != 2 || spec.Volumes[0].Name != "data" {
		t.Fatalf("volumes %+v", spec.Volumes)
	}
	v := spec.Volumes[1]
	if v.Name != "meridian-identity-token" || v.Projected == nil || len(v.Projected.Sources) != 1 {
		t.Fatalf("token volume %+v", v)
	}
	tok := v.Projected.Sources[0].ServiceAccountToken
	if tok == nil || tok.Audience != "identity.meridian.io" || tok.Path != "token" {
		t.Fatalf("token projection %+v", tok)
	}
}

func TestPodAnnotationPrecedence(t *testing.T) {
	for _, tc := range []struct {
		name     string
		pod, ns  map[string]string
		injected bool
		skipped  string
	}{
		{"nothing", nil, nil, false, SkipNotEnabled},
		{"namespace enabled", nil, map[string]string{names.AnnotationInject: names.InjectEnabled}, true, ""},
		{"pod enabled", map[string]string{names.AnnotationInject: names.InjectEnabled}, nil, true, ""},
		{"pod disabled wins over namespace", map[string]string{names.AnnotationInject: names.InjectDisabled}, map[string]string{names.AnnotationInject: names.InjectEnabled}, false, SkipDisabled},
		{"pod enabled wins over namespace", map[string]string{names.AnnotationInject: names.InjectEnabled}, map[string]string{names.AnnotationInject: names.InjectDisabled}, true, ""},
		{"namespace disabled", nil, map[string]string{names.AnnotationInject: names.InjectDisabled}, false, SkipDisabled},
		// A bad namespace value does not matter when the pod says.
		{"pod over bad namespace value", map[string]string{names.AnnotationInject: names.InjectDisabled}, map[string]string{names.AnnotationInject: "yes"}, false, SkipDisabled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			meta, spec := testPod(tc.pod)
			before := spec.DeepCopy()
			changed, rep, err := Pod(meta, spec, tc.ns, testConfig())
			if err != nil {
				t.Fatal(err)
			}
			if changed != tc.injected || rep.Injected != tc.injected || rep.Skipped != tc.skipped {
				t.Fatalf("Pod = %v, %+v; want injected %v skipped %q", changed, rep, tc.injected, tc.skipped)
			}
			if !tc.injected && !reflect.DeepEqual(before, spec) {
				t.Fatal("a skipped pod was changed")
			}
		})
	}
}

func TestPodConfigAnnotations(t *testing.T) {
	ns := map[string]string{
		names.AnnotationInject:            names.InjectEnabled,
		names.AnnotationSkipOutboundPorts: "5432",
		names.AnnotationProxyLogLevel:     "warn",
		names.AnnotationProxyCPURequest:   "50m",
	}
	meta, spec := testPod(map[string]string{
		names.AnnotationSkipInboundPorts:   "25, 4000-4002,4191",
		names.AnnotationOpaquePorts:        "mysql,9000-9001",
		names.AnnotationProxyLogLevel:      "debug", // wins over the namespace's
		names.AnnotationProxyMemoryRequest: "32Mi",
		names.AnnotationProxyMemoryLimit:   "128Mi",
		names.AnnotationProxyCPULimit:      "1",
		names.AnnotationProxyMaxInFlight:   "500",
	})
	cfg := testConfig()
	cfg.Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m")}
	if _, _, err := Pod(meta, spec, ns, cfg); err != nil {
		t.Fatal(err)
	}
	init := find(spec.InitContainers, names.InitContainerName)
	want := []string{"--inbound-port=4143", "--outbound-port=4140", "--proxy-uid=2102",
		"--skip-inbound-ports=4190,4191,25,4000-4002", "--skip-outbound-ports=5432"}
	if !slices.Equal(init.Args, want) {
		t.Fatalf("meridian-init args\n%q\nwant\n%q", init.Args, want)
	}
	p := find(spec.InitContainers, names.ProxyContainerName)
	if !slices.Contains(p.Args, "--opaque-ports=3306,9000,9001") || !slices.Contains(p.Args, "--log-level=debug") || !slices.Contains(p.Args, "--max-in-flight=500") {
		t.Fatalf("meridian-proxy args %q", p.Args)
	}
	r := p.Resources
	for what, got := range map[string]resource.Quantity{
		"50m": r.Requests[corev1.ResourceCPU], "1": r.Limits[corev1.ResourceCPU],
		"32Mi": r.Requests[corev1.ResourceMemory], "128Mi": r.Limits[corev1.ResourceMemory],
	} {
		if got.Cmp(resource.MustParse(what)) != 0 {
			t.Fatalf("resources %+v: want %s", r, what)
		}
	}
	// The config's default resources are not changed by annotations.
	if len(cfg.Resources.Requests) != 1 || len(cfg.Resources.Limits) != 0 {
		t.Fatalf("config resources changed: %+v", cfg.Resources)
	}
}

func TestPodBadAnnotations(t *testing.T) {
	for _, tc := range []struct {
		ann, value string
		want       string // what the error says is allowed
	}{
		{names.AnnotationInject, "true", "use enabled or disabled"},
		{names.AnnotationSkipInboundPorts, "25,smtp", `"smtp" is not a port`},
		{names.AnnotationSkipOutboundPorts, "70000", `"70000" is not a port`},
		{names.AnnotationSkipOutboundPorts, "10-5", `"10-5" is not a range`},
		{names.AnnotationOpaquePorts, "redis", `"redis" names no container port`},
		{names.AnnotationOpaquePorts, "1-5000", "more than 1024 ports"},
		{names.AnnotationProxyLogLevel, "verbose", "use debug, info, warn or error"},
		{names.AnnotationProxyMaxInFlight, "0", "use a positive number of requests"},
		{names.AnnotationDefaultInbound, "allow-all", "use all-unauthenticated, cluster-unauthenticated, all-authenticated, cluster-authenticated or deny"},
		{names.AnnotationProxyMaxInFlight, "many", "use a positive number of requests"},
		{names.AnnotationProxyCPURequest, "lots", "Kubernetes quantity"},
		{names.AnnotationProxyMemoryLimit, "-1Mi", "Kubernetes quantity"},
	} {
		t.Run(tc.ann+"="+tc.value, func(t *testing.T) {
			meta, spec := testPod(map[string]string{names.AnnotationInject: names.InjectEnabled, tc.ann: tc.value})
			before := spec.DeepCopy()
			changed, _, err := Pod(meta, spec, nil, testConfig())
			if err == nil {
				t.Fatal("no error")
			}
			for _, s := range []string{tc.ann, `"` + tc.value + `"`, tc.want, "on the pod"} {
				if !strings.Contains(err.Error(), s) {
					t.Fatalf("error %q does not say %q", err, s)
				}
			}
			if changed || !reflect.DeepEqual(before, spec) {
				t.Fatal("pod changed despite the error")
			}
		})
	}
	// From the namespace, the error says so.
	meta, spec := testPod(nil)
	_, _, err := Pod(meta, spec, map[string]string{names.AnnotationInject: names.InjectEnabled, names.AnnotationProxyLogLevel: "loud"}, testConfig())
	if err == nil || !strings.Contains(err.Error(), "on the namespace") {
		t.Fatalf("error %v", err)
	}
	// Requests above limits.
	meta, spec = testPod(map[string]string{names.AnnotationInject: names.InjectEnabled, names.AnnotationProxyCPURequest: "2", names.AnnotationProxyCPULimit: "1"})
	_, _, err = Pod(meta, spec, nil, testConfig())
	if err == nil || !strings.Contains(err.Error(), "exceeds its limit") || !strings.Contains(err.Error(), names.AnnotationProxyCPULimit) {
		t.Fatalf("error %v", err)
	}
}

func TestPodIdempotent(t *testing.T) {
	meta, spec := testPod(map[string]string{names.AnnotationInject: names.InjectEnabled})
	if _, _, err := Pod(meta, spec, nil, testConfig()); err != nil {
		t.Fatal(err)
	}
	m1, s1 := meta.DeepCopy(), spec.DeepCopy()
	changed, rep, err := Pod(meta, spec, nil, testConfig())
	if err != nil || changed || rep.Skipped != SkipAlreadyInjected {
		t.Fatalf("second Pod = %v, %+v, %v", changed, rep, err)
	}
	if !reflect.DeepEqual(m1, meta) || !reflect.DeepEqual(s1, spec) {
		t.Fatal("second Pod changed the pod")
	}
	// A pod with a hand-written meridian-proxy counts as injected too.
	meta, spec = testPod(map[string]string{names.AnnotationInject: names.InjectEnabled})
	spec.Containers = append(spec.Containers, corev1.Container{Name: names.ProxyContainerName})
	if changed, rep, _ := Pod(meta, spec, nil, testConfig()); changed || rep.Skipped != SkipAlreadyInjected {
		t.Fatalf("Pod = %v, %+v", changed, rep)
	}
}

func TestPodHostNetwork(t *testing.T) {
	meta, spec := testPod(map[string]string{names.AnnotationInject: names.InjectEnabled})
	spec.HostNetwork = true
	changed, rep, err := Pod(meta, spec, nil, testConfig())
	if err != nil || changed || rep.Skipped != SkipHostNetwork || rep.String() != "skipped: hostNetwork" {
		t.Fatalf("Pod = %v, %+v, %v", changed, rep, err)
	}
}

func TestPodBadConfig(t *testing.T) {
	meta, spec := testPod(map[string]string{names.AnnotationInject: names.InjectEnabled})
	cfg := testConfig()
	cfg.TrustAnchorsPEM = ""
	if _, _, err := Pod(meta, spec, nil, cfg); err == nil || !strings.Contains(err.Error(), "trust anchors") {
		t.Fatalf("error %v", err)
	}
	// A pod that is not injected needs no valid config.
	meta, spec = testPod(nil)
	if _, _, err := Pod(meta, spec, nil, Config{}); err != nil {
		t.Fatal(err)
	}
}

func TestUninjectUndoesPod(t *testing.T) {
	for _, ann := range []map[string]string{nil, {names.AnnotationInject: names.InjectEnabled, "team": "a"}} {
		meta, spec := testPod(ann)
		m0, s0 := meta.DeepCopy(), spec.DeepCopy()
		if _, _, err := Pod(meta, spec, map[string]string{names.AnnotationInject: names.InjectEnabled}, testConfig()); err != nil {
			t.Fatal(err)
		}
		if !Uninject(meta, spec) {
			t.Fatal("Uninject changed nothing")
		}
		if !reflect.DeepEqual(m0, meta) || !reflect.DeepEqual(s0, spec) {
			t.Fatalf("Uninject(Pod(p)) != p:\n%+v\n%+v", meta, spec)
		}
		if Uninject(meta, spec) {
			t.Fatal("second Uninject changed something")
		}
	}
	// Without other init containers or volumes, the lists go away.
	meta := &metav1.ObjectMeta{Annotations: map[string]string{names.AnnotationInject: names.InjectEnabled}}
	spec := &corev1.PodSpec{Containers: []corev1.Container{{Name: "web"}}}
	if _, _, err := Pod(meta, spec, nil, testConfig()); err != nil {
		t.Fatal(err)
	}
	Uninject(meta, spec)
	if spec.InitContainers != nil || spec.Volumes != nil || len(meta.Annotations) != 1 {
		t.Fatalf("left %+v %+v", meta, spec)
	}
}

func TestDiffAndApply(t *testing.T) {
	meta, spec := testPod(map[string]string{names.AnnotationInject: names.InjectEnabled})
	before, _ := json.Marshal(corev1.Pod{ObjectMeta: *meta, Spec: *spec})
	if _, _, err := Pod(meta, spec, nil, testConfig()); err != nil {
		t.Fatal(err)
	}
	after, _ := json.Marshal(corev1.Pod{ObjectMeta: *meta, Spec: *spec})
	ops, err := Diff(before, after, 2)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, op := range ops {
		paths = append(paths, op.Op+" "+op.Path)
	}
	want := []string{"add /metadata/annotations", "add /spec/initContainers", "add /spec/volumes"}
	if !slices.Equal(paths, want) {
		t.Fatalf("ops %v, want %v", paths, want)
	}
	var doc, wantDoc map[string]any
	_ = json.Unmarshal(before, &doc)
	_ = json.Unmarshal(after, &wantDoc)
	if err := Apply(doc, ops); err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(doc)
	exp, _ := json.Marshal(wantDoc)
	if string(got) != string(exp) {
		t.Fatalf("Apply(before, Diff(before, after)) != after")
	}

	// Removal, escaping, and null values.
	ops, err = Diff([]byte(`{"metadata":{"a/b":1,"keep":2}}`), []byte(`{"metadata":{"keep":2,"n":null}}`), 2)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(ops)
	if string(b) != `[{"op":"remove","path":"/metadata/a~1b"},{"op":"add","path":"/metadata/n","value":null}]` {
		t.Fatalf("patch %s", b)
	}
}

// With the controller's identity known, the proxy reaches the control plane
// over TLS and verifies it; without it, the flag is left out.
func TestPodControllerIdentity(t *testing.T) {
	cfg := testConfig()
	cfg.ControllerIdentity = ControllerIdentity("cluster.local", "meridian")
	meta, spec := testPod(map[string]string{names.AnnotationInject: names.InjectEnabled})
	if _, _, err := Pod(meta, spec, nil, cfg); err != nil {
		t.Fatal(err)
	}
	want := "--destination-identity=spiffe://cluster.local/ns/meridian/sa/meridian-controller"
	if args := strings.Join(find(spec.InitContainers, names.ProxyContainerName).Args, " "); !strings.Contains(args, want) {
		t.Errorf("proxy args %q lack %s", args, want)
	}
	meta, spec = testPod(map[string]string{names.AnnotationInject: names.InjectEnabled})
	if _, _, err := Pod(meta, spec, nil, testConfig()); err != nil {
		t.Fatal(err)
	}
	if args := strings.Join(find(spec.InitContainers, names.ProxyContainerName).Args, " "); strings.Contains(args, "--destination-identity") {
		t.Errorf("proxy args %q name a controller identity nobody configured", args)
	}
}

// A memory limit on the proxy becomes its Go runtime's soft limit.
func TestPodGOMEMLIMIT(t *testing.T) {
	meta, spec := testPod(map[string]string{names.AnnotationInject: names.InjectEnabled, names.AnnotationProxyMemoryLimit: "128Mi"})
	if _, _, err := Pod(meta, spec, nil, testConfig()); err != nil {
		t.Fatal(err)
	}
	var got *corev1.EnvVar
	for i, e := range find(spec.InitContainers, names.ProxyContainerName).Env {
		if e.Name == "GOMEMLIMIT" {
			got = &find(spec.InitContainers, names.ProxyContainerName).Env[i]
		}
	}
	if got == nil || got.ValueFrom == nil || got.ValueFrom.ResourceFieldRef == nil ||
		got.ValueFrom.ResourceFieldRef.Resource != "limits.memory" || got.ValueFrom.ResourceFieldRef.ContainerName != names.ProxyContainerName {
		t.Fatalf("GOMEMLIMIT = %+v, want limits.memory of %s", got, names.ProxyContainerName)
	}
	meta, spec = testPod(map[string]string{names.AnnotationInject: names.InjectEnabled})
	if _, _, err := Pod(meta, spec, nil, testConfig()); err != nil {
		t.Fatal(err)
	}
	for _, e := range find(spec.InitContainers, names.ProxyContainerName).Env {
		if e.Name == "GOMEMLIMIT" {
			t.Error("GOMEMLIMIT set without a memory limit")
		}
	}
}

// The default inbound policy: the config's, the namespace's over it, the
// pod's over both; the application's HTTP and gRPC probes are always
// allowed, named ports resolved, the query string dropped; the cluster
// networks passed on.
func TestPodDefaultInboundPolicy(t *testing.T) {
	cfg := testConfig()
	cfg.DefaultInboundPolicy = "cluster-unauthenticated"
	cfg.ClusterNetworks = "10.0.0.0/8,fd00::/8"
	policyArgs := func(podAnn, nsAnn map[string]string) []string {
		t.Helper()
		meta, spec := testPod(podAnn)
		web := &spec.Containers[0]
		web.LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz?full=1", Port: intstr.FromString("http")}}}
		web.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "ready", Port: intstr.FromInt32(9090)}}}
		web.StartupProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}}}
		spec.Containers = append(spec.Containers, corev1.Container{Name: "api", Image: "api:1",
			LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 9000}}}})
		if _, _, err := Pod(meta, spec, nsAnn, cfg); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, a := range find(spec.InitContainers, names.ProxyContainerName).Args {
			if strings.HasPrefix(a, "--default-inbound-policy=") || strings.HasPrefix(a, "--probe-paths=") || strings.HasPrefix(a, "--cluster-networks=") {
				out = append(out, a)
			}
		}
		return out
	}
	probes := "--probe-paths=8080/healthz,9090/ready,9000/grpc.health.v1.Health/Check"
	nets := "--cluster-networks=10.0.0.0/8,fd00::/8"
	for _, c := range []struct {
		pod, ns map[string]string
		want    string
	}{
		{map[string]string{names.AnnotationInject: names.InjectEnabled}, nil, "cluster-unauthenticated"},
		{nil, map[string]string{names.AnnotationInject: names.InjectEnabled, names.AnnotationDefaultInbound: "all-authenticated"}, "all-authenticated"},
		{map[string]string{names.AnnotationDefaultInbound: "deny"}, map[string]string{names.AnnotationInject: names.InjectEnabled, names.AnnotationDefaultInbound: "all-authenticated"}, "deny"},
	} {
		want := []string{"--default-inbound-policy=" + c.want, nets, probes}
		if got := policyArgs(c.pod, c.ns); !slices.Equal(got, want) {
			t.Errorf("pod %v, namespace %v: %q, want %q", c.pod, c.ns, got, want)
		}
	}
	cfg.DefaultInboundPolicy = "open"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "default inbound policy") {
		t.Fatalf("a bad default policy in the config: %v", err)
	}
	cfg.DefaultInboundPolicy, cfg.ClusterNetworks = "", "10.0.0.0"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), `"10.0.0.0" is not a CIDR`) {
		t.Fatalf("bad cluster networks in the config: %v", err)
	}
}
