package sidecar

import (
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/listen"
	"github.com/meridian-mesh/meridian/proxy/tlsid/tlsidtest"
)

// In a dual-stack pod meridian-init redirects IPv6 too: to [::1]:4140 and
// [::]:4143. Every listener of the proxy takes both families, and a meshed
// hop over IPv6 is mTLS like one over IPv4.
func TestDualStackListeners(t *testing.T) {
	svc := tlsidtest.Start(t, time.Hour)
	app := startHTTP(t, whoCalled())
	serverID := svc.Identity(t, "emojivoto", "emoji")
	both := "127.0.0.1:0,[::1]:0"
	server := startProxy(t, Config{InboundAddr: both, AdminAddr: both, InboundForward: app.addr, Identity: serverID})
	in := listen.Addrs(server.Proxy.in.ln)
	if len(in) != 2 {
		t.Fatalf("inbound listens on %v, want an IPv4 and an IPv6 address", in)
	}
	inV6 := in[1].String()
	if ip := in[1].(*net.TCPAddr).IP; ip.To4() != nil {
		t.Fatalf("second inbound address %v is not IPv6", in[1])
	}
	d := discover.Destination{Authority: "emoji.test:80", Endpoints: []discover.Endpoint{{Addr: inV6, Identity: serverID.ID().String()}}}
	client := startProxy(t, Config{OutboundAddr: both, Resolver: staticResolver(t, d), Identity: svc.Identity(t, "emojivoto", "web")})

	// The application reaches its proxy over either family; the proxies
	// speak mTLS over IPv6.
	for _, out := range listen.Addrs(client.Proxy.out.ln) {
		c, _ := h1Client(t, out.String())
		resp, body := get(t, c, "emoji.test:80")
		if resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("via %s: %d %q (%s)", out, resp.StatusCode, body, resp.Header.Get("Meridian-Proxy-Error"))
		}
		if got := resp.Header.Get("X-Client-Id"); got != "spiffe://cluster.local/ns/emojivoto/sa/web" {
			t.Fatalf("via %s: the server saw client identity %q: not mTLS", out, got)
		}
	}
	// A plaintext client on the IPv4 inbound address still gets through.
	c, _ := h1Client(t, in[0].String())
	if resp, body := get(t, c, "emoji.test:80"); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("plaintext on %s: %d %q", in[0], resp.StatusCode, body)
	}
	// The kubelet probes the pod IP, whichever family it is.
	for _, a := range server.Proxy.admin.Addrs() {
		resp, err := http.Get("http://" + a.String() + "/ready")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("/ready on %s: %d", a, resp.StatusCode)
		}
	}
}
