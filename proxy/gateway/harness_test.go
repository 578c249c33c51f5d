package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/types/known/durationpb"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/sidecar"
	"github.com/meridian-mesh/meridian/proxy/tlsid"
)

// echo is a backend that answers with its name and what it received.
type echo struct {
	name string
	addr string
	srv  *httptest.Server
}

// startEcho serves on loopback: X-Backend says who answered, X-Path,
// X-Host and X-Got-<header> what came.
func startEcho(t *testing.T, name string, h http.HandlerFunc) *echo {
	t.Helper()
	if h == nil {
		h = func(w http.ResponseWriter, r *http.Request) {
			for k, vs := range r.Header {
				if k == "X-Big" {
					continue
				}
				w.Header()["X-Got-"+k] = vs
			}
			w.Header().Set("X-Path", r.URL.RequestURI())
			w.Header().Set("X-Host", r.Host)
			io.Copy(io.Discard, r.Body)
			fmt.Fprint(w, name)
		}
	}
	wrapped := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", name)
		h(w, r)
	})
	srv := httptest.NewServer(wrapped)
	t.Cleanup(srv.Close)
	return &echo{name: name, addr: srv.Listener.Addr().String(), srv: srv}
}

// freePort is a loopback port number nothing listens on now, below the
// kernel's ephemeral range (32768-60999 by default on Linux): a port the
// kernel hands out for :0 could be taken by another test process's
// connection or listener between this and the gateway's bind.
func freePort(t testing.TB) uint32 {
	t.Helper()
	for range 100 {
		p := 20000 + mrand.IntN(12000)
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue // in use
		}
		ln.Close()
		return uint32(p)
	}
	t.Fatal("no free port in 20000-31999")
	return 0
}

// dsts is a static resolver: authority → endpoint addresses.
func dsts(t testing.TB, m map[string][]string) *discover.Static {
	t.Helper()
	var ds []discover.Destination
	for a, addrs := range m {
		d := discover.Destination{Authority: a}
		for _, ad := range addrs {
			d.Endpoints = append(d.Endpoints, discover.Endpoint{Addr: ad})
		}
		ds = append(ds, d)
	}
	s, err := discover.NewStatic(ds)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startGatewayB is startGateway for benchmarks.
func startGatewayB(b *testing.B, res discover.Resolver, s *gatewaypb.Snapshot) *Gateway {
	return startGatewayTB(b, res, s)
}

// startGateway runs a gateway on loopback with the resolver and snapshot.
func startGateway(t *testing.T, res discover.Resolver, s *gatewaypb.Snapshot) *Gateway {
	return startGatewayTB(t, res, s)
}

func startGatewayTB(t testing.TB, res discover.Resolver, s *gatewaypb.Snapshot) *Gateway {
	t.Helper()
	return startGatewayWith(t, res, s, nil)
}

// loopEnv puts the event loop under every test (startGatewayWith).
var loopEnv = os.Getenv("MERIDIAN_GATEWAY_EVENT_LOOP")

// startGatewayWith is startGatewayTB with the test's own settings (tweak,
// if not nil, changes the configuration before New).
func startGatewayWith(t testing.TB, res discover.Resolver, s *gatewaypb.Snapshot, tweak func(*Config)) *Gateway {
	t.Helper()
	cfg := Config{
		Bind:         func(p uint32) string { return "127.0.0.1:" + strconv.Itoa(int(p)) },
		AdminAddr:    "127.0.0.1:0",
		Resolver:     res,
		Balancer:     balance.RoundRobin,
		DrainTimeout: 2 * time.Second,
		Log:          slog.New(slog.NewTextHandler(io.Discard, nil)),
		// The event loop under every test when a run asks for it (README.md,
		// Event loop): "1" (HTTP/2 on the loops too), or "hold" for one loop
		// with a processor of its own while busy, taken and given back every
		// 2 ms of idleness.
		EventLoop:   loopEnv == "1" || loopEnv == "hold",
		EventLoopH2: loopEnv == "1",
	}
	if loopEnv == "hold" {
		cfg.EventLoops, cfg.EventLoopHold = 1, 2*time.Millisecond
	}
	if tweak != nil {
		tweak(&cfg)
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s != nil {
		if err := g.Apply(s); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { g.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return g
}

// Snapshot builders.

func snap(version string, ports ...*gatewaypb.Port) *gatewaypb.Snapshot {
	return &gatewaypb.Snapshot{Version: version, Gateway: "gw-ns/gw", Ports: ports}
}

func httpPort(n uint32, ls ...*gatewaypb.Listener) *gatewaypb.Port {
	return &gatewaypb.Port{Port: n, Protocol: gatewaypb.Port_HTTP, Listeners: ls}
}

func tlsPort(n uint32, ls ...*gatewaypb.Listener) *gatewaypb.Port {
	return &gatewaypb.Port{Port: n, Protocol: gatewaypb.Port_TLS, Listeners: ls}
}

func httpListener(name, hostname string, hosts ...*gatewaypb.Host) *gatewaypb.Listener {
	return &gatewaypb.Listener{Name: name, Hostname: hostname, Mode: gatewaypb.Listener_HTTP, Hosts: hosts}
}

func hostOf(name string, rules ...*gatewaypb.Rule) *gatewaypb.Host {
	return &gatewaypb.Host{Hostname: name, Rules: rules}
}

// ruleTo is a rule of HTTPRoute ns/name matching m, to the backends.
func ruleTo(name string, m *gatewaypb.Match, backends ...*gatewaypb.Backend) *gatewaypb.Rule {
	if m == nil {
		m = &gatewaypb.Match{}
	}
	return &gatewaypb.Rule{Route: &gatewaypb.RouteRef{Kind: "HTTPRoute", Namespace: "ns", Name: name, Rule: "0"}, Match: m, Backends: backends}
}

func to(authority string, weight uint32) *gatewaypb.Backend {
	name := "ns/" + strings.Split(authority, ".")[0] + ":80"
	return &gatewaypb.Backend{Authority: authority, Weight: weight, Name: name}
}

func prefix(p string) *gatewaypb.Match {
	return &gatewaypb.Match{Path: &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_PREFIX, Value: p}}
}

func dur(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

// get sends a request through the gateway's port and returns the
// response with its body read.
func get(t *testing.T, c *http.Client, port uint32, host, path string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://127.0.0.1:"+strconv.Itoa(int(port))+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s%s: %v", host, path, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// certPEM is a self-signed ECDSA certificate for names, and its key.
func certPEM(t testing.TB, names ...string) (chain, key []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
}

func itoa(n uint32) string { return strconv.Itoa(int(n)) }

// h2cClient speaks HTTP/2 with prior knowledge over cleartext.
func h2cClient() *http.Client {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: p}, Timeout: 10 * time.Second}
}

// rsaCertPEM is certPEM with an RSA key.
func rsaCertPEM(t testing.TB, names ...string) (chain, key []byte) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
}

// startSidecarInbound runs a sidecar whose inbound side, with identity id,
// forwards to app; it returns the inbound address.
func startSidecarInbound(t *testing.T, app string, id *tlsid.Identity) string {
	t.Helper()
	sc, err := sidecar.New(sidecar.Config{
		OutboundAddr: "127.0.0.1:0", InboundAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		InboundForward: app, Identity: id, Log: discardLog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sc.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	_, in, _ := sc.Addrs()
	return in.String()
}

// gatherUntil gathers g's metrics until ok says they are complete, for up
// to 5 s: a response is counted at its end on the gateway's side, which
// may come after its client has read it. It returns the last gathered.
func gatherUntil(t *testing.T, g *Gateway, ok func([]*dto.MetricFamily) bool) []*dto.MetricFamily {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		fams, err := g.Metrics().Gatherer().Gather()
		if err != nil {
			t.Fatal(err)
		}
		if ok(fams) || time.Now().After(deadline) {
			return fams
		}
	}
}
