package gateway

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

// testCA is a CA that signs client certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t testing.TB, name string) *testCA {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: k, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// client issues a client certificate (ExtKeyUsageClientAuth) signed by ca.
func (ca *testCA) client(t testing.TB, name string) *tls.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &k.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
}

// mtlsGet sends GET / with Host host over TLS (SNI host) to the port,
// presenting cert (nil: none). The certificate is offered whatever CAs the
// gateway names as acceptable, as a client that does not filter by them
// (Go's own would stay silent with a certificate of another CA), so that
// the gateway's verification is what decides. It returns the backend that
// answered, or the error.
func mtlsGet(port uint32, host string, cert *tls.Certificate, h2 bool) (string, error) {
	tr := mtlsTransport(host, cert, h2)
	defer tr.CloseIdleConnections()
	req, err := http.NewRequest("GET", "https://127.0.0.1:"+itoa(port)+"/", nil)
	if err != nil {
		return "", err
	}
	req.Host = host
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("status %s", resp.Status)
	}
	return resp.Header.Get("X-Backend"), nil
}

// mtlsTransport is a client transport to SNI host presenting cert (nil:
// none) whatever CAs the server names, one connection per request.
func mtlsTransport(host string, cert *tls.Certificate, h2 bool) *http.Transport {
	cfg := &tls.Config{ServerName: host, InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if cert == nil {
				return &tls.Certificate{}, nil
			}
			return cert, nil
		}}
	return &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: h2, DisableKeepAlives: true}
}

// frontendSnapshot: three TLS ports, as the compiler writes a Gateway with
// a default validation (caDefault), a perPort one with another CA, and a
// perPort AllowInsecureFallback; plus a listener without validation for
// another name on the default's port.
func frontendSnapshot(t *testing.T, version string, strict, perPort, fallback uint32, caDefault, caPerPort *testCA) *gatewaypb.Snapshot {
	chain, key := certPEM(t, "example.org", "second-example.org", "open.test")
	https := func(name, hostname, backend string, cv *gatewaypb.ClientValidation) *gatewaypb.Listener {
		return &gatewaypb.Listener{Name: name, Hostname: hostname, Mode: gatewaypb.Listener_HTTPS, Certificates: []string{"ns/cert"}, ClientValidation: cv,
			Hosts: []*gatewaypb.Host{hostOf("", ruleTo(name, nil, to(backend, 1)))}}
	}
	s := snap(version,
		tlsPort(strict,
			https("https", "example.org", "v1.svc:80", &gatewaypb.ClientValidation{CaCertificates: caDefault.pem}),
			https("open", "open.test", "v1.svc:80", nil)),
		tlsPort(perPort, https("https-with-hostname", "second-example.org", "v2.svc:80", &gatewaypb.ClientValidation{CaCertificates: caPerPort.pem})),
		tlsPort(fallback, https("fallback", "", "v1.svc:80", &gatewaypb.ClientValidation{CaCertificates: caDefault.pem, InsecureFallback: true})),
	)
	s.Certificates = []*gatewaypb.Certificate{{Name: "ns/cert", CertChain: chain, PrivateKey: key}}
	return s
}

// AllowValidOnly serves only clients whose certificate chains to the
// port's CAs (the default's, or the perPort override's); none, or one of
// another CA, fails the handshake. AllowInsecureFallback serves all three.
// A listener without validation on the same port asks for nothing.
func TestFrontendClientValidation(t *testing.T) {
	v1, v2 := startEcho(t, "v1", nil), startEcho(t, "v2", nil)
	caDefault, caPerPort := newCA(t, "default CA"), newCA(t, "per-port CA")
	certDefault, certPerPort := caDefault.client(t, "client"), caPerPort.client(t, "per-port client")
	selfSigned := newCA(t, "self")
	selfCert := selfSigned.client(t, "client") // same subject, another issuer key
	strict, perPort, fallback := freePort(t), freePort(t), freePort(t)
	g := startGateway(t, dsts(t, map[string][]string{"v1.svc:80": {v1.addr}, "v2.svc:80": {v2.addr}}),
		frontendSnapshot(t, "v1", strict, perPort, fallback, caDefault, caPerPort))

	for _, c := range []struct {
		name string
		port uint32
		host string
		cert *tls.Certificate
		want string // backend, or "" for a refused handshake
	}{
		{"default CA's client", strict, "example.org", certDefault, "v1"},
		{"per-port CA's client on the default's port", strict, "example.org", certPerPort, ""},
		{"no certificate", strict, "example.org", nil, ""},
		{"another issuer", strict, "example.org", selfCert, ""},
		{"listener without validation on the same port", strict, "open.test", nil, "v1"},
		{"per-port CA's client", perPort, "second-example.org", certPerPort, "v2"},
		{"default CA's client on the per-port port", perPort, "second-example.org", certDefault, ""},
		{"fallback: valid", fallback, "example.org", certDefault, "v1"},
		{"fallback: another CA", fallback, "example.org", certPerPort, "v1"},
		{"fallback: none", fallback, "example.org", nil, "v1"},
	} {
		for _, h2 := range []bool{false, true} {
			got, err := mtlsGet(c.port, c.host, c.cert, h2)
			switch {
			case c.want == "" && err == nil:
				t.Errorf("%s (h2 %v): served by %s, want the handshake refused", c.name, h2, got)
			case c.want != "" && (err != nil || got != c.want):
				t.Errorf("%s (h2 %v): %q, %v; want served by %s", c.name, h2, got, err, c.want)
			}
		}
	}

	// The request's host must be the listener the SNI chose: a client
	// validated for nothing cannot reach the validating listener through
	// the open one's connection.
	cfg := &tls.Config{ServerName: "open.test", InsecureSkipVerify: true}
	tr := &http.Transport{TLSClientConfig: cfg}
	req, _ := http.NewRequest("GET", "https://127.0.0.1:"+itoa(strict)+"/", nil)
	req.Host = "example.org"
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	tr.CloseIdleConnections()
	if resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("validating listener's host over the open listener's connection: %s, want 421", resp.Status)
	}

	// A new snapshot swaps the CAs: new handshakes follow it.
	if err := g.Apply(frontendSnapshot(t, "v2", strict, perPort, fallback, caPerPort, caDefault)); err != nil {
		t.Fatal(err)
	}
	if _, err := mtlsGet(strict, "example.org", certPerPort, false); err != nil {
		t.Errorf("after the swap, the new CA's client: %v", err)
	}
	if got, err := mtlsGet(strict, "example.org", certDefault, false); err == nil {
		t.Errorf("after the swap, the old CA's client served by %s", got)
	}

	d := g.Diagnostics()
	modes := map[string]string{}
	for _, p := range d.Ports {
		for _, l := range p.Listeners {
			modes[l.Name] = l.ClientValidation
		}
	}
	if modes["https"] != "AllowValidOnly" || modes["fallback"] != "AllowInsecureFallback" || modes["open"] != "" {
		t.Errorf("diagnostics client validation %v", modes)
	}
}

// Clients with and without valid certificates at once, over both
// protocols: each gets its own verdict (the handshakes share the
// listener's configuration). Bounded: 4 workers × 12 requests.
func TestFrontendClientValidationConcurrent(t *testing.T) {
	v1, v2 := startEcho(t, "v1", nil), startEcho(t, "v2", nil)
	caDefault, caPerPort := newCA(t, "default CA"), newCA(t, "per-port CA")
	good, bad := caDefault.client(t, "good"), caPerPort.client(t, "bad")
	strict, perPort, fallback := freePort(t), freePort(t), freePort(t)
	startGateway(t, dsts(t, map[string][]string{"v1.svc:80": {v1.addr}, "v2.svc:80": {v2.addr}}),
		frontendSnapshot(t, "v1", strict, perPort, fallback, caDefault, caPerPort))
	var wg sync.WaitGroup
	errs := make(chan string, 4*12)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 12 {
				cert, ok := good, true
				switch (w + i) % 3 {
				case 1:
					cert, ok = bad, false
				case 2:
					cert, ok = nil, false
				}
				got, err := mtlsGet(strict, "example.org", cert, i%2 == 0)
				if ok != (err == nil) || (ok && got != "v1") {
					errs <- fmt.Sprintf("worker %d request %d (valid %v): %q, %v", w, i, ok, got, err)
				}
				if got, err := mtlsGet(fallback, "example.org", cert, i%2 == 1); err != nil || got != "v1" {
					errs <- fmt.Sprintf("fallback worker %d request %d: %q, %v", w, i, got, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	var all []string
	for e := range errs {
		all = append(all, e)
	}
	if len(all) > 0 {
		t.Error(strings.Join(all, "\n"))
	}
}

// A snapshot whose validation cannot work is refused whole, naming the
// field.
func TestFrontendClientValidationRefused(t *testing.T) {
	ca := newCA(t, "ca")
	g := startGateway(t, dsts(t, nil), nil)
	pn := freePort(t)
	bad := frontendSnapshot(t, "v1", pn, freePort(t), freePort(t), ca, ca)
	bad.Ports[0].Listeners[0].ClientValidation.CaCertificates = []byte("junk")
	if err := g.Apply(bad); err == nil || !strings.Contains(err.Error(), "client_validation: ca_certificates") {
		t.Errorf("junk CA: %v", err)
	}
	onHTTP := snap("v2", httpPort(pn, httpListener("h", "", hostOf("", ruleTo("h", nil, to("v1.svc:80", 1))))))
	onHTTP.Ports[0].Listeners[0].ClientValidation = &gatewaypb.ClientValidation{CaCertificates: ca.pem}
	if err := g.Apply(onHTTP); err == nil || !strings.Contains(err.Error(), "client_validation: only HTTPS") {
		t.Errorf("validation on an HTTP listener: %v", err)
	}
}
