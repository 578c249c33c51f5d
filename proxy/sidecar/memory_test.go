package sidecar

import (
	"context"
	"io"
	"net/http"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
)

// heapInuse is the process's heap in use after a collection: the proxies
// under test run in it.
func heapInuse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// bigBody answers every request with size bytes, written in chunks as fast
// as they are taken, and counts what it wrote.
type bigBody struct {
	size    int
	written atomic.Int64
}

var zeros = make([]byte, 32<<10)

func (b *bigBody) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/octet-stream")
	for n := 0; n < b.size; n += len(zeros) {
		if _, err := w.Write(zeros); err != nil {
			return
		}
		b.written.Add(int64(len(zeros)))
	}
}

// stalled waits until the application has stopped writing: every buffer
// on the way to the clients that do not read is full. It polls, bounded.
func (b *bigBody) stalled(t *testing.T) {
	t.Helper()
	last, still := int64(-1), 0
	eventually(t, "the application's writes stall behind the clients that do not read", func() bool {
		n := b.written.Load()
		if n == last {
			still++
		} else {
			last, still = n, 0
		}
		return still >= 20 // 200ms without a byte taken
	})
}

// Clients that stop reading large responses hold memory in the proxies
// only up to the HTTP/2 flow-control windows. Go's defaults let an
// endpoint (here the next proxy) send 4 MiB per stream and 1 GiB per
// connection ahead of the client: 50 such streams held about 400 MB.
// Through a two-proxy chain: HTTP/2 clients, and HTTP/1 clients carried
// over the HTTP/2 hop between the proxies.
func TestSlowReadersBoundedMemory(t *testing.T) {
	const streams = 50
	for _, c := range []struct {
		name   string
		h2     bool // the client speaks h2c; else HTTP/1, upgraded between the proxies
		client func(t *testing.T, addr string) *http.Client
	}{
		{"h2c", true, func(t *testing.T, addr string) *http.Client {
			c, _ := h2cClient(t, addr)
			// The client itself buffers little: it is the proxies' memory
			// that is measured, in the same process.
			c.Transport.(*http.Transport).HTTP2 = &http.HTTP2Config{MaxReceiveBufferPerStream: 64 << 10}
			return c
		}},
		{"http1-over-h2", false, func(t *testing.T, addr string) *http.Client {
			c, _ := h1Client(t, addr)
			tr := c.Transport.(*http.Transport)
			tr.MaxConnsPerHost, tr.MaxIdleConnsPerHost = 0, streams
			return c
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(testContext(t))
			defer cancel()
			app := &bigBody{size: 16 << 20}
			backend := startHTTP(t, app)
			b := startProxy(t, Config{InboundForward: backend.addr})
			ep := discover.Endpoint{Addr: b.in}
			if !c.h2 {
				ep.Protocol = discover.HintH2 // a meshed peer: HTTP/1 travels over HTTP/2
			}
			a := clientProxy(t, discover.Destination{Authority: "big.test:80", Endpoints: []discover.Endpoint{ep}})
			client := c.client(t, a.out)

			before := heapInuse()
			var bodies []*http.Response
			defer func() {
				for _, r := range bodies {
					r.Body.Close()
				}
			}()
			for i := 0; i < streams; i++ {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://big.test/", nil)
				resp, err := client.Do(req)
				if err != nil {
					t.Fatalf("stream %d: %v", i, err)
				}
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("stream %d: %s", i, resp.Status)
				}
				bodies = append(bodies, resp) // never read
			}
			app.stalled(t)
			grown := int64(heapInuse()) - int64(before)
			// Each of the two proxies may hold a connection window of its
			// endpoint's data; per stream come copy buffers and the
			// client's own window: two stream windows are ample.
			bound := int64(2*httpproxy.DefaultH2ConnectionWindow + 2*streams*httpproxy.DefaultH2StreamWindow)
			t.Logf("%d streams not read: heap in use grew %d MiB (bound %d MiB); the application wrote %d MiB",
				streams, grown>>20, bound>>20, app.written.Load()>>20)
			if grown > bound {
				t.Fatalf("%d streams whose client does not read grew the heap by %d MiB, more than the %d MiB the windows allow",
					streams, grown>>20, bound>>20)
			}
		})
	}
}

// BenchmarkH2StreamThroughput reads one large response over HTTP/2 through
// two proxies, to see what the flow-control windows cost a single stream.
// On loopback the round trip is microseconds; in a cluster a stream's rate
// is bounded by H2StreamWindow / RTT.
func BenchmarkH2StreamThroughput(b *testing.B) {
	const size = 64 << 20
	aout := meshedHop(b, "big.test:80", &bigBody{size: size})
	cp := new(http.Protocols)
	cp.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: cp, DialContext: (&countingDialer{addr: aout}).DialContext}
	defer tr.CloseIdleConnections()
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		resp, err := tr.RoundTrip(must(http.NewRequest(http.MethodGet, "http://big.test/", nil)))
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || n != size {
			b.Fatalf("read %d of %d: %v", n, size, err)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
