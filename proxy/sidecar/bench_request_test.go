package sidecar

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/proxy/discover"
)

// BenchmarkMeshedRequest is one small request through the meshed hop:
// client → outbound proxy → inbound proxy → application, on loopback,
// over HTTP/1 and h2c. allocs/op counts the whole process (client and
// application included), the same in every run.
func BenchmarkMeshedRequest(b *testing.B) {
	aout := meshedHop(b, "web.test:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write([]byte("ok"))
	}))
	for _, proto := range []string{"http1", "h2c"} {
		b.Run(proto, func(b *testing.B) {
			cp := new(http.Protocols)
			if proto == "h2c" {
				cp.SetUnencryptedHTTP2(true)
			} else {
				cp.SetHTTP1(true)
			}
			tr := &http.Transport{Protocols: cp, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "tcp", aout)
			}}
			defer tr.CloseIdleConnections()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				req := must(http.NewRequest(http.MethodPost, "http://web.test/x", strings.NewReader("hello")))
				resp, err := tr.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
		})
	}
}

// meshedHop runs an application (HTTP/1 and h2c) behind an inbound proxy,
// and an outbound proxy that knows authority as that inbound proxy; it
// returns the outbound proxy's address. All stop when the benchmark ends.
func meshedHop(b *testing.B, authority string, app http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: protos, Handler: app}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	in := startProxy(b, Config{InboundForward: ln.Addr().String()})
	r, err := discover.NewStatic([]discover.Destination{dst(authority, in.in)})
	if err != nil {
		b.Fatal(err)
	}
	return startProxy(b, Config{Resolver: r}).out
}
