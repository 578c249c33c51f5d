package tokenreview_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	pb "github.com/meridian-mesh/meridian/api/proto/identity"
	"github.com/meridian-mesh/meridian/controlplane/identity"
	"github.com/meridian-mesh/meridian/controlplane/identity/tokenreview"
	"github.com/meridian-mesh/meridian/internal/names"
	"github.com/meridian-mesh/meridian/test/apiserver"
)

// TokenReview against a real kube-apiserver (envtest; KUBEBUILDER_ASSETS,
// see hack/kube-assets.sh): a real projected token for the identity
// audience is certified as its service account; a forged one, or a real one
// for another audience, is refused.
func TestCertifyWithTokenReview(t *testing.T) {
	cfg := apiserver.Start(t)
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx := context.Background()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "emojivoto"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ServiceAccounts("emojivoto").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "web"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	token := func(aud string) []byte {
		tr, err := cs.CoreV1().ServiceAccounts("emojivoto").CreateToken(ctx, "web", &authnv1.TokenRequest{
			Spec: authnv1.TokenRequestSpec{Audiences: []string{aud}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return []byte(tr.Status.Token)
	}

	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	ca, err := identity.Generate(td)
	if err != nil {
		t.Fatal(err)
	}
	srv := identity.NewServer(ca, tokenreview.Verifier(cs, names.TokenAudience), identity.Options{})
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)

	resp, err := srv.Certify(ctx, &pb.CertifyRequest{Token: token(names.TokenAudience), CertificateSigningRequest: csr})
	if err != nil {
		t.Fatalf("a real token was refused: %v", err)
	}
	leaf, _ := x509.ParseCertificate(resp.GetLeafCertificate())
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://cluster.local/ns/emojivoto/sa/web" {
		t.Fatalf("certified %v", leaf.URIs)
	}

	// Forged: a JWT of the right shape, claims for the same account, signed by nobody.
	enc := base64.RawURLEncoding.EncodeToString
	forged := enc([]byte(`{"alg":"RS256","kid":"x"}`)) + "." +
		enc([]byte(`{"aud":["identity.meridian.io"],"iss":"https://kubernetes.default.svc.cluster.local","sub":"system:serviceaccount:emojivoto:web","exp":4102444800}`)) +
		"." + enc([]byte("not a signature"))
	for name, tok := range map[string][]byte{
		"forged":         []byte(forged),
		"other audience": token("some-other-service"),
	} {
		_, err := srv.Certify(ctx, &pb.CertifyRequest{Token: tok, CertificateSigningRequest: csr})
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s token: got %v, want Unauthenticated", name, err)
		}
	}
}
