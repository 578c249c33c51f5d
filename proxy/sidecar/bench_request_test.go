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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write([]byte("ok"))
	})}
	go srv.Serve(ln)
	defer srv.Close()
	run := func(cfg Config) *Proxy {
		cfg.OutboundAddr, cfg.InboundAddr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
		cfg.OrigDst, cfg.Log = notRedirected, testLogger()
		p, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { p.Run(ctx); close(done) }()
		b.Cleanup(func() { cancel(); <-done })
		return p
	}
	_, bin, _ := run(Config{InboundForward: ln.Addr().String()}).Addrs()
	r, err := discover.NewStatic([]discover.Destination{dst("web.test:80", bin.String())})
	if err != nil {
		b.Fatal(err)
	}
	aout, _, _ := run(Config{Resolver: r}).Addrs()
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
				return d.DialContext(ctx, "tcp", aout.String())
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
