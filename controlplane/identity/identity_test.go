package identity_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/meridian-mesh/meridian/api/proto/identity"
	"github.com/meridian-mesh/meridian/controlplane/identity"
)

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

func csr(t *testing.T, uri string) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.CertificateRequest{}
	if uri != "" {
		u, _ := url.Parse(uri)
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

func localServer(t *testing.T, ca identity.CASource, lifetime time.Duration) *identity.Server {
	tokens := map[string]identity.Subject{"good": {Namespace: "emojivoto", ServiceAccount: "web"}}
	return identity.NewServer(ca, identity.LocalVerifier(func(tok string) (identity.Subject, bool) {
		s, ok := tokens[tok]
		return s, ok
	}), identity.Options{Lifetime: lifetime})
}

func TestCertifyLocalToken(t *testing.T) {
	ca, err := identity.Generate(td)
	if err != nil {
		t.Fatal(err)
	}
	s := localServer(t, ca, 0)
	const want = "spiffe://cluster.local/ns/emojivoto/sa/web"
	der, key := csr(t, want)
	resp, err := s.Certify(context.Background(), &pb.CertifyRequest{Identity: want, Token: []byte("good"), CertificateSigningRequest: der})
	if err != nil {
		t.Fatal(err)
	}
	chain := append([][]byte{resp.GetLeafCertificate()}, resp.GetIntermediateCertificates()...)
	bundle := x509bundle.FromX509Authorities(td, ca.Roots)
	id, _, err := x509svid.ParseAndVerify(chain, bundle)
	if err != nil {
		t.Fatalf("the chain does not verify against the trust anchor: %v", err)
	}
	if id.String() != want {
		t.Fatalf("SPIFFE ID %s, want %s", id, want)
	}
	leaf, _ := x509.ParseCertificate(resp.GetLeafCertificate())
	if life := time.Until(leaf.NotAfter); life < 23*time.Hour || life > 25*time.Hour {
		t.Errorf("leaf valid for %v, want about 24h", life)
	}
	if !leaf.PublicKey.(*ecdsa.PublicKey).Equal(&key.PublicKey) {
		t.Error("leaf does not certify the CSR's key")
	}
	if !resp.GetValidUntil().AsTime().Equal(leaf.NotAfter) {
		t.Error("valid_until differs from the leaf's NotAfter")
	}
	// A CSR without URI SAN gets whatever the token proves.
	der, _ = csr(t, "")
	if _, err := s.Certify(context.Background(), &pb.CertifyRequest{Token: []byte("good"), CertificateSigningRequest: der}); err != nil {
		t.Fatal(err)
	}
}

func TestCertifyRefuses(t *testing.T) {
	ca, err := identity.Generate(td)
	if err != nil {
		t.Fatal(err)
	}
	s := localServer(t, ca, 0)
	good, _ := csr(t, "spiffe://cluster.local/ns/emojivoto/sa/web")
	other, _ := csr(t, "spiffe://cluster.local/ns/emojivoto/sa/voting")
	foreignTD, _ := csr(t, "spiffe://evil.example/ns/emojivoto/sa/web")
	controller, _ := csr(t, "spiffe://cluster.local/ns/meridian/sa/meridian-controller")
	twoIDs := csrWith(t, &x509.CertificateRequest{URIs: []*url.URL{
		mustURL("spiffe://cluster.local/ns/emojivoto/sa/web"), mustURL("spiffe://cluster.local/ns/meridian/sa/meridian-controller")}})
	for _, tc := range []struct {
		name string
		req  *pb.CertifyRequest
		code codes.Code
	}{
		{"unknown token", &pb.CertifyRequest{Token: []byte("forged"), CertificateSigningRequest: good}, codes.Unauthenticated},
		{"no token", &pb.CertifyRequest{CertificateSigningRequest: good}, codes.InvalidArgument},
		{"other identity asked", &pb.CertifyRequest{Identity: "spiffe://cluster.local/ns/emojivoto/sa/voting", Token: []byte("good"), CertificateSigningRequest: good}, codes.PermissionDenied},
		{"CSR for other identity", &pb.CertifyRequest{Token: []byte("good"), CertificateSigningRequest: other}, codes.PermissionDenied},
		{"garbage CSR", &pb.CertifyRequest{Token: []byte("good"), CertificateSigningRequest: []byte("nope")}, codes.InvalidArgument},
		{"other trust domain asked", &pb.CertifyRequest{Identity: "spiffe://evil.example/ns/emojivoto/sa/web", Token: []byte("good"), CertificateSigningRequest: good}, codes.PermissionDenied},
		{"CSR for other trust domain", &pb.CertifyRequest{Token: []byte("good"), CertificateSigningRequest: foreignTD}, codes.PermissionDenied},
		{"CSR for the controller", &pb.CertifyRequest{Token: []byte("good"), CertificateSigningRequest: controller}, codes.PermissionDenied},
		{"CSR with its identity and another", &pb.CertifyRequest{Token: []byte("good"), CertificateSigningRequest: twoIDs}, codes.PermissionDenied},
	} {
		_, err := s.Certify(context.Background(), tc.req)
		if status.Code(err) != tc.code {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.code)
		}
	}
}

// A CSR's other names (DNS names, such as the controller's Service, IP
// addresses, e-mail, a subject) are never signed: the leaf carries the
// identity the token proves and nothing else.
func TestCertifySignsOnlyTheProvenIdentity(t *testing.T) {
	ca, err := identity.Generate(td)
	if err != nil {
		t.Fatal(err)
	}
	s := localServer(t, ca, 0)
	der := csrWith(t, &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: "meridian-controller.meridian.svc"},
		DNSNames:       []string{"meridian-controller.meridian.svc", "kubernetes.default.svc"},
		IPAddresses:    []net.IP{net.ParseIP("127.0.0.1")},
		EmailAddresses: []string{"admin@example.org"},
	})
	resp, err := s.Certify(context.Background(), &pb.CertifyRequest{Token: []byte("good"), CertificateSigningRequest: der})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(resp.GetLeafCertificate())
	if err != nil {
		t.Fatal(err)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 || leaf.Subject.CommonName == "meridian-controller.meridian.svc" ||
		len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://cluster.local/ns/emojivoto/sa/web" || leaf.IsCA {
		t.Fatalf("leaf carries more than the proven identity: CN %q DNS %v IP %v email %v URIs %v CA %v",
			leaf.Subject.CommonName, leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses, leaf.URIs, leaf.IsCA)
	}
}

func csrWith(t *testing.T, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

func TestLoadSecretShapedDir(t *testing.T) {
	ca, err := identity.Generate(td)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := ca.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	loaded, err := identity.Load(td, dir)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Issuer.Equal(ca.Issuer) || !loaded.Roots[0].Equal(ca.Roots[0]) {
		t.Fatal("loaded CA differs")
	}
	// An issuer that does not chain to ca.crt is refused.
	other, _ := identity.Generate(td)
	if _, err := identity.Parse(td, mustPEM(ca.Issuer), keyPEM(t, dir), other.RootsPEM()); err == nil {
		t.Fatal("issuer not signed by ca.crt was accepted")
	}
}

func TestLeafNeverOutlivesIssuer(t *testing.T) {
	ca, _ := identity.Generate(td)
	id, _ := identity.ID(td, "ns", "sa")
	leaf, _, err := ca.Issue(id, ca.Issuer.PublicKey, 100*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if leaf.NotAfter.After(ca.Issuer.NotAfter) {
		t.Fatal("leaf outlives its issuer")
	}
}
