package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meridian-mesh/meridian/controlplane/controller/leader"
	"github.com/meridian-mesh/meridian/controlplane/controller/runnable"
	"github.com/meridian-mesh/meridian/controlplane/store"
	"github.com/meridian-mesh/meridian/controlplane/store/kube"
	"github.com/meridian-mesh/meridian/test/apiserver"
)

// apply server-side applies every object of a YAML stream, as
// `kubectl apply --server-side -f -` does, and returns them.
func apply(t *testing.T, ctx context.Context, c client.Client, stream string) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for _, o := range parse(t, stream) {
		u := &unstructured.Unstructured{Object: o.obj}
		if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("meridian-install-test"), client.ForceOwnership); err != nil {
			t.Fatalf("the API server refused %s (from %s): %v", o.key(), o.source, err)
		}
		out = append(out, u)
	}
	return out
}

const controllerSA = "system:serviceaccount:meridian:meridian-controller"

// Every object `meridian install --crds` and `meridian install` print is
// accepted by a real API server, applied twice (as re-running install
// does); the RBAC grants the controller what it uses and no more, and is
// enough for the Kubernetes store to sync as the controller's service
// account.
func TestAPIServerAcceptsInstall(t *testing.T) {
	cfg := apiserver.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}

	crds, err := Options{}.CRDs()
	if err != nil {
		t.Fatal(err)
	}
	var crdStream bytes.Buffer
	if err := Write(&crdStream, crds); err != nil {
		t.Fatal(err)
	}
	o := issuerFiles(t)
	o.Version = "v0.1.0"
	plane := renderOut(t, o)

	for range 2 {
		applied := apply(t, ctx, c, crdStream.String())
		for _, crd := range applied {
			waitEstablished(t, ctx, c, crd.GetName())
		}
		apply(t, ctx, c, plane)
	}

	// Read back what the API server stored.
	for _, ob := range parse(t, plane) {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion(ob.obj["apiVersion"].(string))
		u.SetKind(ob.kind())
		key := types.NamespacedName{Namespace: str(ob.obj, "metadata", "namespace"), Name: ob.name()}
		if err := c.Get(ctx, key, u); err != nil {
			t.Errorf("%s: %v", ob.key(), err)
		}
	}
	wh := &unstructured.Unstructured{}
	wh.SetAPIVersion("admissionregistration.k8s.io/v1")
	wh.SetKind("MutatingWebhookConfiguration")
	if err := c.Get(ctx, types.NamespacedName{Name: "meridian-proxy-injector"}, wh); err != nil {
		t.Fatal(err)
	}
	ws, _, _ := unstructured.NestedSlice(wh.Object, "webhooks")
	if len(ws) != 1 || get(ws[0], "failurePolicy") != "Ignore" || get(ws[0], "clientConfig", "caBundle") != nil {
		t.Errorf("stored webhook: %v", ws)
	}

	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("RBAC", func(t *testing.T) { checkRBAC(t, ctx, cs) })
	t.Run("ControllerAsItsServiceAccount", func(t *testing.T) { runAsController(t, ctx, cfg) })
	t.Run("ClusterCheck", func(t *testing.T) { checkCluster(t, ctx, cfg) })
}

func waitEstablished(t *testing.T, ctx context.Context, c client.Client, name string) {
	t.Helper()
	for {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion("apiextensions.k8s.io/v1")
		u.SetKind("CustomResourceDefinition")
		if err := c.Get(ctx, types.NamespacedName{Name: name}, u); err != nil {
			t.Fatal(err)
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, cd := range conds {
			if get(cd, "type") == "Established" && get(cd, "status") == "True" {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("CRD %s not established", name)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func checkRBAC(t *testing.T, ctx context.Context, cs kubernetes.Interface) {
	type check struct {
		verb, group, resource, ns, name string
		allowed                         bool
	}
	var checks []check
	for _, r := range []struct{ group, resource string }{
		{"", "namespaces"}, {"", "pods"}, {"", "serviceaccounts"}, {"", "services"},
		{"discovery.k8s.io", "endpointslices"}, {"meridian.io", "serviceprofiles"}, {"split.smi-spec.io", "trafficsplits"},
	} {
		for _, v := range []string{"get", "list", "watch"} {
			checks = append(checks, check{v, r.group, r.resource, "", "", true})
		}
		for _, v := range []string{"create", "update", "patch", "delete"} {
			// The gateway applies a ServiceAccount and a Service per Gateway
			// (server-side apply: create and patch), and deletes nothing.
			applied := (v == "create" || v == "patch") && r.group == "" && (r.resource == "serviceaccounts" || r.resource == "services")
			// The Rollouts' traffic routers write TrafficSplits (not patch).
			routed := v != "patch" && r.resource == "trafficsplits"
			// The Rollout reconciler patches its pods' role metadata.
			labelled := v == "patch" && r.group == "" && r.resource == "pods"
			checks = append(checks, check{v, r.group, r.resource, "shop", "x", applied || routed || labelled})
		}
	}
	// The gateway: reads the Gateway API kinds, writes their statuses (and
	// nothing else of them), applies Deployments, reads certificate
	// Secrets and CA ConfigMaps.
	for _, res := range []string{"gatewayclasses", "gateways", "httproutes", "grpcroutes", "tlsroutes", "tcproutes", "udproutes", "listenersets", "referencegrants", "backendtlspolicies"} {
		for _, v := range []string{"get", "list", "watch"} {
			checks = append(checks, check{v, "gateway.networking.k8s.io", res, "", "", true})
		}
		// The httpRoute traffic router sets a Rollout's weights on its route.
		checks = append(checks, check{"update", "gateway.networking.k8s.io", res, "shop", "x", res == "httproutes"},
			check{"delete", "gateway.networking.k8s.io", res, "shop", "x", false})
		if res != "referencegrants" {
			checks = append(checks, check{"update", "gateway.networking.k8s.io", res + "/status", "shop", "x", true})
		}
	}
	checks = append(checks,
		check{"create", "apps", "deployments", "shop", "", true},
		check{"patch", "apps", "deployments", "shop", "x", true},
		check{"delete", "apps", "deployments", "shop", "x", false},
		check{"update", "apps", "deployments", "shop", "x", false},
		check{"list", "", "secrets", "shop", "", true},
		check{"delete", "", "secrets", "shop", "x", false},
		check{"update", "", "configmaps", "shop", "x", false},
	)
	// The Rollout reconciler: its ReplicaSets, the Rollouts' status, their
	// AnalysisRuns, evictions for restartAt; not the Rollouts' spec.
	checks = append(checks,
		check{"list", "apps", "replicasets", "", "", true},
		check{"watch", "apps", "deployments", "", "", true},
		check{"create", "apps", "replicasets", "shop", "", true},
		check{"patch", "apps", "replicasets", "shop", "x", true},
		check{"delete", "apps", "replicasets", "shop", "x", true},
		check{"update", "apps", "replicasets", "shop", "x", false},
		check{"update", "meridian.io", "rollouts/status", "shop", "x", true},
		check{"update", "meridian.io", "rollouts/finalizers", "shop", "x", true},
		check{"update", "meridian.io", "rollouts", "shop", "x", false},
		check{"create", "meridian.io", "analysisruns", "shop", "", true},
		check{"patch", "meridian.io", "analysisruns", "shop", "x", true},
		check{"delete", "meridian.io", "analysisruns", "shop", "x", true}, // beyond the history limits
		check{"create", "", "pods/eviction", "shop", "x", true},
		check{"patch", "", "pods", "shop", "x", true}, // role metadata
		check{"delete", "", "pods", "shop", "x", false},
		check{"update", "", "pods", "shop", "x", false},
	)
	checks = append(checks,
		check{"create", "authentication.k8s.io", "tokenreviews", "", "", true},
		check{"get", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "meridian-proxy-injector", true},
		check{"patch", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "meridian-proxy-injector", true},
		check{"patch", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "someone-elses", false},
		check{"list", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "", false},
		check{"delete", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "meridian-proxy-injector", false},
		// The TrafficSplit CRD's conversion caBundle, and no other CRD.
		check{"get", "apiextensions.k8s.io", "customresourcedefinitions", "", "trafficsplits.split.smi-spec.io", true},
		check{"patch", "apiextensions.k8s.io", "customresourcedefinitions", "", "trafficsplits.split.smi-spec.io", true},
		check{"patch", "apiextensions.k8s.io", "customresourcedefinitions", "", "serviceprofiles.meridian.io", false},
		check{"update", "apiextensions.k8s.io", "customresourcedefinitions", "", "trafficsplits.split.smi-spec.io", false},
		check{"delete", "apiextensions.k8s.io", "customresourcedefinitions", "", "trafficsplits.split.smi-spec.io", false},
		check{"list", "apiextensions.k8s.io", "customresourcedefinitions", "", "", false},
		check{"create", "", "secrets", "meridian", "", true},
		check{"get", "", "secrets", "meridian", "meridian-proxy-injector-tls", true},
		check{"update", "", "secrets", "meridian", "meridian-proxy-injector-tls", true},
		// Secrets are read in every namespace: a Gateway's certificates may
		// be anywhere (the controller holds the identity issuer anyway).
		check{"get", "", "secrets", "meridian", "meridian-identity-issuer", true},
		check{"update", "", "secrets", "meridian", "meridian-identity-issuer", false},
		check{"delete", "", "secrets", "meridian", "meridian-proxy-injector-tls", false},
		check{"update", "", "secrets", "kube-system", "meridian-proxy-injector-tls", false},
		check{"create", "", "secrets", "kube-system", "", false},
		check{"create", "coordination.k8s.io", "leases", "meridian", "", true},
		check{"get", "coordination.k8s.io", "leases", "meridian", "meridian-controller", true},
		check{"update", "coordination.k8s.io", "leases", "meridian", "meridian-controller", true},
		check{"update", "coordination.k8s.io", "leases", "meridian", "someone-elses", false},
		check{"delete", "coordination.k8s.io", "leases", "meridian", "meridian-controller", false},
		check{"create", "coordination.k8s.io", "leases", "kube-system", "", false},
		check{"create", "", "events", "meridian", "", false},
		check{"get", "", "configmaps", "meridian", "x", true},
	)
	for _, ck := range checks {
		sar, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
			User:               controllerSA,
			Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:meridian", "system:authenticated"},
			ResourceAttributes: &authzv1.ResourceAttributes{Verb: ck.verb, Group: ck.group, Resource: ck.resource, Namespace: ck.ns, Name: ck.name},
		}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if sar.Status.Allowed != ck.allowed {
			t.Errorf("%s %s.%s %s/%s: allowed=%v, want %v", ck.verb, ck.resource, ck.group, ck.ns, ck.name, sar.Status.Allowed, ck.allowed)
		}
	}
}

// runAsController does, as the controller's service account, what the
// controller does through the API: it syncs the Kubernetes store (every
// kind it watches, both CRDs found), reviews a token, patches the
// webhook configuration's caBundle, and wins the replicas' Lease.
func runAsController(t *testing.T, ctx context.Context, admin *rest.Config) {
	cfg := rest.CopyConfig(admin)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: controllerSA, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:meridian", "system:authenticated"}}

	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	rctx, stop := context.WithCancel(ctx)
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- kube.Run(rctx, cfg, store.New(), kube.WithLogger(log), kube.WithReady(func() { close(ready) }), kube.WithGatewayAPI())
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("the Kubernetes store stopped as %s: %v\n%s", controllerSA, err, logs.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("the Kubernetes store did not sync as %s in 60s:\n%s", controllerSA, logs.String())
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if s := logs.String(); strings.Contains(s, "not installed") || strings.Contains(s, "forbidden") {
		t.Errorf("store log:\n%s", s)
	}

	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := cs.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: "not-a-token"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenReview as %s: %v", controllerSA, err)
	}
	if tr.Status.Authenticated {
		t.Error("a bogus token authenticated")
	}
	patch := []byte(fmt.Sprintf(`{"webhooks":[{"name":"inject.meridian.io","clientConfig":{"caBundle":%q}}]}`, "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="))
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Patch(ctx, "meridian-proxy-injector", types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Errorf("patching the webhook's caBundle as %s: %v", controllerSA, err)
	}
	// The replicas elect the writer with the Lease meridian-controller.
	lctx, stopElector := context.WithCancel(ctx)
	elected := make(chan struct{})
	e := &leader.Elector{Client: cs.CoordinationV1(), Namespace: "meridian", Name: "meridian-controller", Identity: "install-test",
		Writers: runnable.Func(func(ctx context.Context) error { close(elected); <-ctx.Done(); return nil })}
	electorDone := make(chan error, 1)
	go func() { electorDone <- e.Start(lctx) }()
	select {
	case <-elected:
	case err := <-electorDone:
		t.Errorf("leader election as %s: %v", controllerSA, err)
	case <-time.After(30 * time.Second):
		t.Errorf("leader election as %s: not elected in 30s", controllerSA)
	}
	stopElector()
	<-electorDone
	// Secrets are read in every namespace (a Gateway's certificates may be
	// anywhere), but the issuer's is never written through the API.
	err = cs.CoreV1().Secrets("meridian").Delete(ctx, "meridian-identity-issuer", metav1.DeleteOptions{})
	if !apierrors.IsForbidden(err) {
		t.Errorf("deleting the issuer Secret through the API as %s: %v, want forbidden", controllerSA, err)
	}
}

func checkCluster(t *testing.T, ctx context.Context, cfg *rest.Config) {
	check := ClusterChecker(cfg, 10*time.Second)
	if err := check(ctx, "meridian"); !errors.Is(err, ErrInstalled) {
		t.Errorf("check of an installed namespace: %v, want ErrInstalled", err)
	}
	if err := check(ctx, "elsewhere"); err != nil {
		t.Errorf("check of a namespace without meridian: %v", err)
	}
	_, err := Install(ctx, Options{CheckCluster: check})
	if !errors.Is(err, ErrInstalled) || !strings.Contains(err.Error(), "--ignore-cluster") {
		t.Errorf("install over an installed cluster: %v", err)
	}
	// Given the issuer, install does not generate one and does not look.
	o := issuerFiles(t)
	o.CheckCluster = check
	if _, err := Install(ctx, o); err != nil {
		t.Errorf("install with an issuer: %v", err)
	}
	down := rest.CopyConfig(cfg)
	down.Host = "https://127.0.0.1:1"
	if err := ClusterChecker(down, 2*time.Second)(ctx, "meridian"); err == nil || errors.Is(err, ErrInstalled) {
		t.Errorf("check of an unreachable cluster: %v", err)
	}
}

// syncBuffer is a bytes.Buffer safe for the store's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
