package gateway

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

func proxyV2(src netip.AddrPort, local bool) []byte {
	b := append([]byte{}, v2Signature...)
	cmd := byte(0x21)
	if local {
		cmd = 0x20
	}
	a := src.Addr().As4()
	body := append(a[:], 10, 0, 0, 1)
	body = binary.BigEndian.AppendUint16(body, src.Port())
	body = binary.BigEndian.AppendUint16(body, 80)
	b = append(b, cmd, 0x11)
	b = binary.BigEndian.AppendUint16(b, uint16(len(body)))
	return append(b, body...)
}

// A port with proxy_protocol takes the client's address from the PROXY
// header (v1 or v2): X-Forwarded-For names it. A LOCAL or UNKNOWN header
// keeps the peer's; a connection without a header is closed.
func TestProxyProtocol(t *testing.T) {
	e := startEcho(t, "web", nil)
	pn := freePort(t)
	s := snap("v1", httpPort(pn, httpListener("l", "", hostOf("", ruleTo("web", nil, to("web.svc:80", 1))))))
	s.Ports[0].ProxyProtocol = true
	startGateway(t, dsts(t, map[string][]string{"web.svc:80": {e.addr}}), s)
	for _, c := range []struct {
		name    string
		header  []byte
		wantXFF string // "" : the connection is closed
	}{
		{"v1 TCP4", []byte("PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\r\n"), "203.0.113.7"},
		{"v1 TCP6", []byte("PROXY TCP6 2001:db8::7 2001:db8::1 5555 80\r\n"), "2001:db8::7"},
		{"v1 UNKNOWN", []byte("PROXY UNKNOWN\r\n"), "127.0.0.1"},
		{"v2 PROXY", proxyV2(netip.MustParseAddrPort("198.51.100.9:4000"), false), "198.51.100.9"},
		{"v2 LOCAL", proxyV2(netip.MustParseAddrPort("198.51.100.9:4000"), true), "127.0.0.1"},
		{"none", nil, ""},
		{"v1 malformed", []byte("PROXY TCP4 nope\r\n"), ""},
	} {
		conn, err := net.Dial("tcp", "127.0.0.1:"+itoa(pn))
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		conn.Write(append(c.header, "GET / HTTP/1.1\r\nHost: x.test\r\n\r\n"...))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if c.wantXFF == "" {
			if err == nil {
				t.Errorf("%s: answered %s, want the connection closed", c.name, resp.Status)
			}
			conn.Close()
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		io.Copy(io.Discard, resp.Body)
		conn.Close()
		if got := strings.Join(resp.Header.Values("X-Got-X-Forwarded-For"), ","); got != c.wantXFF {
			t.Errorf("%s: X-Forwarded-For %q, want %q", c.name, got, c.wantXFF)
		}
	}
}

// On a TLS port the PROXY header comes before the ClientHello; the
// terminated requests carry the client it names.
func TestProxyProtocolTLS(t *testing.T) {
	e := startEcho(t, "web", nil)
	chain, key := certPEM(t, "a.test")
	pn := freePort(t)
	s := snap("v1", tlsPort(pn, &gatewaypb.Listener{Name: "a", Hostname: "a.test", Mode: gatewaypb.Listener_HTTPS, Certificates: []string{"ns/a"},
		Hosts: []*gatewaypb.Host{hostOf("", ruleTo("web", nil, to("web.svc:80", 1)))}}))
	s.Certificates = []*gatewaypb.Certificate{{Name: "ns/a", CertChain: chain, PrivateKey: key}}
	s.Ports[0].ProxyProtocol = true
	startGateway(t, dsts(t, map[string][]string{"web.svc:80": {e.addr}}), s)
	raw, err := net.Dial("tcp", "127.0.0.1:"+itoa(pn))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(raw, "PROXY TCP4 203.0.113.7 10.0.0.1 5555 443\r\n")
	conn := tls.Client(raw, &tls.Config{ServerName: "a.test", InsecureSkipVerify: true})
	io.WriteString(conn, "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	if got := resp.Header.Get("X-Got-X-Forwarded-For"); got != "203.0.113.7" || resp.Header.Get("X-Got-X-Forwarded-Proto") != "https" {
		t.Errorf("X-Forwarded-For %q, X-Forwarded-Proto %q; want 203.0.113.7, https", got, resp.Header.Get("X-Got-X-Forwarded-Proto"))
	}
}
