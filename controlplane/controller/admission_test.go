package controller

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/meridian-mesh/meridian/api/proto/destination"
	idpb "github.com/meridian-mesh/meridian/api/proto/identity"
	"github.com/meridian-mesh/meridian/controlplane/destination"
	"github.com/meridian-mesh/meridian/controlplane/identity"
	"github.com/meridian-mesh/meridian/controlplane/store/local"
)

const testAPIIdentity = "spiffe://example.org/ns/meridian/sa/meridian-controller"

// An operator mistake the controller refuses anyway: a workload declared
// with the controller's own service account.
const impostorCredential = "impostor-credential"

var impostorYAML = `
apiVersion: v1
kind: Pod
metadata:
  name: impostor
  namespace: meridian
  annotations:
    local.meridian.io/credential-sha256: "` + local.CredentialSHA256(impostorCredential) + `"
spec: {serviceAccountName: meridian-controller}
`

// In local mode any process that reaches the controller may call Register.
// It must obtain nothing it was not given: no registration without the
// declared workload's own credential, none under another service account
// or for another service, no certificate for another identity or the
// controller's, no place in another service's endpoints. Real gRPC over
// TLS on loopback, a real controller over a directory.
func TestLocalRegistrationAdmitsOnlyDeclaredWorkloads(t *testing.T) {
	dir := t.TempDir()
	for name, y := range map[string]string{"demo.yaml": controllerYAML, "impostor.yaml": impostorYAML} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(y), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	td := spiffeid.RequireTrustDomainFromString("example.org")
	ca, err := identity.Generate(td)
	if err != nil {
		t.Fatal(err)
	}
	ctx, addr, _ := runLocal(t, Options{Store: "dir:" + dir, DestinationAddr: "127.0.0.1:0", TrustDomain: "example.org",
		DefaultNamespace: "demo", ShutdownGrace: time.Second, IdentityCA: ca, APIIdentity: testAPIIdentity,
		StartupGrace: -1}) // the refused registrations leave web-stable empty, said at once

	tlsCfg := tlsconfig.TLSClientConfig(x509bundle.FromX509Authorities(td, ca.Roots), tlsconfig.AuthorizeID(spiffeid.RequireFromString(testAPIIdentity)))
	tlsCfg.MinVersion = tls.VersionTLS13
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	dst := pb.NewDestinationClient(cc)
	ids := idpb.NewIdentityClient(cc)

	// register returns the registration's token, or the error that refused it.
	register := func(ctx context.Context, credential string, w *pb.Workload) (string, error) {
		t.Helper()
		if credential != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, destination.CredentialMetadata, credential)
		}
		s, err := dst.Register(ctx, w)
		if err != nil {
			return "", err
		}
		r, err := s.Recv()
		return r.GetToken(), err
	}
	const attacker = "127.0.0.1:6666"
	refused := []struct {
		what, credential string
		w                *pb.Workload
	}{
		{"no credential", "", &pb.Workload{Name: "web-local", Namespace: "demo", Service: "web", ServiceAccount: "web", Address: attacker}},
		{"another workload's credential", web1Credential, &pb.Workload{Name: "web-local", Namespace: "demo", Service: "web", ServiceAccount: "web", Address: attacker}},
		{"a wrong credential", "guess", &pb.Workload{Name: "web-1", Namespace: "demo", Service: "web", Address: attacker}},
		{"an undeclared workload", web1Credential, &pb.Workload{Name: "evil", Namespace: "demo", Service: "web", ServiceAccount: "web", Address: attacker}},
		{"another service account", web1Credential, &pb.Workload{Name: "web-1", Namespace: "demo", Service: "web", ServiceAccount: "admin", Address: attacker}},
		{"the controller's service account", web1Credential, &pb.Workload{Name: "web-1", Namespace: "demo", ServiceAccount: "meridian-controller", Address: attacker}},
		{"a service not declared for it", web1Credential, &pb.Workload{Name: "web-1", Namespace: "demo", Service: "web-stable", Address: attacker}},
		{"a workload declared as the controller", impostorCredential, &pb.Workload{Name: "impostor", Namespace: "meridian", Address: attacker}},
	}
	// The attempts' streams stay open until the endpoints are checked: an
	// admitted one would still be registered then.
	attempts, endAttempts := context.WithTimeout(ctx, 20*time.Second)
	defer endAttempts()
	for _, c := range refused {
		tok, err := register(attempts, c.credential, c.w)
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("registering with %s: token %q, err %v; want PermissionDenied", c.what, tok, err)
		}
	}

	// None of the refused attempts joined web-stable's endpoints.
	gctx, stopGet := context.WithTimeout(ctx, 10*time.Second)
	defer stopGet()
	g, err := dst.Get(gctx, &pb.GetDestination{Authority: "web-stable.demo.svc.cluster.local:80"})
	if err != nil {
		t.Fatal(err)
	}
	if u, err := g.Recv(); err != nil || u.GetNoEndpoints() == nil || !u.GetNoEndpoints().Exists {
		t.Errorf("web-stable's endpoints after refused registrations: %v, %v; want no_endpoints{exists: true}", u, err)
	}
	endAttempts()

	// A forged token proves nothing.
	csr := func(uri string) []byte {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.CertificateRequest{}
		if uri != "" {
			u, _ := url.Parse(uri)
			tmpl.URIs = []*url.URL{u}
		}
		b, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if _, err := ids.Certify(ctx, &idpb.CertifyRequest{Token: []byte("forged"), Identity: testAPIIdentity, CertificateSigningRequest: csr(testAPIIdentity)}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("Certify with a forged token: %v; want Unauthenticated", err)
	}

	// The declared workload with its credential registers, under its
	// declared service account (it named none), and its token proves that
	// identity only.
	rctx, unregister := context.WithCancel(ctx)
	defer unregister()
	tok, err := register(rctx, web1Credential, &pb.Workload{Name: "web-1", Namespace: "demo", Service: "web", Address: "127.0.0.1:4143"})
	if err != nil {
		t.Fatalf("the declared workload could not register: %v", err)
	}
	for _, other := range []string{testAPIIdentity, "spiffe://example.org/ns/demo/sa/admin", "spiffe://example.org/ns/demo/sa/default"} {
		if _, err := ids.Certify(ctx, &idpb.CertifyRequest{Token: []byte(tok), Identity: other, CertificateSigningRequest: csr(other)}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("Certify for %s with web-1's token: %v; want PermissionDenied", other, err)
		}
		if _, err := ids.Certify(ctx, &idpb.CertifyRequest{Token: []byte(tok), CertificateSigningRequest: csr(other)}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("Certify of a CSR for %s with web-1's token: %v; want PermissionDenied", other, err)
		}
	}
	resp, err := ids.Certify(ctx, &idpb.CertifyRequest{Token: []byte(tok), CertificateSigningRequest: csr("")})
	if err != nil {
		t.Fatalf("Certify with web-1's token: %v", err)
	}
	leaf, err := x509.ParseCertificate(resp.GetLeafCertificate())
	if err != nil {
		t.Fatal(err)
	}
	if got := leaf.URIs[0].String(); got != "spiffe://example.org/ns/demo/sa/web" {
		t.Fatalf("web-1 was certified as %s", got)
	}
}

// The API in local mode is not served in plaintext when --api-identity is
// set: a plaintext client gets nothing.
func TestLocalAPIRefusesPlaintextWithAPIIdentity(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "demo.yaml"), []byte(controllerYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, addr, _ := runLocal(t, Options{Store: "dir:" + dir, DestinationAddr: "127.0.0.1:0", TrustDomain: "example.org",
		DefaultNamespace: "demo", ShutdownGrace: time.Second, APIIdentity: testAPIIdentity})
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	rctx, stop := context.WithTimeout(ctx, 5*time.Second)
	defer stop()
	s, err := pb.NewDestinationClient(cc).Register(metadata.AppendToOutgoingContext(rctx, destination.CredentialMetadata, web1Credential),
		&pb.Workload{Name: "web-1", Namespace: "demo", Service: "web", Address: "127.0.0.1:4143"})
	if err == nil {
		_, err = s.Recv()
	}
	if err == nil {
		t.Fatal("a plaintext client registered with a controller serving TLS")
	}
}

// Local mode's API listens on loopback unless told otherwise (it listened
// on every interface); kube mode's on every interface, where pods reach it.
func TestLocalAPIOnLoopbackByDefault(t *testing.T) {
	if got := destinationAddr("", true); got != "127.0.0.1:8086" {
		t.Errorf("local mode's default: %s", got)
	}
	if got := destinationAddr("", false); got != ":8086" {
		t.Errorf("kube mode's default: %s", got)
	}
	if got := destinationAddr("0.0.0.0:9000", true); got != "0.0.0.0:9000" {
		t.Errorf("an explicit address: %s", got)
	}
	for addr, want := range map[string]bool{"127.0.0.1:1": true, "[::1]:1": true, "0.0.0.0:1": false, "[::]:1": false} {
		a, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if loopback(a) != want {
			t.Errorf("loopback(%s) = %v", addr, !want)
		}
	}
}
