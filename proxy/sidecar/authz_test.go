package sidecar

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/proxy/authz"
	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/tlsid/tlsidtest"
)

// all-authenticated: a meshed client (mTLS) gets through; a plaintext one
// is refused in its protocol (403, gRPC PERMISSION_DENIED) and counted,
// except on the application's probe path, which the kubelet must reach.
func TestDefaultInboundPolicyHTTP(t *testing.T) {
	svc := tlsidtest.Start(t, time.Hour)
	app := startHTTP(t, whoCalled())
	_, appPort, _ := net.SplitHostPort(app.addr)
	port, _ := strconv.Atoi(appPort)
	server := startProxy(t, Config{InboundForward: app.addr, Identity: svc.Identity(t, "emojivoto", "emoji"),
		Authz: authz.Config{Default: authz.AllAuthenticated, Probes: []authz.Probe{{Port: uint16(port), Path: "/healthz"}}}})
	meshedScraper(t, svc, server, "monitoring", "prometheus")
	d := discover.Destination{Authority: "emoji.test:80", Endpoints: []discover.Endpoint{{Addr: server.in, Identity: tlsidtest.ID("emojivoto", "emoji").String()}}}
	client := startProxy(t, Config{Resolver: staticResolver(t, d), Identity: svc.Identity(t, "emojivoto", "web")})

	meshed, _ := h1Client(t, client.out)
	if resp, body := get(t, meshed, "emoji.test:80"); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("meshed client: %d %q", resp.StatusCode, body)
	}
	plain, _ := h1Client(t, server.in)
	resp, _ := get(t, plain, "emoji.test:80")
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get(httpproxy.ErrorHeader) != "unauthorized" {
		t.Fatalf("plaintext client: %d %q, want 403 unauthorized", resp.StatusCode, resp.Header.Get(httpproxy.ErrorHeader))
	}
	probe, err := plain.Get("http://emoji.test:80/healthz")
	if err != nil {
		t.Fatal(err)
	}
	probe.Body.Close()
	if probe.StatusCode != 200 {
		t.Fatalf("the probe path: %d, want 200", probe.StatusCode)
	}
	// gRPC learns it in its own terms.
	h2, _ := h2cClient(t, server.in)
	req, _ := http.NewRequest(http.MethodPost, "http://emoji.test:80/emojivoto.EmojiService/ListAll", bytes.NewReader([]byte{0, 0, 0, 0, 0}))
	req.Header.Set("Content-Type", "application/grpc")
	gresp, err := h2.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, gresp.Body)
	gresp.Body.Close()
	if gresp.Header.Get("Grpc-Status") != "7" {
		t.Fatalf("gRPC from a plaintext client: grpc-status %q, want 7 (PERMISSION_DENIED)", gresp.Header.Get("Grpc-Status"))
	}
	expectMetric(t, server.admin, "inbound_authz_deny_total",
		labels("protocol", "http", "policy", "all-authenticated", "target_port", appPort, "tls", "not_provided_by_remote"), 2)
	expectMetric(t, server.admin, "inbound_authz_deny_total", labels("client_id", "spiffe://cluster.local/ns/emojivoto/sa/web"), 0)
}

// deny refuses opaque connections too, meshed or not; the default lets
// both through.
func TestDefaultInboundPolicyTCP(t *testing.T) {
	svc := tlsidtest.Start(t, time.Hour)
	echo := startTCP(t, func(c net.Conn) { io.Copy(c, c) })
	msg := []byte("\x00\x01binary stuff")
	roundTrip := func(addr string) []byte {
		c := dialTCP(t, addr)
		c.Write(msg)
		c.CloseWrite()
		got, _ := io.ReadAll(c)
		return got
	}
	for _, c := range []struct {
		policy authz.Policy
		pass   bool
	}{{"", true}, {authz.Deny, false}} {
		server := startProxy(t, Config{InboundForward: echo.addr, Identity: svc.Identity(t, "emojivoto", "emoji"), Authz: authz.Config{Default: c.policy}})
		if c.policy == authz.Deny {
			meshedScraper(t, svc, server, "monitoring", "prometheus")
		}
		d := discover.Destination{Authority: "kv.test:6379", Addresses: []string{vip}, Endpoints: []discover.Endpoint{
			{Addr: server.in, Identity: tlsidtest.ID("emojivoto", "emoji").String(), Protocol: discover.HintOpaque}}}
		client := startProxy(t, Config{Resolver: staticResolver(t, d), OrigDst: fixedOrigDst(vip), Identity: svc.Identity(t, "emojivoto", "web")})
		for name, addr := range map[string]string{"meshed": client.out, "plaintext": server.in} {
			got := roundTrip(addr)
			if c.pass != bytes.Equal(got, msg) {
				t.Errorf("policy %q, %s client: echoed %q", c.policy, name, got)
			}
		}
		if !c.pass {
			expectMetric(t, server.admin, "inbound_authz_deny_total", labels("protocol", "tcp", "policy", "deny"), 2)
		}
	}
}

// The kubelet's probes (plaintext GETs of the pod's probe paths) are
// labelled route="probe" in the inbound metrics, so that viz shows them as
// probes and not as an unmeshed client of the workload; the same path over
// mTLS, or another path in plaintext, is an ordinary request.
func TestProbesLabelled(t *testing.T) {
	svc := tlsidtest.Start(t, time.Hour)
	app := startHTTP(t, whoCalled())
	_, appPort, _ := net.SplitHostPort(app.addr)
	port, _ := strconv.Atoi(appPort)
	server := startProxy(t, Config{InboundForward: app.addr, Identity: svc.Identity(t, "emojivoto", "emoji"),
		Authz: authz.Config{Probes: []authz.Probe{{Port: uint16(port), Path: "/healthz"}}}})
	d := discover.Destination{Authority: "emoji.test:80", Endpoints: []discover.Endpoint{{Addr: server.in, Identity: tlsidtest.ID("emojivoto", "emoji").String()}}}
	client := startProxy(t, Config{Resolver: staticResolver(t, d), Identity: svc.Identity(t, "emojivoto", "web")})

	plain, _ := h1Client(t, server.in)
	for _, path := range []string{"/healthz", "/healthz", "/"} {
		resp, err := plain.Get("http://emoji.test:80" + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	meshed, _ := h1Client(t, client.out)
	resp, err := meshed.Get("http://emoji.test:80/healthz")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	in := func(kv ...string) map[string]string {
		return labels(append([]string{"direction", "inbound"}, kv...)...)
	}
	expectMetric(t, server.admin, "response_total", in("route", "probe", "tls", "not_provided_by_remote"), 2)
	expectMetric(t, server.admin, "response_total", in("route", "", "tls", "not_provided_by_remote"), 1)
	expectMetric(t, server.admin, "response_total", in("route", "", "tls", "true"), 1)
	expectMetric(t, server.admin, "response_total", in("route", "probe", "tls", "true"), 0)
}
