// Command mtls measures what mutual TLS between meshed proxies costs:
//
//	client → outbound proxy → inbound proxy → server
//
// with and without mTLS on the hop between the proxies (and the direct
// client → server baseline), at a fixed open-loop request rate over
// HTTP/1.1, latency measured from each request's intended send time (no
// coordinated omission); and the rate of full mTLS handshakes (TLS 1.3,
// ECDSA P-256, SPIFFE verification on both sides) one process sustains.
// Proxies, identity service, backend and load generator run in this one
// process on loopback. It prints Markdown and ends with one RESULT line.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	idpb "github.com/meridian-mesh/meridian/api/proto/identity"
	"github.com/meridian-mesh/meridian/controlplane/identity"
	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/sidecar"
	"github.com/meridian-mesh/meridian/proxy/tlsid"
)

var (
	rate       = flag.Float64("rps", 1000, "request rate")
	duration   = flag.Duration("duration", 10*time.Second, "measured duration of each run")
	warmup     = flag.Duration("warmup", 2*time.Second, "unmeasured run before each measured one")
	hsDuration = flag.Duration("handshakes", 5*time.Second, "how long to measure handshakes per second")
)

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

func main() {
	flag.Parse()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	quiet := slog.New(slog.DiscardHandler)

	// Identity service.
	ca, err := identity.Generate(td)
	check(err)
	v := identity.VerifierFunc(func(_ context.Context, tok []byte) (identity.Subject, error) {
		return identity.Subject{Namespace: "bench", ServiceAccount: string(tok)}, nil
	})
	g := grpc.NewServer()
	idpb.RegisterIdentityServer(g, identity.NewServer(ca, v, identity.Options{}))
	gl := listen()
	go g.Serve(gl)
	defer g.Stop()
	cc, err := grpc.NewClient("passthrough:///"+gl.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	check(err)
	defer cc.Close()
	newID := func(sa string) *tlsid.Identity {
		id, _ := identity.ID(td, "bench", sa)
		i, err := tlsid.New(tlsid.Config{ID: id, Roots: ca.Roots, Client: idpb.NewIdentityClient(cc),
			Token: func() ([]byte, error) { return []byte(sa), nil }, Log: quiet})
		check(err)
		go i.Run(ctx)
		select {
		case <-i.Ready():
		case <-time.After(10 * time.Second):
			log.Fatal("no certificate")
		}
		return i
	}
	clientID, serverID := newID("client"), newID("server")

	// Backend.
	al := listen()
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	})}
	go app.Serve(al)
	defer app.Close()

	chain := func(mtls bool) string {
		var sid, cid *tlsid.Identity
		ep := discover.Endpoint{}
		if mtls {
			sid, cid = serverID, clientID
		}
		server := start(ctx, sidecar.Config{InboundForward: al.Addr().String(), Identity: sid, Log: quiet})
		_, in, _ := server.Addrs()
		ep.Addr = in.String()
		if mtls {
			ep.Identity = serverID.ID().String()
		}
		r, err := discover.NewStatic([]discover.Destination{{Authority: "app.bench:80", Endpoints: []discover.Endpoint{ep}}})
		check(err)
		client := start(ctx, sidecar.Config{Resolver: r, Identity: cid, Log: quiet})
		out, _, _ := client.Addrs()
		return out.String()
	}
	plainOut, mtlsOut := chain(false), chain(true)

	type result struct {
		name               string
		p50, p99, p999, mx time.Duration
		errs               int64
	}
	var results []result
	for _, run := range []struct{ name, addr string }{
		{"direct", al.Addr().String()},
		{"meshed, plaintext hop", plainOut},
		{"meshed, mTLS hop", mtlsOut},
	} {
		load(run.addr, *rate, *warmup)
		h, errs := load(run.addr, *rate, *duration)
		q := func(p float64) time.Duration { return time.Duration(h.ValueAtQuantile(p)) * time.Microsecond }
		results = append(results, result{run.name, q(50), q(99), q(99.9), time.Duration(h.Max()) * time.Microsecond, errs})
	}

	hs := handshakes(clientID, serverID, *hsDuration)

	fmt.Printf("## mTLS between meshed proxies (%s, GOMAXPROCS=%d, %.0f RPS HTTP/1.1 open loop, %v per run)\n\n",
		runtime.Version(), runtime.GOMAXPROCS(0), *rate, *duration)
	fmt.Println("| chain | p50 | p99 | p99.9 | max | errors |")
	fmt.Println("| --- | --- | --- | --- | --- | --- |")
	for _, r := range results {
		fmt.Printf("| %s | %s | %s | %s | %s | %d |\n", r.name, ms(r.p50), ms(r.p99), ms(r.p999), ms(r.mx), r.errs)
	}
	added := results[2].p99 - results[1].p99
	fmt.Printf("\np99 added by mTLS on the meshed hop (mTLS − plaintext): %s\n", ms(added))
	fmt.Printf("full mTLS handshakes per second (both sides in this process, %d goroutines): %.0f\n\n",
		runtime.GOMAXPROCS(0), hs)
	fmt.Printf("RESULT mtls_p99_added_ms=%.3f plain_p99_ms=%.3f mtls_p99_ms=%.3f handshakes_per_s=%.0f errors=%d rps=%.0f\n",
		float64(added)/1e6, float64(results[1].p99)/1e6, float64(results[2].p99)/1e6, hs,
		results[0].errs+results[1].errs+results[2].errs, *rate)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/1e6) }

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

func listen() net.Listener {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	return l
}

func start(ctx context.Context, cfg sidecar.Config) *sidecar.Proxy {
	cfg.OutboundAddr, cfg.InboundAddr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.Balancer = balance.PeakEWMA
	p, err := sidecar.New(cfg)
	check(err)
	go p.Run(ctx)
	return p
}

// load sends rate requests per second for d, each at its scheduled time
// whatever the previous ones did, and records latency from that time.
func load(addr string, rate float64, d time.Duration) (*hdrhistogram.Histogram, int64) {
	tr := &http.Transport{MaxIdleConnsPerHost: 512, DisableCompression: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var nd net.Dialer
			return nd.DialContext(ctx, "tcp", addr)
		}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	h := hdrhistogram.New(1, 60_000_000, 3)
	var mu sync.Mutex
	var errs atomic.Int64
	var wg sync.WaitGroup
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	n := int(d.Seconds() * rate)
	for i := 0; i < n; i++ {
		at := start.Add(time.Duration(i) * interval)
		time.Sleep(time.Until(at))
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.Get("http://app.bench:80/")
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
			lat := time.Since(at)
			if err != nil {
				errs.Add(1)
			}
			mu.Lock()
			h.RecordValue(lat.Microseconds())
			mu.Unlock()
		}()
	}
	wg.Wait()
	return h, errs.Load()
}

// handshakes counts complete mTLS handshakes over loopback TCP, client and
// server both in this process, for d.
func handshakes(client, server *tlsid.Identity, d time.Duration) float64 {
	ln := listen()
	defer ln.Close()
	scfg := server.ServerConfig()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				s := tls.Server(c, scfg)
				if s.Handshake() == nil {
					s.Read(make([]byte, 1)) // the client's byte proves it accepted us
				}
			}()
		}
	}()
	ccfg := client.ClientConfig(server.ID(), tlsid.ALPNH2)
	var n atomic.Int64
	begin := time.Now()
	deadline := begin.Add(d)
	var wg sync.WaitGroup
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					continue
				}
				tc := tls.Client(c, ccfg)
				if tc.Handshake() == nil {
					if _, err := tc.Write([]byte{1}); err == nil {
						n.Add(1)
					}
				}
				c.Close()
			}
		}()
	}
	wg.Wait()
	return float64(n.Load()) / time.Since(begin).Seconds()
}
