package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/tlsid/tlsidtest"
)

// tcpEcho is a TCP backend that reads until the client's half-close, then
// answers "<name> <what it read>" and closes: what it read is exactly what
// the gateway sent, so a terminated stream shows up as plaintext. With a
// certificate it serves TLS first and answers "<name> sni=<server name>
// <what it read>".
type tcpEcho struct {
	name  string
	addr  string
	conns atomic.Int64
}

func startTCPEcho(t testing.TB, name string, cert *tls.Certificate) *tcpEcho {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &tcpEcho{name: name, addr: ln.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.conns.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				prefix := name + " "
				var r io.Reader = c
				var w io.Writer = c
				if cert != nil {
					tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{*cert}})
					if tc.Handshake() != nil {
						return
					}
					prefix += "sni=" + tc.ConnectionState().ServerName + " "
					r, w = tc, tc
				}
				got, err := io.ReadAll(r)
				if err != nil {
					return
				}
				io.WriteString(w, prefix+string(got))
			}()
		}
	}()
	return e
}

// exchange opens a TLS connection to the gateway with server name sni,
// verifying the certificate against roots (nil: not verified), sends msg,
// half-closes and returns the answer and the certificate's names.
func exchange(addr, sni string, roots *x509.CertPool, msg string) (string, []string, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	cfg := &tls.Config{ServerName: sni, RootCAs: roots, InsecureSkipVerify: roots == nil}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return "", nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	names := c.ConnectionState().PeerCertificates[0].DNSNames
	if _, err := io.WriteString(c, msg); err != nil {
		return "", names, err
	}
	if err := c.CloseWrite(); err != nil {
		return "", names, err
	}
	// The close_notify reaches the gateway; the TCP half-close is the
	// gateway's to pass on.
	if err := c.NetConn().(*net.TCPConn).CloseWrite(); err != nil {
		return "", names, err
	}
	got, err := io.ReadAll(c)
	return string(got), names, err
}

// terminateSnapshot: one TLS port mixing a TLS terminate listener for
// *.term.test (certificates for a.term.test and b.term.test; TLS routes
// by SNI), a passthrough listener for pass.test and an HTTPS listener for
// web.test.
func terminateSnapshot(t testing.TB, pn uint32) (*gatewaypb.Snapshot, *x509.CertPool) {
	roots := x509.NewCertPool()
	var certs []*gatewaypb.Certificate
	for _, c := range []struct{ name, dns string }{{"ns/a", "a.term.test"}, {"ns/b", "b.term.test"}, {"ns/web", "web.test"}} {
		chain, key := certPEM(t, c.dns)
		certs = append(certs, &gatewaypb.Certificate{Name: c.name, CertChain: chain, PrivateKey: key})
		roots.AppendCertsFromPEM(chain)
	}
	route := func(name string, hostnames []string, bs ...*gatewaypb.Backend) *gatewaypb.TLSRoute {
		return &gatewaypb.TLSRoute{Route: &gatewaypb.RouteRef{Kind: "TLSRoute", Namespace: "ns", Name: name}, Hostnames: hostnames, Backends: bs}
	}
	s := snap("v1", tlsPort(pn,
		&gatewaypb.Listener{Name: "term", Hostname: "*.term.test", Mode: gatewaypb.Listener_TLS_TERMINATE, Certificates: []string{"ns/a", "ns/b"},
			TlsRoutes: []*gatewaypb.TLSRoute{
				route("one", []string{"a.term.test"}, to("one.svc:3000", 1)),
				route("two", []string{"b.term.test"}, to("two.svc:3000", 1), to("zero.svc:3000", 0)),
				route("broken", []string{"broken.term.test"}, &gatewaypb.Backend{Weight: 1}),
			}},
		&gatewaypb.Listener{Name: "pass", Hostname: "pass.test", Mode: gatewaypb.Listener_TLS_PASSTHROUGH,
			TlsRoutes: []*gatewaypb.TLSRoute{route("pass", nil, to("pass.svc:8443", 1))}},
		&gatewaypb.Listener{Name: "web", Hostname: "web.test", Mode: gatewaypb.Listener_HTTPS, Certificates: []string{"ns/web"},
			Hosts: []*gatewaypb.Host{hostOf("", ruleTo("web", nil, to("web.svc:80", 1)))}},
	))
	s.Certificates = certs
	return s, roots
}

// A TLS terminate listener completes the handshake with the certificate
// for the SNI, then sends the decrypted bytes as opaque TCP (no TLS, no
// SNI) to its TLS route's backend, half-closes passing through both ways;
// passthrough and HTTPS listeners on the same port keep theirs; a server
// name without a listener, or without a route or a valid backend, is
// refused before a handshake.
func TestTLSTerminate(t *testing.T) {
	one, two, zero := startTCPEcho(t, "one", nil), startTCPEcho(t, "two", nil), startTCPEcho(t, "zero", nil)
	passCert, err := tls.X509KeyPair(certPEM(t, "pass.test"))
	if err != nil {
		t.Fatal(err)
	}
	pass := startTCPEcho(t, "pass", &passCert)
	web := startEcho(t, "web", nil)
	pn := freePort(t)
	s, roots := terminateSnapshot(t, pn)
	g := startGateway(t, dsts(t, map[string][]string{"one.svc:3000": {one.addr}, "two.svc:3000": {two.addr}, "zero.svc:3000": {zero.addr},
		"pass.svc:8443": {pass.addr}, "web.svc:80": {web.addr}}), s)
	addr := "127.0.0.1:" + itoa(pn)

	for _, c := range []struct{ sni, want, cert string }{
		{"a.term.test", "one hello a", "a.term.test"},
		{"b.term.test", "two hello b", "b.term.test"},
		{"A.Term.Test", "one hello A", "a.term.test"}, // server names are case-insensitive
	} {
		got, names, err := exchange(addr, c.sni, roots, "hello "+c.sni[:1])
		if err != nil {
			t.Fatalf("SNI %s: %v", c.sni, err)
		}
		if got != c.want || len(names) != 1 || names[0] != c.cert {
			t.Errorf("SNI %s: %q with a certificate for %v, want %q with %s", c.sni, got, names, c.want, c.cert)
		}
	}
	for i := 0; i < 20; i++ {
		if got, _, err := exchange(addr, "b.term.test", roots, "w"); err != nil || got != "two w" {
			t.Fatalf("weights: %q %v; the weight-0 backend must never serve", got, err)
		}
	}
	if zero.conns.Load() != 0 {
		t.Errorf("the weight-0 backend got %d connections", zero.conns.Load())
	}

	// Passthrough on the same port: the backend's own TLS, its SNI.
	passRoots := x509.NewCertPool()
	passRoots.AddCert(passCert.Leaf)
	if got, _, err := exchange(addr, "pass.test", passRoots, "through"); err != nil || got != "pass sni=pass.test through" {
		t.Errorf("passthrough: %q %v", got, err)
	}
	// HTTPS on the same port.
	tr := &http.Transport{TLSClientConfig: &tls.Config{ServerName: "web.test", RootCAs: roots}}
	t.Cleanup(tr.CloseIdleConnections)
	req, _ := http.NewRequest("GET", "https://"+addr+"/", nil)
	req.Host = "web.test"
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("X-Backend") != "web" {
		t.Errorf("HTTPS: %s from %q", resp.Status, resp.Header.Get("X-Backend"))
	}

	// Refused: no listener (unknown.test), a listener but no route
	// (c.term.test), a route whose backend is invalid (broken.term.test).
	for _, sni := range []string{"unknown.test", "c.term.test", "broken.term.test"} {
		if got, _, err := exchange(addr, sni, nil, "x"); err == nil {
			t.Errorf("SNI %s: served %q, want the connection refused", sni, got)
		}
	}
	if n := one.conns.Load() + two.conns.Load(); n != 23 {
		t.Errorf("backends got %d connections, want 23", n)
	}

	// Metrics as passthrough: the client's connection inbound, the
	// backend's outbound to its endpoint.
	if v, _ := gauge(t, g, "tcp_open_total", map[string]string{"direction": "outbound", "peer": "dst", "target_addr": one.addr}); v != 2 {
		t.Errorf("tcp_open_total to %s = %v, want 2", one.addr, v)
	}
	if v, _ := gauge(t, g, "tcp_open_total", map[string]string{"direction": "inbound", "peer": "src"}); v < 28 {
		t.Errorf("inbound tcp_open_total = %v, want at least 28", v)
	}
}

// Several certificates on one listener: the SNI picks the one for its
// name; a name none covers gets the first, which the client rejects.
func TestTLSTerminateCertificateBySNI(t *testing.T) {
	e := startTCPEcho(t, "e", nil)
	pn := freePort(t)
	roots := x509.NewCertPool()
	var certs []*gatewaypb.Certificate
	for _, n := range []string{"x.test", "y.test", "z.test"} {
		chain, key := certPEM(t, n)
		roots.AppendCertsFromPEM(chain)
		certs = append(certs, &gatewaypb.Certificate{Name: "ns/" + n, CertChain: chain, PrivateKey: key})
	}
	s := snap("v1", tlsPort(pn, &gatewaypb.Listener{Name: "t", Mode: gatewaypb.Listener_TLS_TERMINATE, Certificates: []string{"ns/x.test", "ns/y.test", "ns/z.test"},
		TlsRoutes: []*gatewaypb.TLSRoute{{Route: &gatewaypb.RouteRef{Kind: "TLSRoute", Namespace: "ns", Name: "e"}, Backends: []*gatewaypb.Backend{to("e.svc:3000", 1)}}}}))
	s.Certificates = certs
	startGateway(t, dsts(t, map[string][]string{"e.svc:3000": {e.addr}}), s)
	addr := "127.0.0.1:" + itoa(pn)
	for _, n := range []string{"z.test", "x.test", "y.test"} {
		got, names, err := exchange(addr, n, roots, "m")
		if err != nil || got != "e m" || names[0] != n {
			t.Errorf("SNI %s: %q, certificate %v, %v", n, got, names, err)
		}
	}
	_, _, err := exchange(addr, "w.test", roots, "m")
	var ve *tls.CertificateVerificationError
	if !errors.As(err, &ve) {
		t.Errorf("SNI w.test: %v, want the client to reject the certificate", err)
	}
}

// Terminated streams to a meshed backend go over mTLS with the gateway's
// identity (the sidecar hands the opaque stream to its application), and
// a BackendTLSPolicy's TLS is originated with its server name.
func TestTLSTerminateToMeshedAndBackendTLS(t *testing.T) {
	ids := tlsidtest.Start(t, time.Hour)
	app := startTCPEcho(t, "app", nil)
	in := startSidecarInbound(t, app.addr, ids.Identity(t, "web-ns", "web"))
	secureCert, err := tls.X509KeyPair(certPEM(t, "backend.test"))
	if err != nil {
		t.Fatal(err)
	}
	secure := startTCPEcho(t, "secure", &secureCert)
	webID := tlsidtest.ID("web-ns", "web").String()
	res, err := discover.NewStatic([]discover.Destination{
		{Authority: "web.svc:3000", Endpoints: []discover.Endpoint{{Addr: in, Identity: webID}}},
		{Authority: "secure.svc:443", Endpoints: []discover.Endpoint{{Addr: secure.addr}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	chain, key := certPEM(t, "mesh.test", "secure.test")
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(chain)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: secureCert.Leaf.Raw})
	pn := freePort(t)
	s := snap("v1", tlsPort(pn, &gatewaypb.Listener{Name: "t", Mode: gatewaypb.Listener_TLS_TERMINATE, Certificates: []string{"ns/c"},
		TlsRoutes: []*gatewaypb.TLSRoute{
			{Route: &gatewaypb.RouteRef{Kind: "TLSRoute", Namespace: "ns", Name: "mesh"}, Hostnames: []string{"mesh.test"}, Backends: []*gatewaypb.Backend{to("web.svc:3000", 1)}},
			{Route: &gatewaypb.RouteRef{Kind: "TLSRoute", Namespace: "ns", Name: "secure"}, Hostnames: []string{"secure.test"}, Backends: []*gatewaypb.Backend{
				{Authority: "secure.svc:443", Weight: 1, Name: "ns/secure:443", Tls: &gatewaypb.BackendTLS{ServerName: "backend.test", CaCertificates: caPEM}}}},
		}}))
	s.Certificates = []*gatewaypb.Certificate{{Name: "ns/c", CertChain: chain, PrivateKey: key}}
	g, err := New(Config{
		Bind:      func(p uint32) string { return "127.0.0.1:" + strconv.Itoa(int(p)) },
		AdminAddr: "127.0.0.1:0", Resolver: res, Balancer: balance.RoundRobin, DrainTimeout: time.Second,
		Identity: ids.Identity(t, "gw-ns", "gateway"), Log: discardLog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Apply(s); err != nil {
		t.Fatal(err)
	}
	gctx, gcancel := context.WithCancel(context.Background())
	gdone := make(chan struct{})
	go func() { g.Run(gctx); close(gdone) }()
	t.Cleanup(func() { gcancel(); <-gdone })
	addr := "127.0.0.1:" + itoa(pn)

	if got, _, err := exchange(addr, "mesh.test", roots, "meshed"); err != nil || got != "app meshed" {
		t.Fatalf("meshed backend: %q %v", got, err)
	}
	if v, _ := gauge(t, g, "tcp_open_total", map[string]string{"direction": "outbound", "tls": "true", "server_id": webID}); v != 1 {
		t.Errorf("tcp_open_total over mTLS to %s = %v, want 1", webID, v)
	}
	if got, _, err := exchange(addr, "secure.test", roots, "again"); err != nil || got != "secure sni=backend.test again" {
		t.Errorf("BackendTLSPolicy backend: %q %v", got, err)
	}
}

// Concurrent streams on a mixed port, each to the backend its SNI names.
func TestTLSTerminateConcurrent(t *testing.T) {
	one, two := startTCPEcho(t, "one", nil), startTCPEcho(t, "two", nil)
	passCert, err := tls.X509KeyPair(certPEM(t, "pass.test"))
	if err != nil {
		t.Fatal(err)
	}
	pass := startTCPEcho(t, "pass", &passCert)
	pn := freePort(t)
	s, _ := terminateSnapshot(t, pn)
	startGateway(t, dsts(t, map[string][]string{"one.svc:3000": {one.addr}, "two.svc:3000": {two.addr}, "zero.svc:3000": {one.addr},
		"pass.svc:8443": {pass.addr}, "web.svc:80": {one.addr}}), s)
	addr := "127.0.0.1:" + itoa(pn)
	const workers, each = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				msg := fmt.Sprintf("w%d-%d", w, i)
				sni, want := "a.term.test", "one "+msg
				switch (w + i) % 3 {
				case 1:
					sni, want = "b.term.test", "two "+msg
				case 2:
					sni, want = "pass.test", "pass sni=pass.test "+msg
				}
				got, _, err := exchange(addr, sni, nil, msg)
				if err != nil || got != want {
					errs <- fmt.Errorf("SNI %s: %q %v, want %q", sni, got, err, want)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
