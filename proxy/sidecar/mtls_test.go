package sidecar

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/tlsid"
	"github.com/meridian-mesh/meridian/proxy/tlsid/tlsidtest"
)

// whoCalled answers with the client identity the server proxy told it.
func whoCalled() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Client-Id", r.Header.Get(ClientIDHeader))
		w.Header().Set("X-Proto", r.Proto)
		io.WriteString(w, "ok")
	})
}

// meshedPair is a client sidecar (identity web) and a server sidecar
// (identity emoji) in front of app; the client knows the server as
// emoji.test:80 with the given announced identity.
func meshedPair(t *testing.T, svc *tlsidtest.Service, app string, announced string) (client, server *testProxy) {
	t.Helper()
	server = startProxy(t, Config{InboundForward: app, Identity: svc.Identity(t, "emojivoto", "emoji")})
	d := discover.Destination{Authority: "emoji.test:80", Endpoints: []discover.Endpoint{{Addr: server.in, Identity: announced}}}
	client = startProxy(t, Config{Resolver: staticResolver(t, d), Identity: svc.Identity(t, "emojivoto", "web")})
	return client, server
}

func get(t *testing.T, c *http.Client, authority string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get("http://" + authority + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// HTTP/1 and HTTP/2 between meshed proxies go over mTLS, and the server
// side learns the client's SPIFFE ID.
func TestMTLSBetweenMeshedProxies(t *testing.T) {
	svc := tlsidtest.Start(t, time.Hour)
	app := startHTTP(t, whoCalled())
	client, _ := meshedPair(t, svc, app.addr, tlsidtest.ID("emojivoto", "emoji").String())
	h1, _ := h1Client(t, client.out)
	h2, _ := h2cClient(t, client.out)
	for name, c := range map[string]*http.Client{"HTTP/1.1": h1, "HTTP/2.0": h2} {
		resp, body := get(t, c, "emoji.test:80")
		if resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("%s: %d %q (%s)", name, resp.StatusCode, body, resp.Header.Get("Meridian-Proxy-Error"))
		}
		if got := resp.Header.Get("X-Client-Id"); got != "spiffe://cluster.local/ns/emojivoto/sa/web" {
			t.Fatalf("%s: the server saw client identity %q: not mTLS", name, got)
		}
		if got := resp.Header.Get("X-Proto"); got != name {
			t.Fatalf("protocol %s arrived as %s", name, got)
		}
	}
}

// A server whose certificate is not the identity the destination announced
// is refused: no request reaches it.
func TestMTLSWrongIdentityRefused(t *testing.T) {
	svc := tlsidtest.Start(t, time.Hour)
	var hits atomic.Int32
	app := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	client, _ := meshedPair(t, svc, app.addr, tlsidtest.ID("emojivoto", "voting").String())
	h1, _ := h1Client(t, client.out)
	resp, _ := get(t, h1, "emoji.test:80")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Meridian-Proxy-Error") != "connect" {
		t.Fatalf("got %d %q, want 503 connect", resp.StatusCode, resp.Header.Get("Meridian-Proxy-Error"))
	}
	if hits.Load() != 0 {
		t.Fatal("a request reached a server with the wrong identity")
	}
}

// A client outside the mesh still gets through in plaintext, and cannot
// claim an identity with the header.
func TestMTLSPlaintextClientStillServed(t *testing.T) {
	svc := tlsidtest.Start(t, time.Hour)
	app := startHTTP(t, whoCalled())
	_, server := meshedPair(t, svc, app.addr, tlsidtest.ID("emojivoto", "emoji").String())
	req, _ := http.NewRequest("GET", "http://"+server.in+"/", nil)
	req.Header.Set(ClientIDHeader, "spiffe://cluster.local/ns/emojivoto/sa/admin")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Client-Id") != "" {
		t.Fatalf("plaintext client: %d, client id %q", resp.StatusCode, resp.Header.Get("X-Client-Id"))
	}
}

// TLS that is not from a meshed proxy (the application's own) is passed
// through untouched to the application.
func TestMTLSApplicationTLSPassesThrough(t *testing.T) {
	svc := tlsidtest.Start(t, time.Hour)
	app := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "app tls") }))
	t.Cleanup(app.Close)
	server := startProxy(t, Config{InboundForward: app.Listener.Addr().String(), Identity: svc.Identity(t, "emojivoto", "emoji")})
	c := app.Client()
	c.Transport.(*http.Transport).DialContext = (&countingDialer{addr: server.in}).DialContext
	resp, err := c.Get(app.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "app tls" {
		t.Fatalf("got %q", b)
	}
}

// A self-signed certificate claiming a mesh identity is refused by the
// inbound side.
func TestMTLSImpostorRefused(t *testing.T) {
	svc := tlsidtest.Start(t, time.Hour)
	var hits atomic.Int32
	app := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	_, server := meshedPair(t, svc, app.addr, tlsidtest.ID("emojivoto", "emoji").String())
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse("spiffe://cluster.local/ns/emojivoto/sa/web")
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, URIs: []*url.URL{u}}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	c, err := tls.Dial("tcp", server.in, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13,
		ServerName: tlsid.ServerName(tlsidtest.ID("emojivoto", "emoji")), NextProtos: []string{tlsid.ALPNHTTP1},
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	if err == nil {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		_, err = c.Read(make([]byte, 1))
		c.Close()
	}
	if err == nil {
		t.Fatal("an impostor got an answer")
	}
	if hits.Load() != 0 {
		t.Fatal("an impostor's request reached the application")
	}
}

// Opaque TCP between meshed proxies is mTLS too (ALPN meridian.io/opaque).
func TestMTLSOpaqueTCP(t *testing.T) {
	svc := tlsidtest.Start(t, time.Hour)
	echo := startTCP(t, func(c net.Conn) { io.Copy(c, c) })
	server := startProxy(t, Config{InboundForward: echo.addr, Identity: svc.Identity(t, "emojivoto", "emoji")})
	d := discover.Destination{Authority: "kv.test:6379", Addresses: []string{vip}, Endpoints: []discover.Endpoint{
		{Addr: server.in, Identity: tlsidtest.ID("emojivoto", "emoji").String(), Protocol: discover.HintOpaque}}}
	client := startProxy(t, Config{Resolver: staticResolver(t, d), OrigDst: fixedOrigDst(vip), Identity: svc.Identity(t, "emojivoto", "web")})
	c := dialTCP(t, client.out)
	msg := []byte("\x00\x01binary stuff")
	c.Write(msg)
	c.CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo %q %v", got, err)
	}
	// The server's inbound side saw a TLS connection from the client proxy:
	// an impostor-free check is that a wrong announced identity fails.
	d.Endpoints[0].Identity = tlsidtest.ID("emojivoto", "voting").String()
	client2 := startProxy(t, Config{Resolver: staticResolver(t, d), OrigDst: fixedOrigDst(vip), Identity: svc.Identity(t, "emojivoto", "web")})
	c2 := dialTCP(t, client2.out)
	c2.Write(msg)
	c2.CloseWrite()
	if got, _ := io.ReadAll(c2); len(got) != 0 {
		t.Fatalf("opaque stream to the wrong identity carried %q", got)
	}
}

// The proxy is not ready until it holds a certificate.
func TestMTLSNotReadyWithoutCertificate(t *testing.T) {
	svc := tlsidtest.Start(t, time.Hour)
	id, err := tlsid.New(tlsid.Config{ID: tlsidtest.ID("emojivoto", "web"), Roots: svc.CA.Roots, Client: svc.Client,
		Token: func() ([]byte, error) { return []byte("emojivoto/web"), nil }})
	if err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, Config{Identity: id}) // id is not running: no certificate
	time.Sleep(50 * time.Millisecond)
	resp, err := http.Get("http://" + p.admin + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == 200 {
		t.Fatal("ready without a certificate")
	}
}

// Certificates rotate (1s lifetime, renewed at 70%) while requests flow,
// and not one request fails.
func TestMTLSRotationUnderLoad(t *testing.T) {
	// Many rotations in 3s, each with time to spare: in production a
	// certificate lives 24h and the proxy renews it with 7h left. X.509
	// times have whole seconds, so a 1s certificate may have 1ms left when
	// it arrives, and a renewal at 70% can then land after expiry on a busy
	// machine (peers then refuse the handshake: "bad certificate"). A 2s
	// certificate lives 1–2s; renewed at 30%, it has 0.7s or more to spare.
	svc := tlsidtest.Start(t, 2*time.Second)
	svc.Refresh = 0.3
	app := startHTTP(t, whoCalled())
	serverID := svc.Identity(t, "emojivoto", "emoji")
	server := startProxy(t, Config{InboundForward: app.addr, Identity: serverID})
	clientID := svc.Identity(t, "emojivoto", "web")
	d := discover.Destination{Authority: "emoji.test:80", Endpoints: []discover.Endpoint{{Addr: server.in, Identity: serverID.ID().String()}}}
	client := startProxy(t, Config{Resolver: staticResolver(t, d), Identity: clientID})

	start := svc.Certified.Load()
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(3 * time.Second)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// New connections now and then, so handshakes use rotated certificates.
			tr := &http.Transport{DialContext: (&countingDialer{addr: client.out}).DialContext}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
			for i := 0; time.Now().Before(stop); i++ {
				resp, err := c.Get("http://emoji.test:80/")
				if err != nil || resp.StatusCode != 200 {
					failed.Add(1)
					if err == nil {
						resp.Body.Close()
					}
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.Header.Get("X-Client-Id") == "" {
					failed.Add(1)
					continue
				}
				ok.Add(1)
				if i%50 == 0 {
					tr.CloseIdleConnections()
				}
			}
		}()
	}
	wg.Wait()
	// Drop the proxies' pooled connections too, and check that fresh
	// handshakes work with the latest certificates.
	h1, _ := h1Client(t, client.out)
	if resp, _ := get(t, h1, "emoji.test:80"); resp.StatusCode != 200 {
		failed.Add(1)
	}
	if failed.Load() != 0 {
		t.Fatalf("%d requests failed (%d succeeded) during rotation", failed.Load(), ok.Load())
	}
	if n := svc.Certified.Load() - start; n < 4 {
		t.Fatalf("only %d certificates issued in 3s with a 1s lifetime", n)
	}
	t.Logf("%d requests, %d certificates issued", ok.Load(), svc.Certified.Load()-start)
}

// The admin server shows the proxy's identity (`meridian identity`).
func TestMTLSAdminIdentity(t *testing.T) {
	svc := tlsidtest.Start(t, time.Hour)
	p := startProxy(t, Config{Identity: svc.Identity(t, "emojivoto", "web")})
	resp, err := http.Get("http://" + p.admin + "/identity")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(b, []byte("spiffe://cluster.local/ns/emojivoto/sa/web")) ||
		bytes.Count(b, []byte("BEGIN CERTIFICATE")) != 2 {
		t.Fatalf("%d\n%s", resp.StatusCode, b)
	}
}

// Metrics carry tls="true" with client_id (inbound) and server_id
// (outbound), or the reason there is no TLS.
func TestMTLSMetricsLabels(t *testing.T) {
	svc := tlsidtest.Start(t, time.Hour)
	app := startHTTP(t, whoCalled())
	client, server := meshedPair(t, svc, app.addr, tlsidtest.ID("emojivoto", "emoji").String())
	h1, _ := h1Client(t, client.out)
	if resp, _ := get(t, h1, "emoji.test:80"); resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	if resp, err := http.Get("http://" + server.in + "/"); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	web, emoji := "spiffe://cluster.local/ns/emojivoto/sa/web", "spiffe://cluster.local/ns/emojivoto/sa/emoji"
	eventually(t, "labelled series", func() bool {
		out, _ := metricSum(scrape(t, client.admin), "response_total", labels("direction", "outbound", "tls", "true", "server_id", emoji))
		in, _ := metricSum(scrape(t, server.admin), "response_total", labels("direction", "inbound", "tls", "true", "client_id", web))
		plain, _ := metricSum(scrape(t, server.admin), "response_total", labels("direction", "inbound", "tls", "not_provided_by_remote", "client_id", ""))
		return out == 1 && in == 1 && plain == 1
	})
	// The connections under those requests: the client's to the server
	// proxy and the server's from it are mTLS with the peer's identity; the
	// plaintext client's is not.
	expectMetric(t, client.admin, "tcp_open_total", labels("direction", "outbound", "peer", "dst", "target_addr", server.in, "tls", "true", "client_id", "", "server_id", emoji), 1)
	expectMetric(t, client.admin, "tcp_open_total", labels("direction", "outbound", "peer", "src", "tls", "loopback"), 1)
	expectMetric(t, server.admin, "tcp_open_total", labels("direction", "inbound", "peer", "src", "tls", "true", "client_id", web, "server_id", ""), 1)
	expectMetric(t, server.admin, "tcp_open_total", labels("direction", "inbound", "peer", "src", "tls", "not_provided_by_remote", "client_id", ""), 1)
	// And nothing else: the server's connections to the application are
	// the loopback hop, however many its pool opened.
	want := []string{tcpKey("inbound", "dst", app.addr, "loopback", "", ""), tcpKey("inbound", "src", "", "not_provided_by_remote", "", ""),
		tcpKey("inbound", "src", "", "true", web, "")}
	if got := tcpSeries(scrape(t, server.admin), "tcp_open_total"); !slices.Equal(got, want) {
		t.Errorf("server tcp_open_total series:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// tcpSeries lists every series of name as "label=value,..." strings, for
// checking that no connection was counted under labels it should not have.
func tcpSeries(fams map[string]*dto.MetricFamily, name string) []string {
	var out []string
	for _, m := range fams[name].GetMetric() {
		var kv []string
		for _, lp := range m.GetLabel() {
			if lp.GetName() != "classification" {
				kv = append(kv, lp.GetName()+"="+lp.GetValue())
			}
		}
		sort.Strings(kv)
		out = append(out, strings.Join(kv, ","))
	}
	sort.Strings(out)
	return out
}

func tcpKey(direction, peer, target, tls, clientID, serverID string) string {
	return fmt.Sprintf("client_id=%s,direction=%s,peer=%s,server_id=%s,target_addr=%s,tls=%s",
		clientID, direction, peer, serverID, target, tls)
}

// An opaque TCP connection between two meshed proxies: on each side every
// connection is counted once, under the labels of its own hop: mTLS with
// the client's SPIFFE ID (inbound) or the server's (outbound) between the
// proxies, loopback between a proxy and its application. A plaintext
// client is counted as not_provided_by_remote. Every gauge returns to zero.
func TestMTLSTCPMetricsLabels(t *testing.T) {
	svc := tlsidtest.Start(t, time.Hour)
	echo := startTCP(t, func(c net.Conn) { io.Copy(c, c) })
	web, emoji := tlsidtest.ID("emojivoto", "web").String(), tlsidtest.ID("emojivoto", "emoji").String()
	server := startProxy(t, Config{InboundForward: echo.addr, Identity: svc.Identity(t, "emojivoto", "emoji")})
	d := discover.Destination{Authority: "kv.test:6379", Addresses: []string{vip}, Endpoints: []discover.Endpoint{
		{Addr: server.in, Identity: emoji, Protocol: discover.HintOpaque}}}
	client := startProxy(t, Config{Resolver: staticResolver(t, d), OrigDst: fixedOrigDst(vip), Identity: svc.Identity(t, "emojivoto", "web")})

	outSrc := tcpKey("outbound", "src", "", "loopback", "", "")
	outDst := tcpKey("outbound", "dst", server.in, "true", "", emoji)
	inSrc := tcpKey("inbound", "src", "", "true", web, "")
	inDst := tcpKey("inbound", "dst", echo.addr, "loopback", "", "")

	c := dialTCP(t, client.out)
	payload := make([]byte, 5000) // a zero byte first: not HTTP, not TLS
	if err := writeFrame(c, payload); err != nil {
		t.Fatal(err)
	}
	if got, err := readFrame(c); err != nil || len(got) != len(payload) {
		t.Fatalf("echo: %d bytes, %v", len(got), err)
	}
	// While the stream is open: one connection per hop, each under its labels.
	const n = 4 + 5000
	for _, x := range []struct {
		p    *testProxy
		want []string
	}{{client, []string{outDst, outSrc}}, {server, []string{inDst, inSrc}}} {
		eventually(t, "open connections labelled", func() bool {
			fams := scrape(t, x.p.admin)
			for _, name := range []string{"tcp_open_total", "tcp_open_connections"} {
				if got := tcpSeries(fams, name); !slices.Equal(got, x.want) {
					return false
				}
				if v, _ := metricSum(fams, name, nil); v != 2 {
					return false
				}
			}
			return true
		})
	}
	// The application's bytes, in the clear on the loopback hops.
	expectMetric(t, client.admin, "tcp_read_bytes_total", labels("direction", "outbound", "peer", "src", "tls", "loopback"), n)
	expectMetric(t, server.admin, "tcp_write_bytes_total", labels("direction", "inbound", "peer", "dst", "tls", "loopback"), n)
	// More than that between the proxies: TLS records and the handshake.
	if v, _ := metricSum(scrape(t, client.admin), "tcp_write_bytes_total", labels("peer", "dst", "server_id", emoji)); v <= n {
		t.Errorf("outbound mTLS connection wrote %v bytes, want more than the %d of the payload", v, n)
	}
	if v, _ := metricSum(scrape(t, server.admin), "tcp_read_bytes_total", labels("peer", "src", "client_id", web)); v <= n {
		t.Errorf("inbound mTLS connection read %v bytes, want more than the %d of the payload", v, n)
	}

	c.Close()
	for _, x := range []struct {
		p    *testProxy
		want []string
	}{{client, []string{outDst, outSrc}}, {server, []string{inDst, inSrc}}} {
		eventually(t, "connections closed", func() bool {
			fams := scrape(t, x.p.admin)
			open, _ := metricSum(fams, "tcp_open_connections", nil)
			closed, _ := metricSum(fams, "tcp_close_total", labels("classification", "success"))
			return open == 0 && closed == 2 && slices.Equal(tcpSeries(fams, "tcp_close_total"), x.want) &&
				slices.Equal(tcpSeries(fams, "tcp_open_connections"), x.want)
		})
	}

	// A client outside the mesh, straight to the server's inbound port.
	p := dialTCP(t, server.in)
	if err := writeFrame(p, payload); err != nil {
		t.Fatal(err)
	}
	if _, err := readFrame(p); err != nil {
		t.Fatal(err)
	}
	plain := tcpKey("inbound", "src", "", "not_provided_by_remote", "", "")
	expectMetric(t, server.admin, "tcp_open_connections", labels("peer", "src", "tls", "not_provided_by_remote", "client_id", ""), 1)
	expectMetric(t, server.admin, "tcp_read_bytes_total", labels("peer", "src", "tls", "not_provided_by_remote"), n)
	p.Close()
	eventually(t, "plaintext connection closed", func() bool {
		fams := scrape(t, server.admin)
		open, _ := metricSum(fams, "tcp_open_connections", nil)
		return open == 0 && slices.Equal(tcpSeries(fams, "tcp_open_total"), []string{inDst, plain, inSrc})
	})
	expectMetric(t, server.admin, "tcp_open_total", labels("peer", "src", "tls", "true", "client_id", web), 1)
	expectMetric(t, server.admin, "tcp_open_total", labels("peer", "dst"), 2)
}

// A server that fails to prove the announced identity: the outbound
// connection closes as a failure under the identity it was required to
// have, the server's side of it as a failure without mTLS, and nothing
// stays open.
func TestMTLSTCPMetricsWrongIdentity(t *testing.T) {
	svc := tlsidtest.Start(t, time.Hour)
	echo := startTCP(t, func(c net.Conn) { io.Copy(c, c) })
	voting := tlsidtest.ID("emojivoto", "voting").String()
	server := startProxy(t, Config{InboundForward: echo.addr, Identity: svc.Identity(t, "emojivoto", "emoji")})
	d := discover.Destination{Authority: "kv.test:6379", Addresses: []string{vip}, Endpoints: []discover.Endpoint{
		{Addr: server.in, Identity: voting, Protocol: discover.HintOpaque}}}
	client := startProxy(t, Config{Resolver: staticResolver(t, d), OrigDst: fixedOrigDst(vip), Identity: svc.Identity(t, "emojivoto", "web")})
	c := dialTCP(t, client.out)
	writeFrame(c, []byte("x"))
	if got, _ := io.ReadAll(c); len(got) != 0 {
		t.Fatalf("a stream to the wrong identity carried %q", got)
	}
	expectMetric(t, client.admin, "tcp_close_total", labels("peer", "dst", "tls", "true", "server_id", voting, "classification", "failure"), 1)
	expectMetric(t, server.admin, "tcp_close_total", labels("peer", "src", "tls", "not_provided_by_remote", "classification", "failure"), 1)
	expectMetric(t, client.admin, "tcp_open_connections", nil, 0)
	expectMetric(t, server.admin, "tcp_open_connections", nil, 0)
	expectMetric(t, server.admin, "tcp_open_total", labels("peer", "dst"), 0)
}

// An endpoint that is this pod (a Service whose endpoint is the caller
// itself): the proxy's connection goes straight to the application, which
// speaks plaintext, so the proxy must not originate mTLS (nor HTTP/2
// orig-proto) to it, and labels the hop tls="loopback".
func TestMTLSEndpointIsSelf(t *testing.T) {
	svc := tlsidtest.Start(t, time.Hour)
	app := startHTTP(t, whoCalled())
	web := tlsidtest.ID("emojivoto", "web").String()
	d := discover.Destination{Authority: "web.test:80", Endpoints: []discover.Endpoint{{Addr: app.addr, Identity: web}}}
	self := []netip.Addr{netip.MustParseAddr("127.0.0.1")} // the pod's IP, as far as this proxy knows
	client := startProxy(t, Config{Resolver: staticResolver(t, d), Identity: svc.Identity(t, "emojivoto", "web"), LocalIPs: self})
	h1, _ := h1Client(t, client.out)
	resp, body := get(t, h1, "web.test:80")
	if resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("call to self: %d %q (%s)", resp.StatusCode, body, resp.Header.Get("Meridian-Proxy-Error"))
	}
	if got := resp.Header.Get("X-Proto"); got != "HTTP/1.1" {
		t.Errorf("the application got %s, want the client's HTTP/1.1", got)
	}
	expectMetric(t, client.admin, "tcp_open_total", labels("direction", "outbound", "peer", "dst", "target_addr", app.addr, "tls", "loopback", "server_id", ""), 1)
	eventually(t, "response_total labelled loopback", func() bool {
		n, _ := metricSum(scrape(t, client.admin), "response_total", labels("direction", "outbound", "tls", "loopback", "server_id", ""))
		return n == 1
	})
}

// A certificate from another mesh's CA, for an identity of the same trust
// domain name, is refused by the inbound side and by the admin port: only
// the proxy's trust anchors vouch for a client.
func TestMTLSForeignCARefused(t *testing.T) {
	svc := tlsidtest.Start(t, time.Hour)
	foreign := tlsidtest.Start(t, time.Hour) // same trust domain, other anchors
	var hits atomic.Int32
	app := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	_, server := meshedPair(t, svc, app.addr, tlsidtest.ID("emojivoto", "emoji").String())
	svid, err := foreign.Identity(t, "emojivoto", "web").GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	var chain [][]byte
	for _, c := range svid.Certificates {
		chain = append(chain, c.Raw)
	}
	for name, addr := range map[string]string{"inbound": server.in, "admin": server.admin} {
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13,
			ServerName: tlsid.ServerName(tlsidtest.ID("emojivoto", "emoji")), NextProtos: []string{tlsid.ALPNHTTP1},
			Certificates: []tls.Certificate{{Certificate: chain, PrivateKey: svid.PrivateKey}}})
		if err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
			_, err = c.Read(make([]byte, 1))
			c.Close()
		}
		if err == nil {
			t.Errorf("%s: a client with another mesh's certificate got an answer", name)
		}
	}
	if hits.Load() != 0 {
		t.Fatal("a foreign client's request reached the application")
	}
}
