package sidecar

import (
	"context"
	"net"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"
)

// memInuse is heap and goroutine stacks in use after a collection.
func memInuse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse
}

// BenchmarkInFlightFootprint measures what one request held in flight costs
// the proxy: K requests wait in the application, once sent straight to it
// and once through an inbound proxy; the difference over K is the proxy's
// share (heap and stacks). It reports, it asserts nothing: run it with
// -benchtime=1x. Per-request budget of sidecar.MaxInFlightFor.
func BenchmarkInFlightFootprint(b *testing.B) {
	const k = 400
	for _, proto := range []string{"http1", "h2c"} {
		b.Run(proto, func(b *testing.B) {
			var direct, proxied float64
			for range b.N {
				direct = holdInFlight(b, proto, k, false)
				proxied = holdInFlight(b, proto, k, true)
			}
			b.ReportMetric((proxied-direct)/k, "B/in-flight")
		})
	}
}

// holdInFlight holds k requests in an application, through a proxy or not,
// and returns the memory in use meanwhile less what was in use before.
func holdInFlight(b *testing.B, proto string, k int, viaProxy bool) float64 {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	release := make(chan struct{})
	arrived := make(chan struct{}, k)
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: protos, HTTP2: &http.HTTP2Config{MaxConcurrentStreams: 2 * k},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			arrived <- struct{}{}
			<-release
		})}
	go srv.Serve(ln)
	defer srv.Close()
	target := ln.Addr().String()
	if viaProxy {
		p, err := New(Config{OutboundAddr: "127.0.0.1:0", InboundAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
			InboundForward: target, OrigDst: notRedirected, Log: testLogger(), MaxInFlight: -1})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { p.Run(ctx); close(done) }()
		defer func() { cancel(); <-done }()
		_, in, _ := p.Addrs()
		target = in.String()
	}
	tr := &http.Transport{DialContext: (&countingDialer{addr: target}).DialContext, MaxIdleConnsPerHost: k}
	if proto == "h2c" {
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	defer tr.CloseIdleConnections()
	before := memInuse()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for range k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://app.test/", nil)
			if resp, err := tr.RoundTrip(req); err == nil {
				resp.Body.Close()
			}
		}()
	}
	for range k {
		select {
		case <-arrived:
		case <-ctx.Done():
			b.Fatal("the requests did not all reach the application")
		}
	}
	held := memInuse()
	close(release)
	wg.Wait()
	return float64(held) - float64(before)
}
