package gateway

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

// BenchmarkConnH2C is an HTTP/2 connection's cost: a new h2c connection
// (prior knowledge) per iteration carrying one GET through the gateway,
// then closed. The client is a bare framer, so that most of what is
// counted is the gateway's.
func BenchmarkConnH2C(b *testing.B) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer backend.Close()
	pn := freePort(b)
	startGatewayB(b, dsts(b, map[string][]string{"web.svc:80": {backend.Listener.Addr().String()}}), manyHosts(pn, 10))
	addr := "127.0.0.1:" + itoa(pn)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "web.test"}, {":path", "/"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	block := hb.Bytes()
	b.ReportAllocs()
	for b.Loop() {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		io.WriteString(c, http2.ClientPreface)
		fr := http2.NewFramer(c, c)
		fr.WriteSettings()
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block, EndStream: true, EndHeaders: true})
		for done := false; !done; {
			f, err := fr.ReadFrame()
			if err != nil {
				b.Fatal(err)
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					fr.WriteSettingsAck()
				}
			case *http2.HeadersFrame:
				done = f.StreamEnded()
			case *http2.DataFrame:
				done = f.StreamEnded()
			case *http2.RSTStreamFrame, *http2.GoAwayFrame:
				b.Fatalf("%v", f)
			}
		}
		c.Close()
	}
}

// BenchmarkHeldPerConnHTTPS is the heap an idle HTTPS keep-alive
// connection holds in the gateway: 200 connections each make one request
// and stay open; the heap in use is read before and after (the clients'
// side, in the same process, is included).
func BenchmarkHeldPerConnHTTPS(b *testing.B) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer backend.Close()
	pn := freePort(b)
	chain, key := certPEM(b, "web.test")
	s := snap("v1", tlsPort(pn, &gatewaypb.Listener{Name: "web", Hostname: "web.test", Mode: gatewaypb.Listener_HTTPS, Certificates: []string{"ns/web"},
		Hosts: []*gatewaypb.Host{hostOf("", ruleTo("web", nil, to("web.svc:80", 1)))}}))
	s.Certificates = []*gatewaypb.Certificate{{Name: "ns/web", CertChain: chain, PrivateKey: key}}
	startGatewayB(b, dsts(b, map[string][]string{"web.svc:80": {backend.Listener.Addr().String()}}), s)
	const n = 200
	var held float64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		conns := make([]*tls.Conn, 0, n)
		for range n {
			c, err := tls.Dial("tcp", "127.0.0.1:"+itoa(pn), &tls.Config{ServerName: "web.test", NextProtos: []string{"http/1.1"}, InsecureSkipVerify: true})
			if err != nil {
				b.Fatal(err)
			}
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: web.test\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil || resp.StatusCode != http.StatusOK {
				b.Fatalf("%v %v", resp, err)
			}
			io.Copy(io.Discard, resp.Body)
			conns = append(conns, c)
		}
		time.Sleep(100 * time.Millisecond) // the servers' goroutines park
		runtime.GC()
		runtime.ReadMemStats(&after)
		held = float64(after.HeapInuse+after.StackInuse-before.HeapInuse-before.StackInuse) / n
		for _, c := range conns {
			c.Close()
		}
	}
	b.ReportMetric(held, "B-held/conn")
}
