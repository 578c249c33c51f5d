package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

// tlsSnapshot: one TLS port with HTTPS listeners for a.test (two
// certificates: ECDSA P-256 and one for another name), *.wild.test and any
// other name, and a passthrough listener for pass.test.
func tlsSnapshot(t *testing.T, pn uint32, passBackend string) *gatewaypb.Snapshot {
	var certs []*gatewaypb.Certificate
	for _, c := range []struct{ name, dns string }{{"ns/a", "a.test"}, {"ns/a-alt", "alt.a.test"}, {"ns/wild", "*.wild.test"}, {"ns/default", "default.test"}} {
		chain, key := certPEM(t, c.dns)
		certs = append(certs, &gatewaypb.Certificate{Name: c.name, CertChain: chain, PrivateKey: key})
	}
	https := func(name, hostname, backend string, certs ...string) *gatewaypb.Listener {
		return &gatewaypb.Listener{Name: name, Hostname: hostname, Mode: gatewaypb.Listener_HTTPS, Certificates: certs,
			Hosts: []*gatewaypb.Host{hostOf("", ruleTo(name, nil, to(backend, 1)))}}
	}
	s := snap("v1", tlsPort(pn,
		https("default", "", "c.svc:80", "ns/default"),
		https("a", "a.test", "a.svc:80", "ns/a-alt", "ns/a"),
		https("wild", "*.wild.test", "b.svc:80", "ns/wild"),
		&gatewaypb.Listener{Name: "pass", Hostname: "pass.test", Mode: gatewaypb.Listener_TLS_PASSTHROUGH,
			TlsRoutes: []*gatewaypb.TLSRoute{{Route: &gatewaypb.RouteRef{Kind: "TLSRoute", Namespace: "ns", Name: "pass"}, Backends: []*gatewaypb.Backend{to(passBackend, 1)}}}},
	))
	s.Certificates = certs
	return s
}

// TLS is terminated with the certificate of the listener the SNI selects
// (and, within it, the one that supports the hello), ALPN gives HTTP/2 or
// HTTP/1.1, and a request for a host of another listener on that
// connection is misdirected (421). Passthrough streams reach the backend's
// own TLS untouched.
func TestTLSListeners(t *testing.T) {
	a, b, c := startEcho(t, "a", nil), startEcho(t, "b", nil), startEcho(t, "c", nil)
	pass := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "passed through") }))
	t.Cleanup(pass.Close)
	pn := freePort(t)
	startGateway(t, dsts(t, map[string][]string{"a.svc:80": {a.addr}, "b.svc:80": {b.addr}, "c.svc:80": {c.addr}, "pass.svc:443": {pass.Listener.Addr().String()}}),
		tlsSnapshot(t, pn, "pass.svc:443"))
	addr := "127.0.0.1:" + itoa(pn)
	for _, cs := range []struct {
		sni, host  string
		alpn       []string
		wantDNS    string
		wantProto  string
		wantServed string // backend, or a status
	}{
		{"a.test", "a.test", []string{"h2", "http/1.1"}, "a.test", "HTTP/2.0", "a"},
		{"a.test", "a.test", []string{"http/1.1"}, "a.test", "HTTP/1.1", "a"},
		{"alt.a.test", "alt.a.test", nil, "default.test", "HTTP/1.1", "c"}, // no listener a.test for it: the default one
		{"x.wild.test", "x.wild.test", []string{"h2"}, "*.wild.test", "HTTP/2.0", "b"},
		{"other.test", "other.test", nil, "default.test", "HTTP/1.1", "c"},
		{"a.test", "x.wild.test", nil, "a.test", "HTTP/1.1", "421"}, // another listener's host on a.test's connection
	} {
		conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: cs.sni, NextProtos: cs.alpn, InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("SNI %s: %v", cs.sni, err)
		}
		leaf := conn.ConnectionState().PeerCertificates[0]
		conn.Close()
		if !slices.Contains(leaf.DNSNames, cs.wantDNS) {
			t.Errorf("SNI %s: certificate for %v, want %s", cs.sni, leaf.DNSNames, cs.wantDNS)
		}
		tr := &http.Transport{TLSClientConfig: &tls.Config{ServerName: cs.sni, NextProtos: cs.alpn, InsecureSkipVerify: true}, ForceAttemptHTTP2: slices.Contains(cs.alpn, "h2")}
		req, _ := http.NewRequest("GET", "https://"+addr+"/", nil)
		req.Host = cs.host
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatalf("SNI %s host %s: %v", cs.sni, cs.host, err)
		}
		resp.Body.Close()
		tr.CloseIdleConnections()
		served := resp.Header.Get("X-Backend")
		if served == "" {
			served = resp.Status[:3]
		}
		if served != cs.wantServed || resp.Proto != cs.wantProto {
			t.Errorf("SNI %s host %s: %s served by %q, want %s by %q", cs.sni, cs.host, resp.Proto, served, cs.wantProto, cs.wantServed)
		}
		if served == "a" && resp.Header.Get("X-Got-X-Forwarded-Proto") != "https" {
			t.Errorf("X-Forwarded-Proto %q, want https", resp.Header.Get("X-Got-X-Forwarded-Proto"))
		}
	}

	// Passthrough: the client's TLS session is with the backend itself.
	roots := x509.NewCertPool()
	roots.AddCert(pass.Certificate())
	conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "pass.test", RootCAs: roots, InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	if !conn.ConnectionState().PeerCertificates[0].Equal(pass.Certificate()) {
		t.Error("passthrough: the certificate is not the backend's")
	}
	conn.Close()
	tr := &http.Transport{TLSClientConfig: &tls.Config{ServerName: "pass.test", InsecureSkipVerify: true}}
	resp, err := (&http.Client{Transport: tr}).Get("https://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	tr.CloseIdleConnections()
	if string(body) != "passed through" {
		t.Errorf("passthrough: %q", body)
	}
	// Not TLS on a TLS port: closed.
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(raw, "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
	raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, _ := raw.Read(make([]byte, 1)); n != 0 {
		t.Error("plaintext on a TLS port got an answer")
	}
	raw.Close()
}

// Within a listener, the certificate is the first that supports the
// ClientHello: a client that can only verify RSA signatures gets the RSA
// certificate of the same name, others the ECDSA one listed first.
func TestCertificateSupportsHello(t *testing.T) {
	e := startEcho(t, "web", nil)
	ecChain, ecKey := certPEM(t, "dual.test")
	rsaChain, rsaKey := rsaCertPEM(t, "dual.test")
	pn := freePort(t)
	s := snap("v1", tlsPort(pn, &gatewaypb.Listener{Name: "dual", Hostname: "dual.test", Mode: gatewaypb.Listener_HTTPS, Certificates: []string{"ns/ec", "ns/rsa"},
		Hosts: []*gatewaypb.Host{hostOf("", ruleTo("web", nil, to("web.svc:80", 1)))}}))
	s.Certificates = []*gatewaypb.Certificate{{Name: "ns/ec", CertChain: ecChain, PrivateKey: ecKey}, {Name: "ns/rsa", CertChain: rsaChain, PrivateKey: rsaKey}}
	startGateway(t, dsts(t, map[string][]string{"web.svc:80": {e.addr}}), s)
	for _, c := range []struct {
		name   string
		cfg    *tls.Config
		wantPK x509.PublicKeyAlgorithm
	}{
		{"any", &tls.Config{}, x509.ECDSA},
		{"RSA only (TLS 1.2 ECDHE-RSA)", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}}, x509.RSA},
	} {
		c.cfg.ServerName, c.cfg.InsecureSkipVerify = "dual.test", true
		conn, err := tls.Dial("tcp", "127.0.0.1:"+itoa(pn), c.cfg)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := conn.ConnectionState().PeerCertificates[0].PublicKeyAlgorithm; got != c.wantPK {
			t.Errorf("%s: a %v certificate, want %v", c.name, got, c.wantPK)
		}
		conn.Close()
	}
}
