package controller

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/meridian-mesh/meridian/api/proto/destination"
	idpb "github.com/meridian-mesh/meridian/api/proto/identity"
	"github.com/meridian-mesh/meridian/controlplane/destination"
	"github.com/meridian-mesh/meridian/controlplane/identity"
	"github.com/meridian-mesh/meridian/proxy/tlsid"
)

// Local mode end to end: the controller generates an issuer into
// --identity-issuer-dir, a workload registers, and its proxy obtains a
// certificate with the registration's token; the token dies with the
// registration.
func TestControllerIdentityLocal(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "demo.yaml"), []byte(controllerYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	issuer := filepath.Join(t.TempDir(), "issuer")
	ctx, addr, _ := runLocal(t, Options{Store: "dir:" + dir, DestinationAddr: "127.0.0.1:0", TrustDomain: "example.org",
		DefaultNamespace: "demo", ShutdownGrace: time.Second, IdentityIssuerDir: issuer})
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := os.Stat(filepath.Join(issuer, "ca.crt")); err != nil {
		t.Fatalf("no generated trust anchor: %v", err)
	}
	rootsPEM, _ := os.ReadFile(filepath.Join(issuer, "ca.crt"))
	roots, err := parseRoots(rootsPEM)
	if err != nil {
		t.Fatal(err)
	}

	rctx, unregister := context.WithCancel(ctx)
	reg, err := pb.NewDestinationClient(cc).Register(metadata.AppendToOutgoingContext(rctx, destination.CredentialMetadata, web1Credential), &pb.Workload{Name: "web-1", Namespace: "demo", Service: "web",
		ServiceAccount: "web", Address: "127.0.0.1:4143"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := reg.Recv()
	if err != nil {
		t.Fatal(err)
	}
	want := spiffeid.RequireFromString("spiffe://example.org/ns/demo/sa/web")
	id, err := tlsid.New(tlsid.Config{ID: want, Roots: roots, Client: idpb.NewIdentityClient(cc),
		Token: func() ([]byte, error) { return []byte(r.GetToken()), nil }})
	if err != nil {
		t.Fatal(err)
	}
	ictx, stop := context.WithCancel(ctx)
	go id.Run(ictx)
	select {
	case <-id.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("no certificate")
	}
	stop()
	if got := id.Chain()[0].URIs[0].String(); got != want.String() {
		t.Fatalf("certified %s", got)
	}

	unregister()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := idpb.NewIdentityClient(cc).Certify(ctx, &idpb.CertifyRequest{Token: []byte(r.GetToken()), CertificateSigningRequest: csr})
		if status.Code(err) == codes.Unauthenticated {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("token still valid after unregistering: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func parseRoots(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out, nil
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
}

// The controller looks at --identity-issuer-dir again while it runs: the
// issuer's expiry is exported, and a change it must refuse (an issuer under
// other trust anchors) is counted and leaves the issuer in use signing.
// (controlplane/identity's tests renew the issuer for real.)
func TestControllerWatchesIssuerDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "demo.yaml"), []byte(controllerYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	issuerDir := t.TempDir()
	ca, err := identity.Generate(spiffeid.RequireTrustDomainFromString("example.org"))
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.WriteDir(issuerDir); err != nil {
		t.Fatal(err)
	}
	_, _, admin := runLocal(t, Options{Store: "dir:" + dir, DestinationAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", TrustDomain: "example.org",
		DefaultNamespace: "demo", ShutdownGrace: time.Second, IdentityIssuerDir: issuerDir, IdentityIssuerReload: 20 * time.Millisecond})
	metric := func(name string) string {
		t.Helper()
		resp, err := http.Get("http://" + admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, name+" "); ok {
				return v
			}
		}
		return ""
	}
	got, err := strconv.ParseFloat(metric("identity_issuer_expiration_timestamp_seconds"), 64)
	if err != nil || int64(got) != ca.Issuer.NotAfter.Unix() {
		t.Fatalf("identity_issuer_expiration_timestamp_seconds = %v (%v), want %d", got, err, ca.Issuer.NotAfter.Unix())
	}

	stranger, _ := identity.Generate(spiffeid.RequireTrustDomainFromString("example.org"))
	if err := stranger.WriteDir(issuerDir); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for metric(`identity_issuer_reloads_total{result="refused"}`) != "1" {
		if time.Now().After(deadline) {
			t.Fatal(`identity_issuer_reloads_total{result="refused"} never reached 1`)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := metric(`identity_issuer_reloads_total{result="loaded"}`); got != "" {
		t.Fatalf("a refused issuer was counted as loaded: %s", got)
	}
}
