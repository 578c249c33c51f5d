package gateway

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// issue signs tmpl's certificate with ca's key: a client certificate
// (ExtKeyUsageClientAuth) unless tmpl is a CA.
func (ca *testCA) issue(t *testing.T, tmpl *x509.Certificate) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	if tmpl.IsCA {
		tmpl.BasicConstraintsValid = true
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &k.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

// certHeaders sends GET / over TLS to the port as mtlsGet does, with
// forged client certificate headers, and returns the headers the backend
// got (the echo's X-Got-*).
func certHeaders(t *testing.T, port uint32, host string, cert *tls.Certificate, h2 bool) http.Header {
	t.Helper()
	tr := mtlsTransport(host, cert, h2)
	defer tr.CloseIdleConnections()
	req, err := http.NewRequest("GET", "https://127.0.0.1:"+itoa(port)+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	req.Header.Set("X-Forwarded-Client-Cert", `By=spiffe://evil;Hash=00;Subject="CN=admin"`)
	req.Header.Set("Client-Cert", ":AAAA:")
	req.Header.Set("Client-Cert-Chain", ":AAAA:")
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s on port %d (h2 %v): %v", host, port, h2, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 || (h2 && resp.ProtoMajor != 2) {
		t.Fatalf("%s on port %d (h2 %v): %s over %s", host, port, h2, resp.Status, resp.Proto)
	}
	return resp.Header
}

// A client certificate the listener verified reaches the backend in
// X-Forwarded-Client-Cert (Envoy's format: Hash, Subject, URI, DNS) and
// RFC 9440's Client-Cert and Client-Cert-Chain, over HTTP/1.1 and h2, in
// both validation modes (the insecure fallback verifies it after the
// handshake). Whatever the client sent in those headers itself is removed
// everywhere: a certificate of another CA in the fallback mode, none, or
// a listener without validation get no such header at all.
func TestClientCertHeaders(t *testing.T) {
	v1, v2 := startEcho(t, "v1", nil), startEcho(t, "v2", nil)
	caDefault, caPerPort := newCA(t, "default CA"), newCA(t, "per-port CA")
	leaf, key := caDefault.issue(t, &x509.Certificate{
		Subject:  pkix.Name{CommonName: "client", Organization: []string{"Acme, Inc."}},
		DNSNames: []string{"client.example.org", "alt.example.org"},
		URIs:     []*url.URL{{Scheme: "spiffe", Host: "example.org", Path: "/ns/a/sa/client"}}})
	direct := &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key}
	// A client certificate from an intermediate, sent with it.
	inter, interKey := caDefault.issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "intermediate"}, IsCA: true})
	mid := &testCA{cert: inter, key: interKey}
	viaLeaf, viaKey := mid.issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "via intermediate"}})
	viaInter := &tls.Certificate{Certificate: [][]byte{viaLeaf.Raw, inter.Raw}, PrivateKey: viaKey}
	other := caPerPort.client(t, "other CA's client")

	strict, perPort, fallback := freePort(t), freePort(t), freePort(t)
	startGateway(t, dsts(t, map[string][]string{"v1.svc:80": {v1.addr}, "v2.svc:80": {v2.addr}}),
		frontendSnapshot(t, "v1", strict, perPort, fallback, caDefault, caPerPort))

	sum := sha256.Sum256(leaf.Raw)
	wantDirect := "Hash=" + hex.EncodeToString(sum[:]) + `;Subject="CN=client,O=Acme\, Inc.";URI=spiffe://example.org/ns/a/sa/client;DNS=client.example.org;DNS=alt.example.org`
	sum = sha256.Sum256(viaLeaf.Raw)
	wantVia := "Hash=" + hex.EncodeToString(sum[:]) + `;Subject="CN=via intermediate"`
	b64 := func(c *x509.Certificate) string { return ":" + base64.StdEncoding.EncodeToString(c.Raw) + ":" }

	for _, c := range []struct {
		name           string
		port           uint32
		host           string
		cert           *tls.Certificate
		xfcc, cert9440 string // "": the header must be absent
		chain9440      string
	}{
		{"AllowValidOnly", strict, "example.org", direct, wantDirect, b64(leaf), ""},
		{"AllowValidOnly, through an intermediate", strict, "example.org", viaInter, wantVia, b64(viaLeaf), b64(inter)},
		{"fallback: valid", fallback, "example.org", direct, wantDirect, b64(leaf), ""},
		{"fallback: valid through an intermediate", fallback, "example.org", viaInter, wantVia, b64(viaLeaf), b64(inter)},
		{"fallback: another CA", fallback, "example.org", other, "", "", ""},
		{"fallback: none", fallback, "example.org", nil, "", "", ""},
		{"listener without validation", strict, "open.test", direct, "", "", ""},
	} {
		for _, h2 := range []bool{false, true} {
			got := certHeaders(t, c.port, c.host, c.cert, h2)
			for _, h := range []struct{ name, want string }{
				{"X-Forwarded-Client-Cert", c.xfcc}, {"Client-Cert", c.cert9440}, {"Client-Cert-Chain", c.chain9440},
			} {
				vs := got.Values("X-Got-" + h.name)
				switch {
				case h.want == "" && len(vs) > 0:
					t.Errorf("%s (h2 %v): the backend got %s %q, want none", c.name, h2, h.name, vs)
				case h.want != "" && (len(vs) != 1 || vs[0] != h.want):
					t.Errorf("%s (h2 %v): %s %q\nwant %q", c.name, h2, h.name, vs, h.want)
				}
			}
		}
	}
}
