package gateway

import (
	"context"
	"encoding/pem"
	"io"
	"log"
	"maps"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/outbound"
	"github.com/meridian-mesh/meridian/proxy/tlsid/tlsidtest"
)

// The gateway is a mesh member: to a meshed backend (a sidecar's inbound
// side, announced with its identity) it speaks mTLS with its own identity,
// which the application learns (Meridian-Client-Id), and its metrics say
// tls="true" with the server's identity; an unmeshed backend gets
// plaintext.
func TestMTLSToMeshedBackends(t *testing.T) {
	ids := tlsidtest.Start(t, time.Hour)
	app, plain := startEcho(t, "meshed-app", nil), startEcho(t, "plain", nil)
	in := startSidecarInbound(t, app.addr, ids.Identity(t, "web-ns", "web"))
	webID := tlsidtest.ID("web-ns", "web").String()
	res, err := discover.NewStatic([]discover.Destination{
		{Authority: "web.svc:80", Endpoints: []discover.Endpoint{{Addr: in, Identity: webID}}},
		{Authority: "plain.svc:80", Endpoints: []discover.Endpoint{{Addr: plain.addr}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	pn := freePort(t)
	g, err := New(Config{
		Bind:      func(p uint32) string { return "127.0.0.1:" + strconv.Itoa(int(p)) },
		AdminAddr: "127.0.0.1:0", Resolver: res, Balancer: balance.RoundRobin, DrainTimeout: time.Second,
		Identity: ids.Identity(t, "gw-ns", "gateway"), Log: discardLog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	s := snap("v1", httpPort(pn, httpListener("l", "", hostOf("",
		ruleTo("web", prefix("/web"), to("web.svc:80", 1)),
		ruleTo("plain", prefix("/plain"), to("plain.svc:80", 1))))))
	// The Gateway's backend client certificate is for BackendTLSPolicy
	// backends only: mesh mTLS still presents the workload identity.
	chain, key, _ := clientCertPEM(t, "not-the-identity")
	s.BackendClientCertificate = &gatewaypb.Certificate{Name: "ns/client", CertChain: chain, PrivateKey: key}
	if err := g.Apply(s); err != nil {
		t.Fatal(err)
	}
	gctx, gcancel := context.WithCancel(context.Background())
	gdone := make(chan struct{})
	go func() { g.Run(gctx); close(gdone) }()
	t.Cleanup(func() { gcancel(); <-gdone })

	resp, _ := get(t, nil, pn, "x.test", "/web", "Meridian-Client-Id", "spiffe://forged")
	if resp.Header.Get("X-Backend") != "meshed-app" {
		t.Fatalf("meshed backend: %s", resp.Status)
	}
	if got, want := resp.Header.Get("X-Got-Meridian-Client-Id"), tlsidtest.ID("gw-ns", "gateway").String(); got != want {
		t.Errorf("the application saw client ID %q, want the gateway's %q", got, want)
	}
	resp, _ = get(t, nil, pn, "x.test", "/plain")
	if resp.Header.Get("X-Backend") != "plain" {
		t.Fatalf("plain backend: %s", resp.Status)
	}
	want := map[string][2]string{"ns/web:80": {"true", webID}, "ns/plain:80": {"not_provided_by_service_discovery", ""}}
	fams := gatherUntil(t, g, func(fams []*dto.MetricFamily) bool {
		n := 0
		for _, f := range fams {
			if f.GetName() == "response_total" {
				for _, m := range f.GetMetric() {
					for _, lp := range m.GetLabel() {
						if _, ok := want[lp.GetValue()]; ok && lp.GetName() == "backend" {
							n++
						}
					}
				}
			}
		}
		return n == len(want)
	})
	seen := 0
	for _, f := range fams {
		if f.GetName() != "response_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if w, ok := want[l["backend"]]; ok {
				seen++
				if l["tls"] != w[0] || l["server_id"] != w[1] {
					t.Errorf("backend %s: tls=%q server_id=%q, want %q %q", l["backend"], l["tls"], l["server_id"], w[0], w[1])
				}
			}
		}
	}
	if seen != 2 {
		t.Errorf("%d response_total series for the two backends, want 2", seen)
	}

	// Its admin port says who it is, as a sidecar's does (meridian
	// identity, and viz's namespace of a proxy named by its address).
	ar, err := http.Get("http://" + g.AdminAddr().String() + "/identity")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(ar.Body)
	ar.Body.Close()
	if want := "# SPIFFE ID: " + tlsidtest.ID("gw-ns", "gateway").String() + "\n"; ar.StatusCode != 200 || !strings.Contains(string(body), want) {
		t.Errorf("GET /identity: %s\n%s\nwant %q", ar.Status, body, want)
	}
}

// Backend.tls (BackendTLSPolicy): TLS to the backend with the policy's
// server name and CA, or its subject alternative names; a backend whose
// certificate does not match is not reached.
func TestBackendTLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "tls "+r.TLS.ServerName+" "+r.Proto)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	pn := freePort(t)
	be := func(path string, bt *gatewaypb.BackendTLS) *gatewaypb.Rule {
		return ruleTo(path, prefix(path), &gatewaypb.Backend{Authority: "secure.svc:443", Weight: 1, Name: "ns/secure:443", Tls: bt})
	}
	version := func(v string) *gatewaypb.Snapshot {
		return snap(v, httpPort(pn, httpListener("l", "", hostOf("",
			be("/name", &gatewaypb.BackendTLS{ServerName: "example.com", CaCertificates: ca}),
			be("/san", &gatewaypb.BackendTLS{ServerName: "backend.test", CaCertificates: ca, SubjectAltNames: []string{"example.com"}}),
			be("/wrong", &gatewaypb.BackendTLS{ServerName: "other.test", CaCertificates: ca}),
			be("/untrusted", &gatewaypb.BackendTLS{ServerName: "example.com"}),
		))))
	}
	g := startGateway(t, dsts(t, map[string][]string{"secure.svc:443": {srv.Listener.Addr().String()}}), version("v1"))
	for _, c := range []struct {
		path, want string
		status     int
	}{
		{"/name", "tls example.com HTTP/1.1", 200},
		{"/san", "tls backend.test HTTP/1.1", 200},
		{"/wrong", "", 503}, // a failed handshake is a failed connect
		{"/untrusted", "", 503},
	} {
		resp, body := get(t, nil, pn, "x.test", c.path)
		if resp.StatusCode == 503 && resp.Header.Get("Meridian-Proxy-Error") != "connect" {
			t.Errorf("%s: %s, not a connect failure", c.path, resp.Header.Get("Meridian-Proxy-Error"))
		}
		if resp.StatusCode != c.status || (c.want != "" && body != c.want) {
			t.Errorf("%s: %s %q, want %d %q", c.path, resp.Status, body, c.status, c.want)
		}
	}
	// One cache per policy (and the mesh's), kept by the next snapshot
	// with the same policies, closed when no snapshot uses it.
	caches := func() map[string]*outbound.Cache {
		g.mu.Lock()
		defer g.mu.Unlock()
		if len(g.evicting) != len(g.caches) {
			t.Errorf("%d caches evicting, %d in use", len(g.evicting), len(g.caches))
		}
		return maps.Clone(g.caches)
	}
	before := caches()
	if len(before) != 5 {
		t.Fatalf("%d caches, want 5 (4 policies and the mesh's)", len(before))
	}
	if err := g.Apply(version("v2")); err != nil {
		t.Fatal(err)
	}
	if after := caches(); !maps.Equal(before, after) {
		t.Error("the same policies got new caches")
	}
	if err := g.Apply(snap("v3", httpPort(pn))); err != nil {
		t.Fatal(err)
	}
	if after := caches(); len(after) != 1 || after[""] != before[""] {
		t.Errorf("caches after the policies went: %v", after)
	}
}
