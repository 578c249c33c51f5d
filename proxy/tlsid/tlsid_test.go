package tlsid_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/proxy/tlsid"
	"github.com/meridian-mesh/meridian/proxy/tlsid/tlsidtest"
)

// handshake runs a TLS handshake between client and server configs over
// loopback TCP, and returns each side's error and the server's view.
//
//lint:ignore ST1008 the two sides' errors, then what the server saw: the order reads as the call does
func handshake(t *testing.T, client, server *tls.Config) (cerr, serr error, cs tls.ConnectionState) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			serr = err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		s := tls.Server(c, server)
		serr = s.Handshake()
		cs = s.ConnectionState()
		if serr == nil {
			// Echo one byte, so the client knows it was accepted.
			b := make([]byte, 1)
			if _, serr = io.ReadFull(s, b); serr == nil {
				_, serr = s.Write(b)
			}
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	tc := tls.Client(c, client)
	cerr = tc.Handshake()
	if cerr == nil {
		// TLS 1.3: a refused client certificate shows on the first read.
		if _, cerr = tc.Write([]byte("x")); cerr == nil {
			_, cerr = io.ReadFull(tc, make([]byte, 1))
		}
	}
	c.Close()
	<-done
	return cerr, serr, cs
}

func TestMutualTLS(t *testing.T) {
	svc := tlsidtest.Start(t, time.Hour)
	web := svc.Identity(t, "emojivoto", "web")
	emoji := svc.Identity(t, "emojivoto", "emoji")
	cerr, serr, cs := handshake(t, web.ClientConfig(emoji.ID(), tlsid.ALPNH2), emoji.ServerConfig())
	if cerr != nil || serr != nil {
		t.Fatalf("handshake: client %v, server %v", cerr, serr)
	}
	if id, ok := tlsid.PeerID(cs); !ok || id != web.ID() {
		t.Fatalf("server saw client %v, want %v", id, web.ID())
	}
	if cs.NegotiatedProtocol != tlsid.ALPNH2 || cs.Version != tls.VersionTLS13 {
		t.Fatalf("ALPN %q version %x", cs.NegotiatedProtocol, cs.Version)
	}
	if !tlsid.IsMeshedServerName(cs.ServerName, tlsidtest.TrustDomain) {
		t.Fatalf("SNI %q does not mark a meshed client", cs.ServerName)
	}
}

// A server presenting another identity than the destination announced is
// refused by the client.
func TestWrongServerIdentityRefused(t *testing.T) {
	svc := tlsidtest.Start(t, time.Hour)
	web := svc.Identity(t, "emojivoto", "web")
	voting := svc.Identity(t, "emojivoto", "voting")
	cerr, _, _ := handshake(t, web.ClientConfig(tlsidtest.ID("emojivoto", "emoji"), tlsid.ALPNH2), voting.ServerConfig())
	if cerr == nil {
		t.Fatal("client accepted a server with the wrong identity")
	}
}

// A self-signed certificate claiming a valid SPIFFE ID fails both ways.
func TestSelfSignedImpostorRefused(t *testing.T) {
	svc := tlsidtest.Start(t, time.Hour)
	emoji := svc.Identity(t, "emojivoto", "emoji")
	web := svc.Identity(t, "emojivoto", "web")
	imp := impostor(t, "spiffe://cluster.local/ns/emojivoto/sa/web")
	// As a client.
	client := &tls.Config{Certificates: []tls.Certificate{imp}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13,
		ServerName: tlsid.ServerName(emoji.ID()), NextProtos: []string{tlsid.ALPNH2}}
	if _, serr, _ := handshake(t, client, emoji.ServerConfig()); serr == nil {
		t.Fatal("server accepted a self-signed client")
	}
	// As a server.
	server := &tls.Config{Certificates: []tls.Certificate{imp}, MinVersion: tls.VersionTLS13}
	if cerr, _, _ := handshake(t, emoji.ClientConfig(web.ID(), tlsid.ALPNH2), server); cerr == nil {
		t.Fatal("client accepted a self-signed server")
	}
	// A client without any certificate.
	if _, serr, _ := handshake(t, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}, emoji.ServerConfig()); serr == nil {
		t.Fatal("server accepted a client without certificate")
	}
}

func impostor(t *testing.T, id string) tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(id)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, URIs: []*url.URL{u}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// A certificate that has not been renewed yet shows no renewal (`meridian
// identity` printed "Renewals: 1" for the first certificate).
func TestRenewalsLeaveOutTheFirst(t *testing.T) {
	svc := tlsidtest.Start(t, time.Hour)
	web := svc.Identity(t, "emojivoto", "web")
	if n := web.Renewals(); n != 0 {
		t.Fatalf("Renewals() = %d with only the first certificate, want 0", n)
	}
}

// Certificates are renewed at 70% of their lifetime, and the current one
// keeps serving while the identity service is down.
func TestRotationAndOutage(t *testing.T) {
	svc := tlsidtest.Start(t, time.Second)
	web := svc.Identity(t, "emojivoto", "web")
	first := web.Chain()[0]
	deadline := time.Now().Add(5 * time.Second)
	for web.Renewals() < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if web.Renewals() < 3 {
		t.Fatalf("%d renewals in 5s with a 1s lifetime", web.Renewals())
	}
	if web.Chain()[0].SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("certificate not replaced")
	}
	svc.Down.Store(true)
	// A renewal already past the identity service's check may still land;
	// let it, then hold the outage.
	time.Sleep(100 * time.Millisecond)
	cur := web.Chain()[0]
	time.Sleep(300 * time.Millisecond)
	if web.Chain()[0] != cur {
		t.Fatal("certificate lost during an outage")
	}
	svc.Down.Store(false)
	deadline = time.Now().Add(3 * time.Second)
	for web.Chain()[0] == cur && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if web.Chain()[0] == cur {
		t.Fatal("not renewed after the outage")
	}
}

func TestServerName(t *testing.T) {
	id := tlsidtest.ID("emojivoto", "web")
	if got := tlsid.ServerName(id); got != "web.emojivoto.serviceaccount.identity.meridian.cluster.local" {
		t.Fatal(got)
	}
	if tlsid.IsMeshedServerName("example.com", tlsidtest.TrustDomain) {
		t.Fatal("example.com is meshed?")
	}
}

// Issue 11: once the certificate had expired during an outage, the proxy
// asked the identity service every 10 ms (about 90 log lines a second, and a
// TokenReview per try in Kubernetes mode) and stayed ready. After expiry the
// retries follow the backoff (here RetryMax 200 ms), the proxy is not ready,
// and the failures and the expiry are there for metrics.
func TestExpiredDuringOutage(t *testing.T) {
	svc := tlsidtest.Start(t, time.Second)
	web := svc.Identity(t, "emojivoto", "web")
	svc.Down.Store(true)
	deadline := time.Now().Add(5 * time.Second)
	for web.HasCert() {
		if time.Now().After(deadline) {
			t.Fatal("HasCert still true 5s into an outage with 1s certificates")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if exp := web.Expiry(); exp.IsZero() || time.Now().Before(exp) {
		t.Fatalf("HasCert false with a certificate that expires at %v", exp)
	}
	// Past expiry, the attempts in a second are bounded by the backoff.
	before := svc.Attempts.Load()
	time.Sleep(time.Second) // the window attempts are counted in
	if n := svc.Attempts.Load() - before; n > 12 {
		t.Fatalf("%d Certify attempts in 1s after expiry; the backoff (at most 200ms) allows about 6", n)
	}
	if web.Failures() == 0 {
		t.Fatal("failed renewals not counted")
	}
	svc.Down.Store(false)
	deadline = time.Now().Add(5 * time.Second)
	for !web.HasCert() {
		if time.Now().After(deadline) {
			t.Fatal("no certificate 5s after the identity service came back")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A second connection to the same address resumes the first one's session:
// the server still sees the client's identity, and the client checks the
// server's on the resumed connection too.
func TestResumption(t *testing.T) {
	svc := tlsidtest.Start(t, time.Hour)
	web := svc.Identity(t, "emojivoto", "web")
	emoji := svc.Identity(t, "emojivoto", "emoji")
	server := emoji.ServerConfig()
	for i, want := range []bool{false, true} {
		// The server's config is built per connection, as the sidecar's is:
		// the ticket key is the identity's, not the config's.
		if i > 0 {
			server = emoji.ServerConfig()
		}
		cerr, serr, cs := handshake(t, web.ClientConfigTo("10.0.0.1:4143", emoji.ID(), tlsid.ALPNHTTP1), server)
		if cerr != nil || serr != nil {
			t.Fatalf("handshake %d: client %v, server %v", i, cerr, serr)
		}
		if cs.DidResume != want {
			t.Errorf("handshake %d: resumed %v, want %v", i, cs.DidResume, want)
		}
		if id, ok := tlsid.PeerID(cs); !ok || id != web.ID() {
			t.Errorf("handshake %d: server saw client %v, want %v", i, id, web.ID())
		}
	}
	// Another address does not reuse the session.
	_, _, cs := handshake(t, web.ClientConfigTo("10.0.0.2:4143", emoji.ID(), tlsid.ALPNHTTP1), server)
	if cs.DidResume {
		t.Error("a connection to another address resumed the session")
	}
}
