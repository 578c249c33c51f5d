package gateway

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

// clientCertPEM is a self-signed client certificate (its own CA) for cn.
func clientCertPEM(t testing.TB, cn string) (chain, key []byte, cert *x509.Certificate) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, err = x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), cert
}

// Snapshot.backend_client_certificate (the Gateway's spec.tls.backend): the
// gateway presents it on the TLS it originates for a BackendTLSPolicy, to a
// backend that requires and verifies a client certificate; without it the
// handshake fails; a new certificate replaces the old one on the next
// snapshot; and a certificate that does not parse refuses the snapshot.
func TestBackendTLSClientCertificate(t *testing.T) {
	chain1, key1, cert1 := clientCertPEM(t, "gateway-one")
	chain2, key2, cert2 := clientCertPEM(t, "gateway-two")
	clients := x509.NewCertPool()
	clients.AddCert(cert1)
	clients.AddCert(cert2)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "client "+r.TLS.PeerCertificates[0].Subject.CommonName)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clients}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	pn := freePort(t)
	version := func(v string, client *gatewaypb.Certificate) *gatewaypb.Snapshot {
		s := snap(v, httpPort(pn, httpListener("l", "", hostOf("",
			ruleTo("secure", prefix("/"), &gatewaypb.Backend{Authority: "secure.svc:443", Weight: 1, Name: "ns/secure:443",
				Tls: &gatewaypb.BackendTLS{ServerName: "example.com", CaCertificates: ca}})))))
		s.BackendClientCertificate = client
		return s
	}
	g := startGateway(t, dsts(t, map[string][]string{"secure.svc:443": {srv.Listener.Addr().String()}}), version("v1", nil))

	// Under TLS 1.3 the backend refuses after the client's side of the
	// handshake is done: the refusal comes with the first read (502), or
	// with the handshake (503) under TLS 1.2.
	resp, body := get(t, nil, pn, "x.test", "/")
	if resp.StatusCode != 502 && resp.StatusCode != 503 || !strings.Contains(body, "certificate required") && resp.StatusCode == 502 {
		t.Errorf("no client certificate: %s %q, want 502 or 503 (the backend requires a certificate)", resp.Status, body)
	}

	if err := g.Apply(version("v2", &gatewaypb.Certificate{Name: "ns/client-one", CertChain: chain1, PrivateKey: key1})); err != nil {
		t.Fatal(err)
	}
	if resp, body := get(t, nil, pn, "x.test", "/"); resp.StatusCode != 200 || body != "client gateway-one" {
		t.Errorf("client certificate one: %s %q, want 200 %q", resp.Status, body, "client gateway-one")
	}
	if d := g.Diagnostics().BackendClientCertificate; d == nil || d.Name != "ns/client-one" || d.Subject != "CN=gateway-one" {
		t.Errorf("diagnostics: backend client certificate %+v", d)
	}

	// The connections that presented the first certificate are not reused
	// for the second.
	if err := g.Apply(version("v3", &gatewaypb.Certificate{Name: "ns/client-two", CertChain: chain2, PrivateKey: key2})); err != nil {
		t.Fatal(err)
	}
	if resp, body := get(t, nil, pn, "x.test", "/"); resp.StatusCode != 200 || body != "client gateway-two" {
		t.Errorf("client certificate two: %s %q, want 200 %q", resp.Status, body, "client gateway-two")
	}

	err := g.Apply(version("v4", &gatewaypb.Certificate{Name: "ns/bad", CertChain: chain1, PrivateKey: key2}))
	if err == nil {
		t.Fatal("a client certificate with another certificate's key was applied")
	}
	if want := "backend_client_certificate (ns/bad): cert_chain, private_key:"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name %q", err, want)
	}
	if g.Version() != "v3" {
		t.Errorf("serving %q after a refused snapshot, want v3", g.Version())
	}
}
