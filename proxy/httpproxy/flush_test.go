package httpproxy_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/protobuf/proto"

	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/h2server"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/h2client"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/httpproxytest"
	"github.com/meridian-mesh/meridian/proxy/metrics"
)

type unaryEcho struct {
	testgrpc.UnimplementedTestServiceServer
}

func (unaryEcho) UnaryCall(_ context.Context, in *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{Payload: in.GetPayload()}, nil
}

type writeCounted struct {
	net.Conn
	writes *atomic.Int64
}

func (c writeCounted) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// A unary gRPC response that its application sent in one write (grpc-go
// does: HEADERS, DATA, trailers) leaves the forwarder's HTTP/2 server in
// one write too: the headers are not flushed alone when the body is in,
// nor the last bytes, nor before the trailers. And the request, whole when
// it reached the forwarder, leaves the proxy in one write.
func TestUnaryGRPCOneWriteEachWay(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(gs, unaryEcho{})
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)

	// The application's connection, counted: the proxy's request writes.
	var upWrites atomic.Int64
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return writeCounted{c, &upWrites}, nil
	}
	b := balance.New(balance.Options[*httpproxy.Upstream]{
		New:   func(s balance.Spec) *httpproxy.Upstream { return httpproxy.NewUpstream(s.Addr, false, dial) },
		Close: (*httpproxy.Upstream).Close,
	})
	b.Update([]balance.Spec{{Addr: ln.Addr().String(), Weight: 1}})
	t.Cleanup(b.Close)
	target := &httpproxy.Target{Authority: "grpc.test:80", Balancer: b}
	fwd := httpproxytest.Routed("outbound", target)(httpproxy.New(httpproxy.Options{Direction: "outbound", Metrics: metrics.New(), Log: httpproxytest.Log()}))

	// The proxy's server, its connections counted: the response writes.
	front, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &h2server.Server{Handler: fwd}
	var downWrites atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := front.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				srv.ServeConn(context.Background(), writeCounted{c, &downWrites})
			}()
		}
	}()
	t.Cleanup(func() { front.Close(); srv.Close(); wg.Wait() })

	client := h2client.New(h2client.Options{Dial: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", front.Addr().String())
	}})
	t.Cleanup(client.CloseIdleConnections)
	msg, _ := proto.Marshal(&testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("hello")}})
	frame := append([]byte{0, 0, 0, 0, byte(len(msg))}, msg...)
	call := func() {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://grpc.test/grpc.testing.TestService/UnaryCall", nil)
		req.Body = &wholeBody{data: frame}
		req.ContentLength = -1
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("Te", "trailers")
		resp, err := client.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.Trailer.Get("Grpc-Status") != "0" || len(b) == 0 {
			t.Fatalf("status %d, trailers %v, body %d bytes", resp.StatusCode, resp.Trailer, len(b))
		}
	}
	call() // connections, SETTINGS
	time.Sleep(50 * time.Millisecond)
	const n = 20
	oneDown := 0
	u0 := upWrites.Load()
	for range n {
		d0 := downWrites.Load()
		call()
		time.Sleep(5 * time.Millisecond) // window updates, if any, are counted with their call
		if downWrites.Load()-d0 == 1 {
			oneDown++
		}
	}
	// A response that arrives in two reads (rare on loopback) takes two.
	if oneDown < n*3/4 {
		t.Errorf("calls answered in one write: %d of %d, want nearly all", oneDown, n)
	}
	// Upstream: the request in one write (net/http's transport took two),
	// and the ACK of the PING grpc-go sends after its response to
	// estimate bandwidth.
	if up := float64(upWrites.Load()-u0) / n; up > 2.2 {
		t.Errorf("%.2f writes upstream per call, want 2 (the request, a PING ACK)", up)
	}
	t.Logf("%d of %d calls answered in one write; %.2f writes upstream per call", oneDown, n, float64(upWrites.Load()-u0)/n)
}

// wholeBody is a request body whose end is in, as h2server's once the
// client's END_STREAM has come.
type wholeBody struct{ data []byte }

func (b *wholeBody) Read(p []byte) (int, error) {
	n := copy(p, b.data)
	b.data = b.data[n:]
	if len(b.data) == 0 {
		return n, io.EOF
	}
	return n, nil
}
func (b *wholeBody) Buffered() (int, bool) { return len(b.data), true }
func (b *wholeBody) Close() error          { return nil }
