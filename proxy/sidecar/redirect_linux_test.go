package sidecar

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"

	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/internal/netnstest"
	"github.com/meridian-mesh/meridian/proxy/origdst"
)

// sparePort returns a loopback port nothing listens on.
func sparePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Applications dial services' virtual addresses; iptables redirects the
// connections to the outbound listener, and the proxy recovers where they
// were going with SO_ORIGINAL_DST (the real origdst.Lookup, in a network
// namespace of the test's own).
func TestRealRedirect(t *testing.T) {
	if !netnstest.Enter(t) {
		return
	}
	ctx := testContext(t)
	kvVIP := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(sparePort(t)))
	webVIP := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(sparePort(t)))

	var kvNames, webNames, kvEps, webEps []string
	for i := range 3 {
		kv := fmt.Sprintf("kv-%d", i)
		kvNames = append(kvNames, kv)
		kvEps = append(kvEps, startTCP(t, func(c net.Conn) {
			if _, err := readFrame(c); err == nil {
				writeFrame(c, []byte(kv))
			}
		}).addr)
		web := fmt.Sprintf("web-%d", i)
		webNames = append(webNames, web)
		webEps = append(webEps, startHTTP(t, named(web)).addr)
	}
	kvDst := dst("kv.test:6379", kvEps...)
	kvDst.Addresses = []string{kvVIP.String()}
	webDst := dst("web.test:80", webEps...)
	webDst.Addresses = []string{webVIP.String()}
	a := startProxy(t, Config{
		Resolver: staticResolver(t, kvDst, webDst),
		Balancer: balance.RoundRobin,
		OrigDst:  origdst.Lookup,
	})
	outPort := a.Proxy.out.ln.Addr().(*net.TCPAddr).Port
	netnstest.Redirect(t, "127.0.0.1", int(kvVIP.Port()), outPort)
	netnstest.Redirect(t, "127.0.0.1", int(webVIP.Port()), outPort)

	t.Run("opaque", func(t *testing.T) {
		const total = 30
		var served tally
		for i := range total {
			c := dialTCP(t, kvVIP.String())
			if err := writeFrame(c, []byte("who")); err != nil {
				t.Fatal(err)
			}
			name, err := readFrame(c)
			if err != nil {
				t.Fatalf("connection %d to %s: %v", i, kvVIP, err)
			}
			c.Close()
			served.add(string(name))
		}
		assertEven(t, &served, total, kvNames...)
	})

	// HTTP to the virtual address, named by Host (an IP) or not named at
	// all (a Host the mesh does not know: the original destination decides).
	for _, host := range []string{webVIP.String(), "not-in-the-mesh.example"} {
		t.Run("http host="+host, func(t *testing.T) {
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr, Timeout: testTimeout}
			const total = 30
			var served tally
			for i := range total {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+webVIP.String()+"/", nil)
				req.Host = host
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("request %d: %s", i, resp.Status)
				}
				served.add(resp.Header.Get("X-Server"))
			}
			assertEven(t, &served, total, webNames...)
		})
	}
}
