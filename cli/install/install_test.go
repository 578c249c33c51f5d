package install

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/cli/values"
	"helm.sh/helm/v3/pkg/getter"
	"helm.sh/helm/v3/pkg/releaseutil"
	"sigs.k8s.io/yaml"

	"github.com/meridian-mesh/meridian/controlplane/identity"
)

// issuerFiles writes a generated issuer as the three files install takes,
// and returns Options naming them.
func issuerFiles(t *testing.T) Options {
	t.Helper()
	id, err := GenerateIssuer(spiffeid.RequireTrustDomainFromString("cluster.local"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	o := Options{
		TrustAnchorsFile: filepath.Join(dir, "ca.crt"),
		IssuerCertFile:   filepath.Join(dir, "issuer.crt"),
		IssuerKeyFile:    filepath.Join(dir, "issuer.key"),
	}
	for f, s := range map[string]string{o.TrustAnchorsFile: id.TrustAnchorsPEM, o.IssuerCertFile: id.IssuerCrtPEM, o.IssuerKeyFile: id.IssuerKeyPEM} {
		if err := os.WriteFile(f, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return o
}

func renderOut(t *testing.T, o Options) string {
	t.Helper()
	ms, err := Install(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := Write(&b, ms); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// object is one decoded document of a YAML stream, with its # Source.
type object struct {
	source string
	obj    map[string]any
}

func (o object) kind() string { return o.obj["kind"].(string) }
func (o object) name() string { return str(o.obj, "metadata", "name") }
func (o object) key() string {
	return fmt.Sprintf("%s %s %s/%s", o.obj["apiVersion"], o.kind(), str(o.obj, "metadata", "namespace"), o.name())
}

// parse splits a YAML stream at its "---" lines and decodes each document.
func parse(t *testing.T, stream string) []object {
	t.Helper()
	var out []object
	for _, doc := range strings.Split(stream, "\n---\n") {
		doc = strings.TrimPrefix(doc, "---\n")
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var o object
		if first, _, ok := strings.Cut(doc, "\n"); ok && strings.HasPrefix(first, "# Source: ") {
			o.source = strings.TrimPrefix(first, "# Source: ")
		}
		if err := yaml.Unmarshal([]byte(doc), &o.obj); err != nil {
			t.Fatalf("%s: %v\n%s", o.source, err, doc)
		}
		if o.obj == nil {
			continue
		}
		out = append(out, o)
	}
	return out
}

func find(t *testing.T, objs []object, kind, name string) map[string]any {
	t.Helper()
	for _, o := range objs {
		if o.kind() == kind && o.name() == name {
			return o.obj
		}
	}
	t.Fatalf("no %s %s among the objects", kind, name)
	return nil
}

// get walks maps and lists ("0" indexes a list).
func get(v any, path ...string) any {
	for _, p := range path {
		switch x := v.(type) {
		case map[string]any:
			v = x[p]
		case []any:
			var i int
			if _, err := fmt.Sscan(p, &i); err != nil || i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

func str(v any, path ...string) string {
	s, _ := get(v, path...).(string)
	return s
}

func controllerContainer(t *testing.T, objs []object) map[string]any {
	t.Helper()
	d := find(t, objs, "Deployment", "meridian-controller")
	c, _ := get(d, "spec", "template", "spec", "containers", "0").(map[string]any)
	if c == nil || c["name"] != "controller" {
		t.Fatalf("the Deployment's first container is not controller: %v", c)
	}
	return c
}

func TestRenderIsDeterministicAndOrdered(t *testing.T) {
	o := issuerFiles(t)
	a, b := renderOut(t, o), renderOut(t, o)
	if a != b {
		t.Fatal("two renders with the same issuer differ")
	}
	if !strings.HasPrefix(a, "---\n# Source: meridian/templates/") {
		t.Fatalf("output does not start with a document and its source:\n%.200s", a)
	}
	docs := strings.Split(strings.TrimPrefix(a, "---\n"), "\n---\n")
	for _, d := range docs {
		if !strings.HasPrefix(d, "# Source: meridian/templates/") {
			t.Errorf("a document without its # Source line:\n%.200s", d)
		}
	}
	objs := parse(t, a)
	if len(objs) != len(docs) {
		t.Fatalf("%d documents, %d objects", len(docs), len(objs))
	}
	// Helm's install order by kind, then name.
	rank := func(kind string) int {
		if i := slices.Index(releaseutil.InstallOrder, kind); i >= 0 {
			return i
		}
		return len(releaseutil.InstallOrder)
	}
	var got []string
	for i, ob := range objs {
		got = append(got, ob.kind()+"/"+ob.name())
		if i == 0 {
			continue
		}
		p := objs[i-1]
		if rank(p.kind()) > rank(ob.kind()) || (p.kind() == ob.kind() && p.name() > ob.name()) {
			t.Errorf("%s/%s before %s/%s: not in install order", p.kind(), p.name(), ob.kind(), ob.name())
		}
	}
	want := []string{
		"Namespace/meridian",
		"ServiceAccount/meridian-controller",
		"Secret/meridian-identity-issuer",
		"ClusterRole/meridian-controller",
		"ClusterRoleBinding/meridian-controller",
		"Role/meridian-controller",
		"RoleBinding/meridian-controller",
		"Service/meridian-controller",
		"Deployment/meridian-controller",
		"MutatingWebhookConfiguration/meridian-proxy-injector",
	}
	if !slices.Equal(got, want) {
		t.Errorf("objects:\n got %v\nwant %v", got, want)
	}
}

// The defaults follow docs/kubernetes.md.
func TestRenderDefaults(t *testing.T) {
	o := issuerFiles(t)
	o.Version = "v1.2.3"
	objs := parse(t, renderOut(t, o))

	ns := find(t, objs, "Namespace", "meridian")
	if str(ns, "metadata", "labels", "meridian.io/is-control-plane") != "true" || str(ns, "metadata", "annotations", "meridian.io/inject") != "disabled" {
		t.Errorf("Namespace labels/annotations: %v", ns["metadata"])
	}
	d := find(t, objs, "Deployment", "meridian-controller")
	for _, labels := range []any{get(d, "metadata", "labels"), get(d, "spec", "template", "metadata", "labels")} {
		for k, v := range map[string]string{
			"app.kubernetes.io/name":              "meridian-controller",
			"app.kubernetes.io/part-of":           "meridian",
			"meridian.io/control-plane-component": "controller",
			"meridian.io/control-plane-version":   "v1.2.3",
		} {
			if str(labels, k) != v {
				t.Errorf("label %s = %q, want %q", k, str(labels, k), v)
			}
		}
	}
	c := controllerContainer(t, objs)
	if c["image"] != "ghcr.io/meridian-mesh/controller:v1.2.3" || c["imagePullPolicy"] != "IfNotPresent" {
		t.Errorf("image %v %v", c["image"], c["imagePullPolicy"])
	}
	var args []string
	for _, a := range c["args"].([]any) {
		args = append(args, a.(string))
	}
	wantArgs := []string{"--store=kube",
		"--destination-addr=:8086", "--admin-addr=:9996",
		"--identity-issuer-dir=/var/run/meridian/identity/issuer",
		"--trust-domain=cluster.local", "--api-identity=spiffe://cluster.local/ns/meridian/sa/meridian-controller", "--cluster-domain=cluster.local",
		"--webhook-addr=:8443", "--webhook-secret=meridian-proxy-injector-tls",
		"--webhook-config=meridian-proxy-injector", "--webhook-service=meridian-controller",
		"--namespace=$(POD_NAMESPACE)", "--leader-election-lease=meridian-controller",
		"--proxy-image=ghcr.io/meridian-mesh/proxy:v1.2.3",
		"--proxy-init-image=ghcr.io/meridian-mesh/proxy-init:v1.2.3",
		"--control-plane-version=v1.2.3", "--log-level=info",
		"--default-inbound-policy=all-unauthenticated",
		"--cluster-networks=10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8",
		"--proxy-cpu-request=10m", "--proxy-memory-request=20Mi", "--proxy-memory-limit=250Mi"}
	if !slices.Equal(args, wantArgs) {
		t.Errorf("args:\n got %q\nwant %q", args, wantArgs)
	}
	if str(c, "env", "0", "name") != "POD_NAMESPACE" || str(c, "env", "0", "valueFrom", "fieldRef", "fieldPath") != "metadata.namespace" {
		t.Errorf("POD_NAMESPACE: %v", get(c, "env", "0"))
	}
	if str(c, "env", "1", "name") != "GOMEMLIMIT" || str(c, "env", "1", "valueFrom", "resourceFieldRef", "resource") != "limits.memory" {
		t.Errorf("GOMEMLIMIT: %v", get(c, "env", "1"))
	}
	if str(c, "readinessProbe", "httpGet", "path") != "/ready" || str(c, "livenessProbe", "httpGet", "path") != "/live" {
		t.Errorf("probes: %v %v", c["readinessProbe"], c["livenessProbe"])
	}
	sc := c["securityContext"]
	if get(sc, "runAsNonRoot") != true || get(sc, "runAsUser") != float64(2103) || get(sc, "readOnlyRootFilesystem") != true ||
		str(sc, "capabilities", "drop", "0") != "ALL" || str(sc, "seccompProfile", "type") != "RuntimeDefault" || get(sc, "allowPrivilegeEscalation") != false {
		t.Errorf("securityContext: %v", sc)
	}
	if str(c, "volumeMounts", "0", "mountPath") != "/var/run/meridian/identity/issuer" ||
		str(d, "spec", "template", "spec", "volumes", "0", "secret", "secretName") != "meridian-identity-issuer" {
		t.Errorf("issuer volume: %v", get(d, "spec", "template", "spec", "volumes"))
	}

	svc := find(t, objs, "Service", "meridian-controller")
	ports := map[string][2]any{}
	for _, p := range get(svc, "spec", "ports").([]any) {
		ports[str(p, "name")] = [2]any{get(p, "port"), get(p, "targetPort")}
	}
	wantPorts := map[string][2]any{"grpc": {float64(8086), "grpc"}, "webhook": {float64(443), "webhook"}, "admin": {float64(9996), "admin"}}
	if !reflect.DeepEqual(ports, wantPorts) {
		t.Errorf("Service ports %v, want %v", ports, wantPorts)
	}
	cports := map[string]any{}
	for _, p := range c["ports"].([]any) {
		cports[str(p, "name")] = get(p, "containerPort")
	}
	if !reflect.DeepEqual(cports, map[string]any{"grpc": float64(8086), "webhook": float64(8443), "admin": float64(9996)}) {
		t.Errorf("container ports %v", cports)
	}

	wh := find(t, objs, "MutatingWebhookConfiguration", "meridian-proxy-injector")
	w := get(wh, "webhooks", "0")
	if str(w, "name") != "inject.meridian.io" || str(w, "failurePolicy") != "Ignore" || str(w, "sideEffects") != "None" ||
		str(w, "reinvocationPolicy") != "Never" || get(w, "timeoutSeconds") != float64(10) ||
		str(w, "clientConfig", "service", "path") != "/inject" || str(w, "clientConfig", "service", "name") != "meridian-controller" ||
		str(w, "clientConfig", "service", "namespace") != "meridian" {
		t.Errorf("webhook: %v", w)
	}
	if get(w, "clientConfig", "caBundle") != nil || get(w, "objectSelector") != nil {
		t.Errorf("webhook: caBundle and objectSelector must be left out: %v", w)
	}
	sel, _ := yaml.Marshal(get(w, "namespaceSelector"))
	if !strings.Contains(string(sel), "meridian.io/is-control-plane") || !strings.Contains(string(sel), "kube-system") {
		t.Errorf("namespaceSelector: %s", sel)
	}

	sec := find(t, objs, "Secret", "meridian-identity-issuer")
	if sec["type"] != "kubernetes.io/tls" {
		t.Errorf("Secret type %v", sec["type"])
	}
	for k, f := range map[string]string{"ca.crt": o.TrustAnchorsFile, "tls.crt": o.IssuerCertFile, "tls.key": o.IssuerKeyFile} {
		want, _ := os.ReadFile(f)
		got, err := base64.StdEncoding.DecodeString(str(sec, "data", k))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("Secret %s is not the file %s (%v)", k, f, err)
		}
	}
}

// The ClusterRole reads every meridian.io CRD in the chart and nothing
// more than the controller's store watches and the gateway and Rollout
// reconcilers write.
func TestRBACIsLeastPrivilege(t *testing.T) {
	objs := parse(t, renderOut(t, issuerFiles(t)))
	cr := find(t, objs, "ClusterRole", "meridian-controller")
	rules := map[string][]string{} // "group/resource[names]" -> verbs
	for _, r := range cr["rules"].([]any) {
		for _, g := range get(r, "apiGroups").([]any) {
			for _, res := range get(r, "resources").([]any) {
				k := g.(string) + "/" + res.(string)
				if n, ok := get(r, "resourceNames").([]any); ok {
					k += fmt.Sprint(n)
				}
				for _, v := range get(r, "verbs").([]any) {
					rules[k] = append(rules[k], v.(string))
				}
			}
		}
	}
	read := []string{"get", "list", "watch"}
	apply := []string{"create", "patch"}
	want := map[string][]string{
		"/namespaces":      read,
		"/pods":            append(read, "patch"), // the Rollout's role metadata (canaryMetadata, ...)
		"/serviceaccounts": append(read, apply...),
		"/services":        append(read, apply...),
		"/configmaps":      read,
		"/secrets":         read,
		"apps/deployments": {"get", "create", "patch", "list", "watch"},
		// The Rollout reconciler.
		"apps/replicasets":                   {"list", "watch", "create", "patch", "delete"},
		"meridian.io/rollouts/status":        {"update"},
		"meridian.io/rollouts/finalizers":    {"update"},
		"/pods/eviction":                     {"create"},
		"discovery.k8s.io/endpointslices":    read,
		"split.smi-spec.io/trafficsplits":    append(read, "create", "update", "delete"),
		"authentication.k8s.io/tokenreviews": {"create"},
		"admissionregistration.k8s.io/mutatingwebhookconfigurations[meridian-proxy-injector]": {"get", "patch"},
		"apiextensions.k8s.io/customresourcedefinitions[trafficsplits.split.smi-spec.io]":     {"get", "patch"},
		// The AnalysisRun runner.
		"meridian.io/analysisruns/status":     {"update"},
		"meridian.io/analysisruns/finalizers": {"update"},
		"batch/jobs":                          {"get", "list", "watch", "create", "delete"},
	}
	for _, k := range []string{"backendtlspolicies", "gatewayclasses", "gateways", "grpcroutes", "httproutes", "listenersets", "referencegrants", "tcproutes", "tlsroutes", "udproutes"} {
		want["gateway.networking.k8s.io/"+k] = read
		if k != "referencegrants" {
			want["gateway.networking.k8s.io/"+k+"/status"] = []string{"update"}
		}
	}
	// The httpRoute traffic router sets a Rollout's weights on the route.
	want["gateway.networking.k8s.io/httproutes"] = append(read, "update")
	ch, err := LoadChart("")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range CRDs(ch) {
		var crd map[string]any
		if err := yaml.Unmarshal([]byte(c.Content), &crd); err != nil {
			t.Fatal(err)
		}
		if str(crd, "spec", "group") == "meridian.io" {
			want["meridian.io/"+str(crd, "spec", "names", "plural")] = read
		}
	}
	// Runs beyond a Rollout's history limits are deleted.
	want["meridian.io/analysisruns"] = append(want["meridian.io/analysisruns"], "create", "patch", "delete")
	if _, ok := want["meridian.io/serviceprofiles"]; !ok {
		t.Error("no meridian.io/serviceprofiles CRD in the chart")
	}
	if !reflect.DeepEqual(rules, want) {
		t.Errorf("ClusterRole rules:\n got %v\nwant %v", rules, want)
	}
	role := find(t, objs, "Role", "meridian-controller")
	got, _ := yaml.Marshal(role["rules"])
	wantRole := `- apiGroups:
  - ""
  resources:
  - secrets
  verbs:
  - create
- apiGroups:
  - ""
  resourceNames:
  - meridian-proxy-injector-tls
  resources:
  - secrets
  verbs:
  - get
  - update
- apiGroups:
  - coordination.k8s.io
  resources:
  - leases
  verbs:
  - create
- apiGroups:
  - coordination.k8s.io
  resourceNames:
  - meridian-controller
  resources:
  - leases
  verbs:
  - get
  - update
`
	if string(got) != wantRole {
		t.Errorf("Role rules:\n%s\nwant\n%s", got, wantRole)
	}
}

func TestOverrides(t *testing.T) {
	o := issuerFiles(t)
	vf := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(vf, []byte(`
controller:
  replicas: 2
  resources:
    requests: {cpu: 250m, memory: 300Mi}
    limits: {cpu: "1", memory: 1Gi}
image:
  registry: registry.example.com:5000/mesh
`), 0o600); err != nil {
		t.Fatal(err)
	}
	o.Values = ValueOptions{
		ValueFiles: []string{vf},
		Values:     []string{"controller.replicas=3", "image.tag=v9.9.9,namespace=mesh-system", "controller.logLevel=debug"},
	}
	objs := parse(t, renderOut(t, o))
	d := find(t, objs, "Deployment", "meridian-controller")
	if get(d, "spec", "replicas") != float64(3) {
		t.Errorf("replicas %v, want 3 (--set wins over -f)", get(d, "spec", "replicas"))
	}
	if str(d, "metadata", "namespace") != "mesh-system" {
		t.Errorf("namespace %v", get(d, "metadata", "namespace"))
	}
	c := controllerContainer(t, objs)
	if c["image"] != "registry.example.com:5000/mesh/controller:v9.9.9" {
		t.Errorf("image %v", c["image"])
	}
	args, _ := yaml.Marshal(c["args"])
	for _, a := range []string{"--proxy-image=registry.example.com:5000/mesh/proxy:v9.9.9", "--proxy-init-image=registry.example.com:5000/mesh/proxy-init:v9.9.9", "--control-plane-version=v9.9.9", "--log-level=debug"} {
		if !strings.Contains(string(args), a) {
			t.Errorf("args lack %s:\n%s", a, args)
		}
	}
	res, _ := yaml.Marshal(c["resources"])
	wantRes := "limits:\n  cpu: \"1\"\n  memory: 1Gi\nrequests:\n  cpu: 250m\n  memory: 300Mi\n"
	if string(res) != wantRes {
		t.Errorf("resources:\n%s\nwant\n%s", res, wantRes)
	}
	for _, ob := range objs {
		if ns := str(ob.obj, "metadata", "namespace"); ns != "" && ns != "mesh-system" {
			t.Errorf("%s in namespace %s", ob.key(), ns)
		}
	}
	find(t, objs, "Namespace", "mesh-system")
	w := find(t, objs, "MutatingWebhookConfiguration", "meridian-proxy-injector")
	if str(w, "webhooks", "0", "clientConfig", "service", "namespace") != "mesh-system" {
		t.Errorf("webhook service namespace: %v", get(w, "webhooks", "0", "clientConfig"))
	}
	sub := str(find(t, objs, "ClusterRoleBinding", "meridian-controller"), "subjects", "0", "namespace")
	if sub != "mesh-system" {
		t.Errorf("ClusterRoleBinding subject namespace %s", sub)
	}
}

// The issuer given as values (--set-file, as with helm) rather than as
// the --identity-*-file flags renders the same.
func TestIdentityAsValues(t *testing.T) {
	o := issuerFiles(t)
	want := renderOut(t, o)
	v := Options{Values: ValueOptions{FileValues: []string{
		"identity.trustAnchorsPEM=" + o.TrustAnchorsFile,
		"identity.issuer.tlsCrtPEM=" + o.IssuerCertFile,
		"identity.issuer.tlsKeyPEM=" + o.IssuerKeyFile,
	}}}
	if got := renderOut(t, v); got != want {
		t.Error("--set-file identity values render differently from the --identity-*-file flags")
	}
	// Both at once is refused.
	o.Values = v.Values
	if _, err := Install(context.Background(), o); err == nil || !strings.Contains(err.Error(), "given twice") {
		t.Errorf("issuer given twice: %v", err)
	}
}

func TestGeneratesIssuer(t *testing.T) {
	var log bytes.Buffer
	objs := parse(t, renderOut(t, Options{Log: &log, Values: ValueOptions{Values: []string{"identity.trustDomain=example.org"}}}))
	if !strings.Contains(log.String(), "generated an identity trust anchor") || !strings.Contains(log.String(), "example.org") {
		t.Errorf("no word of the generated issuer: %q", log.String())
	}
	sec := find(t, objs, "Secret", "meridian-identity-issuer")
	pemOf := func(k string) []byte {
		b, err := base64.StdEncoding.DecodeString(str(sec, "data", k))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	td := spiffeid.RequireTrustDomainFromString("example.org")
	ca, err := identity.Parse(td, pemOf("tls.crt"), pemOf("tls.key"), pemOf("ca.crt"))
	if err != nil {
		t.Fatalf("the generated issuer does not load as the controller loads it: %v", err)
	}
	years := func(c *x509.Certificate) float64 { return c.NotAfter.Sub(c.NotBefore).Hours() / 24 / 365 }
	if y := years(ca.Roots[0]); y < 9.9 || y > 10.1 {
		t.Errorf("trust anchor valid %.1f years, want 10", y)
	}
	if y := years(ca.Issuer); y < 0.99 || y > 1.01 {
		t.Errorf("issuer valid %.2f years, want 1", y)
	}
	for _, c := range []*x509.Certificate{ca.Roots[0], ca.Issuer} {
		if k, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
			t.Errorf("%s: key is not ECDSA P-256", c.Subject)
		}
		if len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://example.org" {
			t.Errorf("%s: URIs %v", c.Subject, c.URIs)
		}
	}
	if time.Until(ca.Issuer.NotAfter) < 364*24*time.Hour {
		t.Errorf("issuer expires %v", ca.Issuer.NotAfter)
	}
}

func TestIdentityErrors(t *testing.T) {
	good := issuerFiles(t)
	other := issuerFiles(t)
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "x")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"one file", Options{TrustAnchorsFile: good.TrustAnchorsFile}, "go together"},
		{"missing file", Options{TrustAnchorsFile: filepath.Join(dir, "nope"), IssuerCertFile: good.IssuerCertFile, IssuerKeyFile: good.IssuerKeyFile}, "no such file"},
		{"key of another issuer", Options{TrustAnchorsFile: good.TrustAnchorsFile, IssuerCertFile: good.IssuerCertFile, IssuerKeyFile: other.IssuerKeyFile}, "tls.key does not match tls.crt"},
		{"issuer of another anchor", Options{TrustAnchorsFile: other.TrustAnchorsFile, IssuerCertFile: good.IssuerCertFile, IssuerKeyFile: good.IssuerKeyFile}, "does not chain to ca.crt"},
		{"not PEM", Options{TrustAnchorsFile: good.TrustAnchorsFile, IssuerCertFile: notPEM, IssuerKeyFile: good.IssuerKeyFile}, "tls.crt: no certificate"},
		{"one value missing", Options{Values: ValueOptions{FileValues: []string{
			"identity.trustAnchorsPEM=" + good.TrustAnchorsFile, "identity.issuer.tlsCrtPEM=" + good.IssuerCertFile}}},
			"identity.issuer.tlsKeyPEM is required (the identity issuer's trust anchors, certificate and key) unless identity.externalIssuer=true"},
		{"bad trust domain", Options{Values: ValueOptions{Values: []string{"identity.trustDomain=Not Valid"}}}, "/identity/trustDomain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Install(context.Background(), tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
}

// The chart itself (as helm renders it, with no issuer generated) fails
// with a message naming the missing value.
func TestChartFailsWithoutIssuer(t *testing.T) {
	ch, err := LoadChart("")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Render(ch, nil)
	if err == nil || !strings.Contains(err.Error(), "identity.issuer.tlsCrtPEM is required") || !strings.Contains(err.Error(), "identity.externalIssuer=true") {
		t.Fatalf("error %v, want one naming identity.issuer.tlsCrtPEM", err)
	}
	id, err := GenerateIssuer(spiffeid.RequireTrustDomainFromString("cluster.local"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Render(ch, map[string]any{"identity": map[string]any{
		"trustAnchorsPEM": id.TrustAnchorsPEM,
		"issuer":          map[string]any{"tlsCrtPEM": id.IssuerCrtPEM, "tlsKeyPEM": "not a key"},
	}})
	if err == nil || !strings.Contains(err.Error(), "identity.issuer.tlsKeyPEM must hold a PEM private key") {
		t.Fatalf("error %v, want one about identity.issuer.tlsKeyPEM", err)
	}
}

func TestExternalIssuer(t *testing.T) {
	var log bytes.Buffer
	objs := parse(t, renderOut(t, Options{Log: &log, Values: ValueOptions{Values: []string{"identity.externalIssuer=true"}}}))
	for _, o := range objs {
		if o.kind() == "Secret" {
			t.Errorf("a Secret with an external issuer: %s", o.name())
		}
	}
	if log.Len() != 0 {
		t.Errorf("install said %q", log.String())
	}
	d := find(t, objs, "Deployment", "meridian-controller")
	if str(d, "spec", "template", "spec", "volumes", "0", "secret", "secretName") != "meridian-identity-issuer" {
		t.Error("the controller does not mount the external issuer's Secret")
	}
}

func TestSchemaRejectsBadValues(t *testing.T) {
	o := issuerFiles(t)
	for _, tc := range []struct {
		set  string
		want string
	}{
		{"controller.replicas=many", "/controller/replicas"},
		{"controller.replicas=0", "/controller/replicas"},
		{"controler.replicas=2", "'controler'"},
		{"image.pullPolicy=Sometimes", "/image/pullPolicy"},
		{"image.tag=not a tag", "/image/tag"},
		{"controller.resources.limits.memory=lots", "/controller/resources/limits/memory"},
		{"controller.resources.limits.gpu=1", "'gpu'"},
		{"namespace=Not_A_Namespace", "/namespace"},
		{"controller.logLevel=verbose", "/controller/logLevel"},
		{"identity.externalIssuer=maybe", "/identity/externalIssuer"},
		{"proxy.defaultInboundPolicy=open", "/proxy/defaultInboundPolicy"},
		{"clusterNetworks=everywhere", "/clusterNetworks"},
	} {
		t.Run(tc.set, func(t *testing.T) {
			o := o
			o.Values = ValueOptions{Values: []string{tc.set}}
			_, err := Install(context.Background(), o)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "schema") {
				t.Errorf("--set %s: error %v, want the schema naming %s", tc.set, err, tc.want)
			}
		})
	}
	// Render alone (the path helm takes) checks the schema too.
	ch, err := LoadChart("")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Render(ch, map[string]any{"controller": map[string]any{"replicas": "three"}})
	if err == nil || !strings.Contains(err.Error(), "/controller/replicas") {
		t.Errorf("Render: %v", err)
	}
}

func TestCRDs(t *testing.T) {
	ms, err := Options{}.CRDs()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := Write(&b, ms); err != nil {
		t.Fatal(err)
	}
	got := parse(t, b.String())
	// Meridian's CRDs and, in crds/gateway-api/, the Gateway API's, in
	// the order of their paths in the chart.
	files, err := filepath.Glob("../../charts/meridian/crds/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs in charts/meridian/crds (%v)", err)
	}
	gw, err := filepath.Glob("../../charts/meridian/crds/gateway-api/*.yaml")
	if err != nil || len(gw) == 0 {
		t.Fatalf("no CRDs in charts/meridian/crds/gateway-api (%v)", err)
	}
	files = append(files, gw...)
	slices.Sort(files)
	if len(got) != len(files) {
		t.Fatalf("%d CRDs printed, %d files", len(got), len(files))
	}
	for i, f := range files {
		if got[i].kind() != "CustomResourceDefinition" {
			t.Errorf("%s is a %s", got[i].source, got[i].kind())
		}
		if want := strings.TrimPrefix(f, "../../charts/"); got[i].source != want {
			t.Errorf("source %s, want %s", got[i].source, want)
		}
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var want map[string]any
		if err := yaml.Unmarshal(raw, &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got[i].obj, want) {
			t.Errorf("%s differs from %s", got[i].source, f)
		}
		// Byte for byte, but for the file's leading "---".
		if !strings.Contains(b.String(), strings.TrimSpace(strings.TrimPrefix(string(raw), "---\n"))) {
			t.Errorf("%s is not printed as it is", f)
		}
	}
}

func TestUninstall(t *testing.T) {
	o := issuerFiles(t)
	inst := parse(t, renderOut(t, o))
	ms, err := Uninstall(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := Write(&b, ms); err != nil {
		t.Fatal(err)
	}
	un := parse(t, b.String())
	var a, u []string
	for _, x := range inst {
		a = append(a, x.key())
	}
	for _, x := range un {
		u = append(u, x.key())
		for k := range x.obj {
			if k != "apiVersion" && k != "kind" && k != "metadata" {
				t.Errorf("%s: uninstall prints %s", x.key(), k)
			}
		}
		if !strings.HasPrefix(x.source, "meridian/templates/") {
			t.Errorf("%s: source %q", x.key(), x.source)
		}
	}
	// Helm's uninstall order: the namespaced objects before their
	// Namespace, kinds Helm does not rank (the webhook configuration) last.
	want := []string{"Service", "Deployment", "RoleBinding", "Role", "ClusterRoleBinding", "ClusterRole", "Secret", "ServiceAccount", "Namespace", "MutatingWebhookConfiguration"}
	var kinds []string
	for _, x := range un {
		kinds = append(kinds, x.kind())
	}
	if !slices.Equal(kinds, want) {
		t.Errorf("uninstall order %v, want %v", kinds, want)
	}
	slices.Sort(a)
	slices.Sort(u)
	if !slices.Equal(a, u) {
		t.Errorf("uninstall objects\n %v\ninstall objects\n %v", u, a)
	}
}

// helmInstall is `helm install --dry-run` (client only, as `helm template`):
// Helm's own install action over the chart directory on disk.
func helmInstall(t *testing.T, appVersion string, vals map[string]any) (string, error) {
	t.Helper()
	ch, err := loader.Load("../../charts/meridian")
	if err != nil {
		t.Fatal(err)
	}
	if appVersion != "" {
		ch.Metadata.AppVersion = appVersion
	}
	cfg := &action.Configuration{Log: func(string, ...any) {}}
	in := action.NewInstall(cfg)
	in.DryRun = true
	in.ClientOnly = true
	in.ReleaseName = ReleaseName
	in.Namespace = "default"
	in.KubeVersion = &Capabilities().KubeVersion
	rel, err := in.RunWithContext(context.Background(), ch, vals)
	if err != nil {
		return "", err
	}
	return rel.Manifest, nil
}

// `meridian install` prints exactly the objects `helm install` makes from
// the chart directory with the same values.
func TestSameObjectsAsHelmInstall(t *testing.T) {
	o := issuerFiles(t)
	vf := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(vf, []byte("controller:\n  replicas: 2\n  tolerations: [{key: dedicated, operator: Exists}]\nimage:\n  registry: registry.example.com/mesh\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		vals ValueOptions
	}{
		{"defaults", ValueOptions{}},
		{"values file and --set", ValueOptions{ValueFiles: []string{vf}, Values: []string{"namespace=mesh", "image.tag=v2.0.0", "controller.resources.limits.cpu=2"}, StringValues: []string{"controller.logLevel=debug"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := o
			o.Values = tc.vals
			o.Version = "v1.0.0"
			ours := parse(t, renderOut(t, o))

			// Helm gets the same values through its own flag handling
			// (helm's pkg/cli/values: -f, --set, --set-file), and the
			// issuer as values from the same files.
			hv := values.Options{
				ValueFiles:   tc.vals.ValueFiles,
				Values:       tc.vals.Values,
				StringValues: tc.vals.StringValues,
				FileValues: []string{
					"identity.trustAnchorsPEM=" + o.TrustAnchorsFile,
					"identity.issuer.tlsCrtPEM=" + o.IssuerCertFile,
					"identity.issuer.tlsKeyPEM=" + o.IssuerKeyFile,
				},
			}
			vals, err := hv.MergeValues(getter.Providers{})
			if err != nil {
				t.Fatal(err)
			}
			manifest, err := helmInstall(t, "v1.0.0", vals)
			if err != nil {
				t.Fatal(err)
			}
			theirs := parse(t, manifest)
			index := func(objs []object) map[string]object {
				m := map[string]object{}
				for _, x := range objs {
					if _, dup := m[x.key()]; dup {
						t.Errorf("%s twice", x.key())
					}
					m[x.key()] = x
				}
				return m
			}
			a, b := index(ours), index(theirs)
			if len(a) != len(b) {
				t.Errorf("meridian install: %d objects, helm install: %d", len(a), len(b))
			}
			for k, x := range a {
				y, ok := b[k]
				if !ok {
					t.Errorf("%s: not made by helm install", k)
					continue
				}
				if x.source != y.source {
					t.Errorf("%s: source %s, helm %s", k, x.source, y.source)
				}
				if !reflect.DeepEqual(x.obj, y.obj) {
					xa, _ := yaml.Marshal(x.obj)
					ya, _ := yaml.Marshal(y.obj)
					t.Errorf("%s differs:\nmeridian install:\n%s\nhelm install:\n%s", k, xa, ya)
				}
			}
			for k := range b {
				if _, ok := a[k]; !ok {
					t.Errorf("%s: made by helm install only", k)
				}
			}
		})
	}
}

// helm install (a values file, no issuer) fails with the chart's message,
// and with the schema's for a bad value.
func TestHelmInstallChecks(t *testing.T) {
	_, err := helmInstall(t, "", map[string]any{"controller": map[string]any{"replicas": 2}})
	if err == nil || !strings.Contains(err.Error(), "identity.issuer.tlsCrtPEM is required") {
		t.Errorf("helm install without an issuer: %v", err)
	}
	_, err = helmInstall(t, "", map[string]any{"image": map[string]any{"pullPolicy": "Sometimes"}, "identity": map[string]any{"externalIssuer": true}})
	if err == nil || !strings.Contains(err.Error(), "/image/pullPolicy") {
		t.Errorf("helm install with a bad value: %v", err)
	}
	m, err := helmInstall(t, "", map[string]any{"identity": map[string]any{"externalIssuer": true}})
	if err != nil {
		t.Fatalf("helm install with an external issuer: %v", err)
	}
	if c := controllerContainer(t, parse(t, m)); c["image"] != "ghcr.io/meridian-mesh/controller:dev" {
		t.Errorf("helm install image %v, want the chart's appVersion dev", c["image"])
	}
}

// The issuer in the Secret is the PEM of the files, which the controller
// loads.
func TestIssuerSecretLoads(t *testing.T) {
	o := issuerFiles(t)
	sec := find(t, parse(t, renderOut(t, o)), "Secret", "meridian-identity-issuer")
	dir := t.TempDir()
	for _, k := range []string{"ca.crt", "tls.crt", "tls.key"} {
		b, err := base64.StdEncoding.DecodeString(str(sec, "data", k))
		if err != nil {
			t.Fatal(err)
		}
		if blk, _ := pem.Decode(b); blk == nil {
			t.Fatalf("%s is not PEM", k)
		}
		if err := os.WriteFile(filepath.Join(dir, k), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := identity.Load(spiffeid.RequireTrustDomainFromString("cluster.local"), dir); err != nil {
		t.Fatal(err)
	}
}
