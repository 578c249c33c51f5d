package controller

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meridian-mesh/meridian/controlplane/identity"
)

// With --api-identity the gRPC API is served over TLS with a certificate
// from the identity issuer: a client that verifies that SPIFFE ID with the
// trust anchors gets through; a plaintext client, and a client expecting
// another identity, do not.
func TestControllerAPITLS(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "demo.yaml"), []byte(controllerYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	issuer := filepath.Join(t.TempDir(), "issuer")
	const apiID = "spiffe://example.org/ns/meridian/sa/meridian-controller"
	ctx, addr, _ := runLocal(t, Options{Store: "dir:" + dir, DestinationAddr: "127.0.0.1:0", TrustDomain: "example.org",
		DefaultNamespace: "demo", ShutdownGrace: time.Second, IdentityIssuerDir: issuer, APIIdentity: apiID})
	rootsPEM, err := os.ReadFile(filepath.Join(issuer, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots, err := parseRoots(rootsPEM)
	if err != nil {
		t.Fatal(err)
	}
	bundle := x509bundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString("example.org"), roots)
	check := func(creds credentials.TransportCredentials) error {
		cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			return err
		}
		defer cc.Close()
		cctx, c := context.WithTimeout(ctx, 3*time.Second)
		defer c()
		_, err = healthpb.NewHealthClient(cc).Check(cctx, &healthpb.HealthCheckRequest{})
		return err
	}
	verify := func(id string) credentials.TransportCredentials {
		return credentials.NewTLS(tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(spiffeid.RequireFromString(id))))
	}
	if err := check(verify(apiID)); err != nil {
		t.Fatalf("a client verifying %s: %v", apiID, err)
	}
	if err := check(verify("spiffe://example.org/ns/meridian/sa/impostor")); err == nil {
		t.Error("a client expecting another identity got through")
	}
	if err := check(insecure.NewCredentials()); err == nil {
		t.Error("a plaintext client got through a TLS API")
	}
	if err := check(credentials.NewTLS(&tls.Config{})); err == nil {
		t.Error("a client trusting only the system roots got through")
	}
}

func TestControllerAPIIdentityNeedsIssuerTrustDomain(t *testing.T) {
	ca, err := identity.Generate(spiffeid.RequireTrustDomainFromString("example.org"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newAPICert(ca, "spiffe://other.org/ns/meridian/sa/meridian-controller", time.Hour); err == nil {
		t.Error("an API identity outside the issuer's trust domain was accepted")
	}
	if _, err := newAPICert(ca, "not-a-spiffe-id", time.Hour); err == nil {
		t.Error("a malformed API identity was accepted")
	}
}

// The API certificate is reissued, with a new key, once 70% of its lifetime
// has passed, and kept before that.
func TestAPICertRotates(t *testing.T) {
	ca, err := identity.Generate(spiffeid.RequireTrustDomainFromString("example.org"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := newAPICert(ca, "spiffe://example.org/ns/meridian/sa/meridian-controller", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := c.get()
	now := time.Now()
	c.now = func() time.Time { return now.Add(30 * time.Minute) }
	if same, _ := c.get(); same != first {
		t.Error("reissued at 50% of the lifetime")
	}
	c.now = func() time.Time { return now.Add(43 * time.Minute) }
	second, _ := c.get()
	if second == first || second.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 {
		t.Error("not reissued after 70% of the lifetime")
	}
	if second.Leaf.URIs[0].String() != "spiffe://example.org/ns/meridian/sa/meridian-controller" {
		t.Errorf("reissued certificate is for %v", second.Leaf.URIs)
	}
}
