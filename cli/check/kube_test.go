package check

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/meridian-mesh/meridian/internal/names"
	"github.com/meridian-mesh/meridian/test/apiserver"
)

// The tests below run against a real kube-apiserver and etcd (envtest): one
// shared by most tests, started on first use; the test of an empty cluster
// starts its own.

var shared struct {
	once sync.Once
	env  *envtest.Environment
	cfg  *rest.Config
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.env != nil {
		_ = shared.env.Stop()
	}
	os.Exit(code)
}

// sharedEnv returns the shared API server's admin config.
func sharedEnv(t *testing.T) (*envtest.Environment, *rest.Config) {
	t.Helper()
	apiserver.Need(t)
	shared.once.Do(func() {
		shared.env = &envtest.Environment{}
		shared.cfg, shared.err = shared.env.Start()
	})
	if shared.err != nil {
		t.Fatalf("envtest: %v", shared.err)
	}
	return shared.env, shared.cfg
}

var uniqNames struct {
	sync.Mutex
	n map[string]int
}

// uniq returns base the first time, base-2 the second, ...: names of objects
// in the shared API server, so that the tests pass again with -count=N
// (envtest has no namespace controller: deleted namespaces stay).
func uniq(base string) string {
	uniqNames.Lock()
	defer uniqNames.Unlock()
	if uniqNames.n == nil {
		uniqNames.n = map[string]int{}
	}
	uniqNames.n[base]++
	if n := uniqNames.n[base]; n > 1 {
		return fmt.Sprintf("%s-%d", base, n)
	}
	return base
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// run runs the named groups (or the given checks) against cfg and logs the
// table.
func run(t *testing.T, o Options, r Runner, groups ...string) *Report {
	t.Helper()
	checks, err := Groups(o, groups...)
	must(t, err)
	return runChecks(t, o, r, checks)
}

func runChecks(t *testing.T, o Options, r Runner, checks []Check) *Report {
	t.Helper()
	var buf bytes.Buffer
	tab := &Table{W: &buf}
	r.Observer = tab
	if r.Interval == 0 {
		r.Interval = 100 * time.Millisecond
	}
	rep := r.Run(testCtx(t), checks, NewState(o))
	tab.Summary(rep)
	t.Logf("\n%s", buf.String())
	return rep
}

// result finds a check's result by description.
func result(t *testing.T, rep *Report, desc string) CheckResult {
	t.Helper()
	for _, r := range rep.Results {
		if r.Description == desc {
			return r
		}
	}
	t.Fatalf("no result for %q in %v", desc, descriptions(rep))
	return CheckResult{}
}

// expect checks a result and that its error holds each of the substrings.
func expect(t *testing.T, rep *Report, desc string, want Result, errHas ...string) CheckResult {
	t.Helper()
	r := result(t, rep, desc)
	if r.Result != want {
		t.Fatalf("%q: %s (%v), want %s", desc, r.Result, r.Err, want)
	}
	for _, s := range errHas {
		if r.Err == nil || !strings.Contains(r.Err.Error(), s) {
			t.Fatalf("%q: error %v lacks %q", desc, r.Err, s)
		}
	}
	if want != Success && r.Hint == "" {
		t.Fatalf("%q failed without a hint", desc)
	}
	return r
}

func allPass(t *testing.T, rep *Report) {
	t.Helper()
	for _, r := range rep.Results {
		if r.Result != Success {
			t.Fatalf("%s / %q: %s: %v", r.Group, r.Description, r.Result, r.Err)
		}
	}
}

const dryRunCheck = "proxy injector injects a pod (server-side dry run)"

// allPassButDryRun is allPass for webhookFixture's configuration, whose
// namespaceSelector matches no namespace: the dry-run check warns so.
func allPassButDryRun(t *testing.T, rep *Report) {
	t.Helper()
	for _, r := range rep.Results {
		if r.Description == dryRunCheck {
			expect(t, rep, dryRunCheck, Warning, "no namespace matches the namespaceSelector of webhook inject.meridian.io")
			continue
		}
		if r.Result != Success {
			t.Fatalf("%s / %q: %s: %v", r.Group, r.Description, r.Result, r.Err)
		}
	}
	result(t, rep, dryRunCheck)
}

func createNS(t *testing.T, kube kubernetes.Interface, names ...string) {
	t.Helper()
	for _, n := range names {
		_, err := kube.CoreV1().Namespaces().Create(testCtx(t), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
}

func TestPreAdmin(t *testing.T) {
	_, cfg := sharedEnv(t)
	ns := uniq("pre-admin")
	o := Options{RESTConfig: cfg, Namespace: ns}
	rep := run(t, o, Runner{}, PreGroups...)
	allPass(t, rep)
	if len(rep.Results) != 2+1+1+len(installResources) {
		t.Fatalf("%d results: %v", len(rep.Results), descriptions(rep))
	}

	// A namespace left from an earlier install is a warning.
	createNS(t, kubernetes.NewForConfigOrDie(cfg), ns)
	rep = run(t, o, Runner{}, PreGroups...)
	expect(t, rep, "control plane namespace does not already exist", Warning, "namespace "+ns+" already exists")
	if !rep.Success() {
		t.Fatal("a warning failed the run")
	}
}

func TestPreRestrictedUser(t *testing.T) {
	env, cfg := sharedEnv(t)
	ctx := testCtx(t)
	kube := kubernetes.NewForConfigOrDie(cfg)
	alice := uniq("alice")
	user, err := env.AddUser(envtest.User{Name: alice}, nil)
	must(t, err)

	// Alice may create everything the install needs but ClusterRoles, and
	// Secrets in no namespace.
	var rules []rbacv1.PolicyRule
	for _, r := range installResources {
		if r.resource == "clusterroles" || r.resource == "secrets" {
			continue
		}
		rules = append(rules, rbacv1.PolicyRule{Verbs: []string{"create"}, APIGroups: []string{r.group}, Resources: []string{r.resource}})
	}
	rules = append(rules, rbacv1.PolicyRule{Verbs: []string{"get"}, APIGroups: []string{""}, Resources: []string{"namespaces"}})
	_, err = kube.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: alice + "-almost-installer"}, Rules: rules}, metav1.CreateOptions{})
	must(t, err)
	_, err = kube.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: alice + "-almost-installer"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: alice + "-almost-installer"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: alice}},
	}, metav1.CreateOptions{})
	must(t, err)

	rep := run(t, Options{RESTConfig: user.Config()}, Runner{}, PreGroups...)
	if rep.Success() {
		t.Fatal("pre checks passed for a user who cannot create ClusterRoles")
	}
	r := expect(t, rep, "can create ClusterRoles", Error)
	if got := r.Err.Error(); got != "cannot create clusterroles.rbac.authorization.k8s.io (cluster-wide)" {
		t.Fatalf("message %q", got)
	}
	if !strings.Contains(r.Hint, "kubectl auth can-i create clusterroles.rbac.authorization.k8s.io") {
		t.Fatalf("hint %q", r.Hint)
	}
	r = expect(t, rep, "can create Secrets", Error)
	if got := r.Err.Error(); got != "cannot create secrets in namespace meridian" {
		t.Fatalf("message %q", got)
	}
	var failed []string
	for _, r := range rep.Results {
		if r.Result != Success {
			failed = append(failed, r.Description)
		}
	}
	if len(failed) != 2 {
		t.Fatalf("failed: %v, want only ClusterRoles and Secrets", failed)
	}
}

func TestUnreachableAPIStopsEverything(t *testing.T) {
	// Nothing listens on port 1: the API cannot be queried, so nothing after
	// that check runs.
	cfg := &rest.Config{Host: "https://127.0.0.1:1", Timeout: 2 * time.Second}
	rep := run(t, Options{RESTConfig: cfg}, Runner{Wait: time.Minute}, PostGroups...)
	if got := strings.Join(descriptions(rep), " "); got != "can initialize the client=success can query the Kubernetes API=error" {
		t.Fatal(got)
	}
	if rep.Stopped != "can query the Kubernetes API" {
		t.Fatal(rep.Stopped)
	}

	// A kubeconfig context that does not exist stops it one check earlier.
	dir := t.TempDir()
	must(t, os.WriteFile(dir+"/config", []byte("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\n"), 0o600))
	rep = run(t, Options{Kubeconfig: dir + "/config", Context: "nope"}, Runner{}, PreGroups...)
	expect(t, rep, "can initialize the client", Error, "nope")
	if len(rep.Results) != 1 {
		t.Fatal(descriptions(rep))
	}
}

// installCRDs creates the embedded CRDs.
func installCRDs(t *testing.T, cfg *rest.Config) {
	t.Helper()
	ext := apiextclient.NewForConfigOrDie(cfg)
	crds, err := EmbeddedCRDs()
	must(t, err)
	for _, c := range crds {
		_, err := ext.ApiextensionsV1().CustomResourceDefinitions().Create(testCtx(t), c.DeepCopy(), metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
}

func TestPostOnEmptyClusterThenCRDs(t *testing.T) {
	cfg := apiserver.Start(t)
	o := Options{RESTConfig: cfg}
	rep := run(t, o, Runner{}, PostGroups...)
	if rep.Success() {
		t.Fatal("post checks passed on an empty cluster")
	}
	r := expect(t, rep, "control plane CustomResourceDefinitions exist", Error, "serviceprofiles.meridian.io", "trafficsplits.split.smi-spec.io")
	if r.Hint != "meridian install --crds | kubectl apply --server-side -f -" {
		t.Fatalf("hint %q", r.Hint)
	}
	expect(t, rep, "control plane namespace exists", Error, "namespace meridian does not exist")
	if rep.Stopped != "control plane namespace exists" {
		t.Fatalf("stopped at %q", rep.Stopped)
	}
	if got := strings.Join(descriptions(rep), " "); strings.Contains(got, "established") || strings.Contains(got, "issuer") {
		t.Fatalf("checks ran that had nothing to check, or after the fatal one: %s", got)
	}

	// With the CRDs applied (and the wait for the API server to establish
	// them), the group passes.
	installCRDs(t, cfg)
	rep = run(t, o, Runner{Wait: 30 * time.Second}, GroupCRDs)
	allPass(t, rep)
	if len(rep.Results) != 3 {
		t.Fatal(descriptions(rep))
	}

	// A CRD whose schema an older install left is out of date.
	ext := apiextclient.NewForConfigOrDie(cfg)
	ctx := testCtx(t)
	sp, err := ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, "serviceprofiles.meridian.io", metav1.GetOptions{})
	must(t, err)
	props := sp.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"].Properties
	for k := range props {
		delete(props, k)
		break
	}
	sp.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"] = apiextv1.JSONSchemaProps{Type: "object", Properties: props}
	_, err = ext.ApiextensionsV1().CustomResourceDefinitions().Update(ctx, sp, metav1.UpdateOptions{})
	must(t, err)
	rep = run(t, o, Runner{}, GroupCRDs)
	expect(t, rep, "control plane CustomResourceDefinitions are up to date", Error, "serviceprofiles.meridian.io version v1alpha1: the schema differs")
}

func TestWaitRetriesUntilTrue(t *testing.T) {
	_, cfg := sharedEnv(t)
	kube := kubernetes.NewForConfigOrDie(cfg)
	later := uniq("appears-later")
	o := Options{RESTConfig: cfg, Namespace: later}
	checks, err := Groups(o, GroupKubernetesAPI, GroupControlPlane)
	must(t, err)
	checks = checks[:3] // the API, and the control plane namespace

	go func() {
		time.Sleep(time.Second)
		_, _ = kube.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: later}}, metav1.CreateOptions{})
	}()
	rec := &recorder{}
	start := time.Now()
	rep := (&Runner{Wait: 30 * time.Second, Interval: 100 * time.Millisecond, Observer: rec}).Run(testCtx(t), checks, NewState(o))
	allPass(t, rep)
	if el := time.Since(start); el < time.Second || el > 20*time.Second {
		t.Fatalf("took %v", el)
	}
	if r := result(t, rep, "control plane namespace exists"); r.Retries == 0 {
		t.Fatal("no retry")
	}
	if len(rec.waiting) != 1 || rec.waiting[0] != "control plane namespace exists" {
		t.Fatalf("waiting lines %v, want one", rec.waiting)
	}

	// And gives up when the wait is over.
	o.Namespace = "never-appears"
	checks, err = Groups(o, GroupKubernetesAPI, GroupControlPlane)
	must(t, err)
	start = time.Now()
	rep = runChecks(t, o, Runner{Wait: 1500 * time.Millisecond}, checks)
	el := time.Since(start)
	expect(t, rep, "control plane namespace exists", Error, "never-appears")
	if el < 1500*time.Millisecond || el > 10*time.Second {
		t.Fatalf("took %v", el)
	}
	if rep.Stopped != "control plane namespace exists" {
		t.Fatal(rep.Stopped)
	}
}

// --- certificates ---

type keyPair struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func (k keyPair) certPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.cert.Raw})
}

func (k keyPair) keyPEM(t *testing.T) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(k.key)
	must(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

var serialN int64

// newCert makes a certificate valid from notBefore to notAfter, signed by
// parent (self-signed when parent is nil); ca makes it a CA.
func newCert(t *testing.T, cn string, parent *keyPair, ca bool, notBefore, notAfter time.Time, dns ...string) keyPair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	serialN++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serialN), Subject: pkix.Name{CommonName: cn},
		NotBefore: notBefore, NotAfter: notAfter, BasicConstraintsValid: true, IsCA: ca, DNSNames: dns,
	}
	if ca {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	must(t, err)
	c, err := x509.ParseCertificate(der)
	must(t, err)
	return keyPair{c, key}
}

const day = 24 * time.Hour

func createIssuerSecret(t *testing.T, kube kubernetes.Interface, ns string, anchor, issuer keyPair, issuerKey []byte) {
	t.Helper()
	createNS(t, kube, ns)
	_, err := kube.CoreV1().Secrets(ns).Create(testCtx(t), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: names.IssuerSecretName},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{"tls.crt": issuer.certPEM(), "tls.key": issuerKey, "ca.crt": anchor.certPEM()},
	}, metav1.CreateOptions{})
	must(t, err)
}

func TestIdentity(t *testing.T) {
	_, cfg := sharedEnv(t)
	kube := kubernetes.NewForConfigOrDie(cfg)
	now := time.Now()
	good := newCert(t, "root.meridian.cluster.local", nil, true, now.Add(-day), now.Add(3650*day))
	goodIssuer := newCert(t, "issuer.meridian.cluster.local", &good, true, now.Add(-day), now.Add(365*day))

	identity := func(ns string) *Report {
		return run(t, Options{RESTConfig: cfg, Namespace: ns}, Runner{}, GroupIdentity)
	}

	t.Run("missing", func(t *testing.T) {
		ns := uniq("id-missing")
		createNS(t, kube, ns)
		rep := identity(ns)
		expect(t, rep, "issuer Secret exists", Error, "no secret "+ns+"/meridian-identity-issuer")
		if len(rep.Results) != 1 {
			t.Fatalf("the certificate checks ran without a Secret: %v", descriptions(rep))
		}
	})
	t.Run("good", func(t *testing.T) {
		nsgood := uniq("id-good")
		createIssuerSecret(t, kube, nsgood, good, goodIssuer, goodIssuer.keyPEM(t))
		rep := identity(nsgood)
		allPass(t, rep)
		if len(rep.Results) != 8 {
			t.Fatal(descriptions(rep))
		}
	})
	t.Run("expired trust anchor", func(t *testing.T) {
		old := newCert(t, "old-root", nil, true, now.Add(-400*day), now.Add(-day))
		iss := newCert(t, "issuer", &old, true, now.Add(-300*day), now.Add(-2*day))
		nsexpired := uniq("id-expired")
		createIssuerSecret(t, kube, nsexpired, old, iss, iss.keyPEM(t))
		rep := identity(nsexpired)
		expect(t, rep, "trust anchors are within their validity period", Error, `trust anchor "CN=old-root" expired`)
		expect(t, rep, "issuer certificate is within its validity period", Error, `issuer "CN=issuer" expired`)
		expect(t, rep, "issuer certificate is issued by the trust anchors", Error)
		if rep.Success() {
			t.Fatal("passed")
		}
	})
	t.Run("trust anchor expiring soon", func(t *testing.T) {
		soon := newCert(t, "soon-root", nil, true, now.Add(-300*day), now.Add(30*day))
		iss := newCert(t, "issuer", &soon, true, now.Add(-day), now.Add(20*day))
		nssoon := uniq("id-soon")
		createIssuerSecret(t, kube, nssoon, soon, iss, iss.keyPEM(t))
		rep := identity(nssoon)
		expect(t, rep, "trust anchors are valid for at least 60 days", Warning, `trust anchor "CN=soon-root" expires`, "in 30 days")
		expect(t, rep, "issuer certificate is valid for at least 60 days", Warning, "in 20 days")
		expect(t, rep, "trust anchors are within their validity period", Success)
		if !rep.Success() {
			t.Fatal("an expiring (not expired) trust anchor failed the run")
		}
	})
	t.Run("issuer of another anchor, wrong key, not a CA", func(t *testing.T) {
		other := newCert(t, "other-root", nil, true, now.Add(-day), now.Add(3650*day))
		stray := newCert(t, "stray-issuer", &other, true, now.Add(-day), now.Add(365*day))
		nsstray := uniq("id-stray")
		createIssuerSecret(t, kube, nsstray, good, stray, stray.keyPEM(t))
		expect(t, identity(nsstray), "issuer certificate is issued by the trust anchors", Error, `issuer "CN=stray-issuer" does not chain to the trust anchors`)

		nswrongkey := uniq("id-wrongkey")
		createIssuerSecret(t, kube, nswrongkey, good, goodIssuer, stray.keyPEM(t))
		expect(t, identity(nswrongkey), "issuer certificate and key are valid", Error, "tls.key is not the key of the issuer certificate")

		leaf := newCert(t, "leaf", &good, false, now.Add(-day), now.Add(365*day))
		nsleaf := uniq("id-leaf")
		createIssuerSecret(t, kube, nsleaf, leaf, goodIssuer, goodIssuer.keyPEM(t))
		expect(t, identity(nsleaf), "trust anchors are valid CA certificates", Error, `trust anchor "CN=leaf" is not a CA certificate`)
	})
}

// --- control plane fixtures ---

// controlPlane creates what the chart installs (as far as the checks look)
// in ns, at version, with the controller pod ready or not.
func controlPlane(t *testing.T, kube kubernetes.Interface, ns, version string, ready bool) {
	t.Helper()
	ctx := testCtx(t)
	createNS(t, kube, ns)
	lbls := map[string]string{
		names.LabelName: names.ControllerName, "app.kubernetes.io/part-of": "meridian",
		"meridian.io/control-plane-component": "controller", names.LabelControlPlaneVersion: version,
	}
	_, err := kube.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: names.ControllerName, Labels: lbls},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{names.LabelName: names.ControllerName}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: lbls},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "controller", Image: "ghcr.io/meridian-mesh/controller:" + version}}},
			},
		},
	}, metav1.CreateOptions{})
	must(t, err)
	pod, err := kube.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: names.ControllerName + "-7d4b9c-x2x9z", Labels: lbls},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "controller", Image: "ghcr.io/meridian-mesh/controller:" + version}}},
	}, metav1.CreateOptions{})
	must(t, err)
	setPodStatus(t, kube, pod, ready, []corev1.ContainerStatus{containerStatusFor("controller", ready)}, nil)

	_, err = kube.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: names.ControllerName},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{names.LabelName: names.ControllerName},
			Ports: []corev1.ServicePort{
				{Name: "grpc", Port: 8086}, {Name: "webhook", Port: 443}, {Name: "admin", Port: 9996},
			},
		},
	}, metav1.CreateOptions{})
	must(t, err)
	_, err = kube.DiscoveryV1().EndpointSlices(ns).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: names.ControllerName + "-abcde", Labels: map[string]string{discoveryv1.LabelServiceName: names.ControllerName}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{
			{Name: ptr.To("grpc"), Port: ptr.To[int32](8086)}, {Name: ptr.To("webhook"), Port: ptr.To[int32](8443)}, {Name: ptr.To("admin"), Port: ptr.To[int32](9996)},
		},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"198.19.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready)}}},
	}, metav1.CreateOptions{})
	must(t, err)
}

func containerStatusFor(name string, ready bool) corev1.ContainerStatus {
	cs := corev1.ContainerStatus{Name: name, Ready: ready, Image: "img", ImageID: "img", Started: ptr.To(true)}
	if ready {
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.Now()}
	} else {
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off 40s restarting failed container"}
		cs.RestartCount = 3
		cs.LastTerminationState.Terminated = &corev1.ContainerStateTerminated{Reason: "Error", ExitCode: 2}
	}
	return cs
}

// setPodStatus sets a pod's status through the status subresource (envtest
// has no kubelet).
func setPodStatus(t *testing.T, kube kubernetes.Interface, pod *corev1.Pod, ready bool, containers, inits []corev1.ContainerStatus) {
	t.Helper()
	must(t, setPodStatusErr(kube, pod, ready, containers, inits))
}

// setPodStatusErr is setPodStatus for goroutines other than the test's.
func setPodStatusErr(kube kubernetes.Interface, pod *corev1.Pod, ready bool, containers, inits []corev1.ContainerStatus) error {
	cond := corev1.ConditionFalse
	if ready {
		cond = corev1.ConditionTrue
	}
	pod = pod.DeepCopy()
	pod.Status = corev1.PodStatus{
		Phase:                 corev1.PodRunning,
		Conditions:            []corev1.PodCondition{{Type: corev1.PodReady, Status: cond, LastTransitionTime: metav1.Now()}},
		ContainerStatuses:     containers,
		InitContainerStatuses: inits,
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := kube.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
	return err
}

func TestControlPlane(t *testing.T) {
	_, cfg := sharedEnv(t)
	kube := kubernetes.NewForConfigOrDie(cfg)
	ctx := testCtx(t)
	cpTest, notReady, ready := uniq("cp-test"), uniq("cp-notready"), uniq("cp-ready")
	o := Options{RESTConfig: cfg, Namespace: cpTest, CLIVersion: "v1.2.3"}

	createNS(t, kube, cpTest)
	rep := run(t, o, Runner{}, GroupControlPlane)
	expect(t, rep, "control plane namespace exists", Success)
	expect(t, rep, "controller Deployment exists", Error, "no deployment "+cpTest+"/meridian-controller")
	expect(t, rep, "destination API has ready endpoints", Error, "no service "+cpTest+"/meridian-controller")

	must(t, kube.CoreV1().Namespaces().Delete(ctx, cpTest, metav1.DeleteOptions{}))
	controlPlane(t, kube, notReady, "v1.2.2", false)
	o.Namespace = notReady
	rep = run(t, o, Runner{}, GroupControlPlane)
	expect(t, rep, "controller Deployment exists", Success)
	expect(t, rep, "controller pods are ready", Error,
		"pod meridian-controller-7d4b9c-x2x9z is not ready: phase Running",
		"container controller not ready, waiting (CrashLoopBackOff back-off 40s restarting failed container), 3 restarts (last: Error, exit code 2)")
	expect(t, rep, "destination API has ready endpoints", Error, "no ready endpoint for port grpc (1 not ready)")
	expect(t, rep, "control plane pods are at the CLI's version", Warning, "control plane is at v1.2.2, this CLI is v1.2.3")

	controlPlane(t, kube, ready, "v1.2.3", true)
	o.Namespace = ready
	allPass(t, run(t, o, Runner{}, GroupControlPlane))
}

// webhookFixture creates the injector's configuration (with caBundle or not)
// and its serving Secret for a certificate covering dns, signed by signer.
func webhookFixture(t *testing.T, kube kubernetes.Interface, ns string, bundle []byte, serving keyPair, withSecret bool) {
	t.Helper()
	ctx := testCtx(t)
	_ = kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(ctx, names.WebhookConfigName, metav1.DeleteOptions{})
	_ = kube.CoreV1().Secrets(ns).Delete(ctx, names.WebhookSecretName, metav1.DeleteOptions{})
	_, err := kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &admissionv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: names.WebhookConfigName},
		Webhooks: []admissionv1.MutatingWebhook{{
			Name: names.WebhookName,
			ClientConfig: admissionv1.WebhookClientConfig{
				Service:  &admissionv1.ServiceReference{Namespace: ns, Name: names.ControllerName, Path: ptr.To("/inject")},
				CABundle: bundle,
			},
			Rules: []admissionv1.RuleWithOperations{{
				Operations: []admissionv1.OperationType{admissionv1.Create},
				Rule:       admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
			}},
			// Match no namespace: the API server must not call this
			// webhook (nothing serves it) while other tests create pods.
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"check-test": "never"}},
			FailurePolicy:           ptr.To(admissionv1.Ignore),
			SideEffects:             ptr.To(admissionv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
		}},
	}, metav1.CreateOptions{})
	must(t, err)
	t.Cleanup(func() {
		_ = kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), names.WebhookConfigName, metav1.DeleteOptions{})
	})
	if withSecret {
		_, err = kube.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: names.WebhookSecretName},
			Type:       corev1.SecretTypeTLS,
			Data:       map[string][]byte{"tls.crt": serving.certPEM(), "tls.key": serving.keyPEM(t)},
		}, metav1.CreateOptions{})
		must(t, err)
	}
}

func TestWebhook(t *testing.T) {
	_, cfg := sharedEnv(t)
	kube := kubernetes.NewForConfigOrDie(cfg)
	ns := uniq("wh-test")
	controlPlane(t, kube, ns, "v1.2.3", true)
	o := Options{RESTConfig: cfg, Namespace: ns}
	now := time.Now()
	ca := newCert(t, "webhook-ca", nil, true, now.Add(-time.Hour), now.Add(365*day))
	serving := newCert(t, "meridian-controller", &ca, false, now.Add(-time.Hour), now.Add(365*day), "meridian-controller."+ns+".svc")

	_ = kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(testCtx(t), names.WebhookConfigName, metav1.DeleteOptions{})
	rep := run(t, o, Runner{}, GroupWebhook)
	expect(t, rep, "proxy injector webhook configuration exists", Error, "no MutatingWebhookConfiguration meridian-proxy-injector")

	webhookFixture(t, kube, ns, nil, serving, false)
	rep = run(t, o, Runner{}, GroupWebhook)
	expect(t, rep, "proxy injector webhook configuration exists", Success)
	expect(t, rep, "proxy injector webhook caBundle is set", Error, "has no caBundle")
	expect(t, rep, "proxy injector serving certificate Secret exists", Error, "no secret "+ns+"/meridian-proxy-injector-tls")
	expect(t, rep, "proxy injector Service has ready endpoints", Success)

	webhookFixture(t, kube, ns, ca.certPEM(), serving, true)
	allPassButDryRun(t, run(t, o, Runner{}, GroupWebhook))

	// A certificate of another CA, or for another name.
	other := newCert(t, "other-ca", nil, true, now.Add(-time.Hour), now.Add(365*day))
	stray := newCert(t, "stray", &other, false, now.Add(-time.Hour), now.Add(365*day), "meridian-controller."+ns+".svc")
	webhookFixture(t, kube, ns, ca.certPEM(), stray, true)
	expect(t, run(t, o, Runner{}, GroupWebhook), "proxy injector serving certificate is valid and chains to the caBundle", Error, "does not chain to the webhook's caBundle")

	wrongName := newCert(t, "wrong", &ca, false, now.Add(-time.Hour), now.Add(365*day), "meridian-controller.elsewhere.svc")
	webhookFixture(t, kube, ns, ca.certPEM(), wrongName, true)
	rep = run(t, o, Runner{}, GroupWebhook)
	expect(t, rep, "proxy injector serving certificate covers the Service's DNS name", Error, "does not cover meridian-controller."+ns+".svc")
	expect(t, rep, "proxy injector serving certificate is valid and chains to the caBundle", Success)
}

// meshedPod creates a pod as the injector leaves it, with the proxy's
// status set.
func meshedPod(t *testing.T, kube kubernetes.Interface, ns, name, proxyVersion string, ready bool) {
	t.Helper()
	meshedPodAnchors(t, kube, ns, name, proxyVersion, ready, "")
}

// meshedPodAnchors is meshedPod with trust anchors (PEM) given to the proxy.
func meshedPodAnchors(t *testing.T, kube kubernetes.Interface, ns, name, proxyVersion string, ready bool, anchors string) {
	t.Helper()
	var env []corev1.EnvVar
	if anchors != "" {
		env = []corev1.EnvVar{{Name: "MERIDIAN_PROXY_TRUST_ANCHORS", Value: anchors}}
	}
	pod, err := kube.CoreV1().Pods(ns).Create(testCtx(t), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{names.AnnotationProxyVersion: proxyVersion}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: names.ProxyContainerName, Image: "ghcr.io/meridian-mesh/proxy:" + proxyVersion, RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways), Env: env}},
			Containers:     []corev1.Container{{Name: "app", Image: "app"}},
		},
	}, metav1.CreateOptions{})
	must(t, err)
	setPodStatus(t, kube, pod, ready, []corev1.ContainerStatus{containerStatusFor("app", true)}, []corev1.ContainerStatus{containerStatusFor(names.ProxyContainerName, ready)})
}

func TestDataPlane(t *testing.T) {
	_, cfg := sharedEnv(t)
	kube := kubernetes.NewForConfigOrDie(cfg)
	cp, apps, old, empty := uniq("dp-cp"), uniq("dp-apps"), uniq("dp-old"), uniq("dp-empty")
	controlPlane(t, kube, cp, "v2.0.0", true)
	createNS(t, kube, apps, old, empty)
	meshedPod(t, kube, apps, "web-1", "v2.0.0", true)
	meshedPod(t, kube, apps, "web-2", "v2.0.0", true)
	meshedPod(t, kube, old, "legacy-1", "v1.9.0", true)
	meshedPod(t, kube, old, "broken-1", "v2.0.0", false)
	// Not meshed: not looked at.
	_, err := kube.CoreV1().Pods(apps).Create(testCtx(t), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "plain"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}, metav1.CreateOptions{})
	must(t, err)

	o := Options{RESTConfig: cfg, Namespace: cp, DataPlaneNamespace: apps}
	rep := run(t, o, Runner{}, ProxyGroups...)
	allPass(t, rep)
	expect(t, rep, "data plane namespace exists", Success)

	o.DataPlaneNamespace = old
	rep = run(t, o, Runner{}, GroupDataPlane)
	expect(t, rep, "data plane proxies are ready", Error, "pod "+old+"/broken-1: meridian-proxy not ready, waiting (CrashLoopBackOff")
	r := expect(t, rep, "data plane proxies are at the control plane's version", Warning, "pod "+old+"/legacy-1 runs proxy v1.9.0, the control plane is v2.0.0")
	if strings.Contains(r.Err.Error(), "broken-1") {
		t.Fatalf("a pod at the control plane's version was flagged: %v", r.Err)
	}

	// Every namespace: the same findings.
	o.DataPlaneNamespace = ""
	rep = run(t, o, Runner{}, GroupDataPlane)
	expect(t, rep, "data plane proxies are at the control plane's version", Warning, old+"/legacy-1")
	// The pods check does not name broken-1 again: its proxy is not ready.
	expect(t, rep, "data plane pods are ready", Success)
	if len(rep.Results) != 3 {
		t.Fatal(descriptions(rep))
	}

	// No meshed pod: fine after an install, a warning when asked with --proxy.
	o.DataPlaneNamespace, o.ProxyOnly = empty, true
	rep = run(t, o, Runner{}, GroupDataPlane)
	expect(t, rep, "data plane proxies are ready", Warning, "no meshed pod")
	o.ProxyOnly = false
	allPass(t, run(t, o, Runner{}, GroupDataPlane))

	o.DataPlaneNamespace = "dp-nowhere"
	expect(t, run(t, o, Runner{}, GroupDataPlane), "data plane namespace exists", Error, "namespace dp-nowhere does not exist")
}

// A healthy install passes every post-install check, without a warning but
// the one envtest cannot give: the API server here cannot reach a Service, so
// the fixture's webhook selects no namespace and the dry-run pod is not
// created (TestWebhookDryRun checks that path with the webhook on a URL).
func TestPostHealthyInstall(t *testing.T) {
	_, cfg := sharedEnv(t)
	kube := kubernetes.NewForConfigOrDie(cfg)
	ns, app, version := uniq("mesh"), uniq("mesh-app"), "v1.2.3"
	installCRDs(t, cfg)
	controlPlane(t, kube, ns, version, true)
	now := time.Now()
	anchor := newCert(t, "root.meridian.cluster.local", nil, true, now.Add(-day), now.Add(3650*day))
	issuer := newCert(t, "issuer.meridian.cluster.local", &anchor, true, now.Add(-day), now.Add(365*day))
	createIssuerSecret(t, kube, ns, anchor, issuer, issuer.keyPEM(t))
	ca := newCert(t, "webhook-ca", nil, true, now.Add(-time.Hour), now.Add(365*day))
	serving := newCert(t, "meridian-controller", &ca, false, now.Add(-time.Hour), now.Add(365*day), "meridian-controller."+ns+".svc")
	webhookFixture(t, kube, ns, ca.certPEM(), serving, true)
	createNS(t, kube, app)
	meshedPodAnchors(t, kube, app, "app-1", version, true, string(anchor.certPEM()))

	o := Options{RESTConfig: cfg, Namespace: ns, DataPlaneNamespace: app, CLIVersion: version}
	rep := run(t, o, Runner{Wait: 30 * time.Second}, PostGroups...)
	allPassButDryRun(t, rep)
	groups := map[string]bool{}
	for _, r := range rep.Results {
		groups[r.Group] = true
	}
	for _, g := range PostGroups {
		// No Gateway API CRDs here: the gateway group has nothing to say
		// (TestGatewayChecks runs it).
		if !groups[g] && g != GroupGateway {
			t.Fatalf("group %s did not run", g)
		}
	}

	var buf bytes.Buffer
	must(t, rep.WriteJSON(&buf))
	if !strings.Contains(buf.String(), `"success": true`) {
		t.Fatal(buf.String())
	}
}

// After the trust anchors change, the pods injected before keep the old
// ones: the check names them (and the pods without any), not the others.
func TestDataPlaneTrustAnchors(t *testing.T) {
	_, cfg := sharedEnv(t)
	kube := kubernetes.NewForConfigOrDie(cfg)
	cp, apps := uniq("ta-cp"), uniq("ta-apps")
	controlPlane(t, kube, cp, "v2.0.0", true)
	now := time.Now()
	oldAnchor := newCert(t, "root-old.meridian.cluster.local", nil, true, now.Add(-day), now.Add(3650*day))
	newAnchor := newCert(t, "root-new.meridian.cluster.local", nil, true, now.Add(-day), now.Add(3650*day))
	issuer := newCert(t, "issuer.meridian.cluster.local", &newAnchor, true, now.Add(-day), now.Add(365*day))
	createIssuerSecret(t, kube, cp, newAnchor, issuer, issuer.keyPEM(t))
	createNS(t, kube, apps)
	both := string(oldAnchor.certPEM()) + string(newAnchor.certPEM())
	meshedPodAnchors(t, kube, apps, "fresh-1", "v2.0.0", true, string(newAnchor.certPEM()))
	meshedPodAnchors(t, kube, apps, "bundle-1", "v2.0.0", true, both)
	meshedPodAnchors(t, kube, apps, "stale-1", "v2.0.0", true, string(oldAnchor.certPEM()))
	meshedPod(t, kube, apps, "bare-1", "v2.0.0", true)

	o := Options{RESTConfig: cfg, Namespace: cp, DataPlaneNamespace: apps}
	r := expect(t, run(t, o, Runner{}, GroupDataPlane), "data plane proxies trust the identity issuer", Error,
		"pod "+apps+"/stale-1: its proxy's trust anchors (\"CN=root-old.meridian.cluster.local\") do not verify the issuer \"CN=issuer.meridian.cluster.local\"",
		"pod "+apps+"/bare-1: its proxy has no trust anchors ($MERIDIAN_PROXY_TRUST_ANCHORS)")
	for _, ok := range []string{"fresh-1", "bundle-1"} {
		if strings.Contains(r.Err.Error(), ok) {
			t.Errorf("%s trusts the issuer but was named: %v", ok, r.Err)
		}
	}
	if !strings.Contains(r.Hint, "rollout restart") {
		t.Errorf("hint %q does not say to restart", r.Hint)
	}
}

// onWaiting calls f the first time a check starts waiting (the runner is
// about to retry it): the test changes the world only after the check has
// seen it unready, without sleeping.
type onWaiting struct {
	once sync.Once
	f    func(desc string, err error)
}

func (o *onWaiting) Waiting(c *Check, err error, _ time.Time) {
	o.once.Do(func() { o.f(c.Description, err) })
}
func (o *onWaiting) Done(CheckResult) {}

// `meridian check --proxy` waits for the meshed pods themselves, not only
// their proxies: a pod whose proxy is ready while its application container
// is still starting fails the check, which names the container, and passes
// once the pod is Ready (retried under --wait).
func TestDataPlanePodsReady(t *testing.T) {
	_, cfg := sharedEnv(t)
	kube := kubernetes.NewForConfigOrDie(cfg)
	cp, apps := uniq("pr-cp"), uniq("pr-apps")
	controlPlane(t, kube, cp, "v2.0.0", true)
	createNS(t, kube, apps)
	meshedPod(t, kube, apps, "ready-1", "v2.0.0", true)
	meshedPod(t, kube, apps, "starting-1", "v2.0.0", true)
	pod, err := kube.CoreV1().Pods(apps).Get(testCtx(t), "starting-1", metav1.GetOptions{})
	must(t, err)
	creating := corev1.ContainerStatus{Name: "app", Image: "app", Started: ptr.To(false),
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}}
	setPodStatus(t, kube, pod, false, []corev1.ContainerStatus{creating}, []corev1.ContainerStatus{containerStatusFor(names.ProxyContainerName, true)})

	o := Options{RESTConfig: cfg, Namespace: cp, DataPlaneNamespace: apps, ProxyOnly: true}
	rep := run(t, o, Runner{}, ProxyGroups...)
	expect(t, rep, "data plane proxies are ready", Success)
	r := expect(t, rep, "data plane pods are ready", Error, "pod "+apps+"/starting-1 (phase Running): app not ready, waiting (ContainerCreating)")
	if strings.Contains(r.Err.Error(), "ready-1") {
		t.Fatalf("a ready pod was flagged: %v", r.Err)
	}
	if rep.Success() {
		t.Fatal("the run succeeded with a pod not ready")
	}

	// Under --wait the check is retried until the pod becomes Ready.
	var changed error
	obs := &onWaiting{f: func(desc string, _ error) {
		if desc != "data plane pods are ready" {
			changed = fmt.Errorf("waited on %q", desc)
			return
		}
		pod, err := kube.CoreV1().Pods(apps).Get(context.Background(), "starting-1", metav1.GetOptions{})
		if err == nil {
			err = setPodStatusErr(kube, pod, true, []corev1.ContainerStatus{containerStatusFor("app", true)}, []corev1.ContainerStatus{containerStatusFor(names.ProxyContainerName, true)})
		}
		changed = err
	}}
	checks, err := Groups(o, ProxyGroups...)
	must(t, err)
	rep = (&Runner{Wait: time.Minute, Interval: 100 * time.Millisecond, Observer: obs}).Run(testCtx(t), checks, NewState(o))
	must(t, changed)
	allPass(t, rep)
	if r := result(t, rep, "data plane pods are ready"); r.Retries == 0 {
		t.Fatal("passed without a retry: the pod was ready from the start")
	}

	// A pod whose containers are ready but whose Ready condition is not
	// (a readiness gate) is named with the condition.
	gated := uniq("pr-gated")
	createNS(t, kube, gated)
	meshedPod(t, kube, gated, "gated-1", "v2.0.0", true)
	// Gone when the test ends: the checks of every namespace that other
	// tests (and this one, run again) share the API server with would
	// find it not Ready.
	t.Cleanup(func() {
		kube.CoreV1().Pods(gated).Delete(context.Background(), "gated-1", metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	})
	pod, err = kube.CoreV1().Pods(gated).Get(testCtx(t), "gated-1", metav1.GetOptions{})
	must(t, err)
	must(t, setPodStatusErr(kube, pod, false, []corev1.ContainerStatus{containerStatusFor("app", true)}, []corev1.ContainerStatus{containerStatusFor(names.ProxyContainerName, true)}))
	o.DataPlaneNamespace = gated
	expect(t, run(t, o, Runner{}, GroupDataPlane), "data plane pods are ready", Error, "pod "+gated+"/gated-1: not Ready")
}
