package controller

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"path/filepath"
	"runtime"
	"sort"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	pb "github.com/meridian-mesh/meridian/api/proto/destination"
	idpb "github.com/meridian-mesh/meridian/api/proto/identity"
	"github.com/meridian-mesh/meridian/controlplane/conversion/conversiontest"
	"github.com/meridian-mesh/meridian/controlplane/identity"
	"github.com/meridian-mesh/meridian/controlplane/store/kube"
	"github.com/meridian-mesh/meridian/test/apiserver"
)

// The controller against a real kube-apiserver and etcd: a proxy-shaped
// client subscribed to the destination API sees EndpointSlice, ServiceProfile
// and TrafficSplit changes as they are made through the API server.
func TestControllerKube(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	// The TrafficSplit CRD converts with a webhook: serve it.
	conv := conversiontest.NewServer()
	defer conv.Close()
	cfg := apiserver.Start(t)
	if err := conv.Install(cfg, filepath.Join(filepath.Dir(file), "..", "..", "api", "crds")); err != nil {
		t.Fatal(err)
	}
	scheme, err := kube.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}))
	for _, name := range []string{"web", "web-canary"} {
		must(c.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}))
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "web-1", Namespace: "shop", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080)}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"198.19.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
	}
	must(c.Create(ctx, slice))

	// The identity issuer, as cert-manager would mount it.
	issuerDir := t.TempDir()
	ca, err := identity.Generate(spiffeid.RequireTrustDomainFromString("cluster.local"))
	must(err)
	must(ca.WriteDir(issuerDir))

	addrs := make(chan string, 1)
	done := make(chan error, 1)
	runCtx, stop := context.WithCancel(ctx)
	go func() {
		done <- Run(runCtx, Options{Store: "kube", RestConfig: cfg, DestinationAddr: "127.0.0.1:0", ShutdownGrace: time.Second,
			IdentityIssuerDir: issuerDir},
			func(d, _ string) { addrs <- d })
	}()
	defer func() { stop(); <-done }()
	var addr string
	select {
	case addr = <-addrs:
	case err := <-done:
		t.Fatalf("controller: %v", err)
	case <-ctx.Done():
		t.Fatal("controller did not start")
	}
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(err)
	defer cc.Close()
	api := pb.NewDestinationClient(cc)

	// Identity: a pod's projected token (TokenRequest, audience
	// identity.meridian.io) is certified through TokenReview.
	cs := kubernetes.NewForConfigOrDie(cfg)
	_, err = cs.CoreV1().ServiceAccounts("shop").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "web"}}, metav1.CreateOptions{})
	must(err)
	tr, err := cs.CoreV1().ServiceAccounts("shop").CreateToken(ctx, "web", &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: []string{"identity.meridian.io"}}}, metav1.CreateOptions{})
	must(err)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	cert, err := idpb.NewIdentityClient(cc).Certify(ctx, &idpb.CertifyRequest{Token: []byte(tr.Status.Token), CertificateSigningRequest: csr})
	must(err)
	leaf, err := x509.ParseCertificate(cert.GetLeafCertificate())
	must(err)
	if got := leaf.URIs[0].String(); got != "spiffe://cluster.local/ns/shop/sa/web" {
		t.Fatalf("certified %s", got)
	}

	const authority = "web.shop.svc.cluster.local:80"

	// Endpoints: the current set first, then the slice's changes.
	get, err := api.Get(ctx, &pb.GetDestination{Authority: authority})
	must(err)
	set := map[string]bool{}
	recvUntil := func(want ...string) {
		t.Helper()
		for {
			sort.Strings(want)
			var have []string
			for a := range set {
				have = append(have, a)
			}
			sort.Strings(have)
			if equal(have, want) {
				return
			}
			u, err := get.Recv()
			if err != nil {
				t.Fatalf("waiting for endpoints %v (have %v): %v", want, have, err)
			}
			switch u := u.Update.(type) {
			case *pb.Update_Add:
				for _, a := range u.Add.GetAddrs() {
					set[a.GetAddr().GetIp()] = true
				}
			case *pb.Update_Remove:
				for _, a := range u.Remove.GetAddrs() {
					delete(set, a.GetIp())
				}
			case *pb.Update_NoEndpoints:
				clear(set)
			}
		}
	}
	recvUntil("198.19.0.1")
	slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{Addresses: []string{"198.19.0.2"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
	must(c.Update(ctx, slice))
	recvUntil("198.19.0.1", "198.19.0.2")
	slice.Endpoints = slice.Endpoints[1:]
	must(c.Update(ctx, slice))
	recvUntil("198.19.0.2")

	// Profiles: a ServiceProfile's routes, then a TrafficSplit's backends.
	prof, err := api.GetProfile(ctx, &pb.GetDestination{Authority: authority})
	must(err)
	recvProfile := func(ok func(*pb.DestinationProfile) bool, what string) {
		t.Helper()
		for {
			p, err := prof.Recv()
			if err != nil {
				t.Fatalf("waiting for %s: %v", what, err)
			}
			if ok(p) {
				return
			}
		}
	}
	must(c.Create(ctx, unstructuredFrom(t, `
apiVersion: meridian.io/v1alpha1
kind: ServiceProfile
metadata: {name: web.shop.svc.cluster.local, namespace: shop}
spec:
  routes:
  - name: GET /books
    condition: {method: GET, pathRegex: /books}
    isRetryable: true
    timeout: 300ms
`)))
	recvProfile(func(p *pb.DestinationProfile) bool {
		return len(p.GetRoutes()) == 1 && p.GetRoutes()[0].GetIsRetryable() && p.GetRoutes()[0].GetTimeout().AsDuration() == 300*time.Millisecond
	}, "the ServiceProfile's route")
	must(c.Create(ctx, unstructuredFrom(t, `
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: web-rollout, namespace: shop}
spec:
  service: web
  backends:
  - {service: web, weight: 90}
  - {service: web-canary, weight: 10}
`)))
	recvProfile(func(p *pb.DestinationProfile) bool {
		w := map[string]uint32{}
		for _, d := range p.GetDstOverrides() {
			w[d.GetAuthority()] = d.GetWeight()
		}
		return len(w) == 2 && w["web.shop.svc.cluster.local:80"]*10 == w["web-canary.shop.svc.cluster.local:80"]*90
	}, "the TrafficSplit's weighted backends")
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func unstructuredFrom(t *testing.T, manifest string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(manifest), &u.Object); err != nil {
		t.Fatal(err)
	}
	return u
}
