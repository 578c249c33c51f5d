package h2server

import (
	"net/http"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/meridian-mesh/meridian/proxy/internal/h2test"
)

// Rapid reset (CVE-2023-44487): handlers running at once stay within
// MaxConcurrentStreams, reset ones included; a client that queues more
// than four times that gets GOAWAY ENHANCE_YOUR_CALM, and the server's
// goroutines come back down.
func TestRapidReset(t *testing.T) {
	const maxStreams = 20
	var running, peak atomic.Int32
	ts := startServer(t, Config{MaxConcurrentStreams: maxStreams}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := running.Add(1)
		defer running.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		time.Sleep(50 * time.Millisecond) // slower than the attack, context or not
	}))
	before := runtime.NumGoroutine()
	rc := h2test.Dial(t, ts.addr)
	rc.Handshake()
	goaway := make(chan *http2.GoAwayFrame, 1)
	go func() {
		for {
			f, err := rc.Fr.ReadFrame()
			if err != nil {
				close(goaway)
				return
			}
			if g, ok := f.(*http2.GoAwayFrame); ok {
				goaway <- g
				return
			}
		}
	}()
	blk := rc.Block(h2test.Get...)
	sent := 0
	for id := uint32(1); id < 2*10000; id += 2 {
		if rc.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: blk, EndStream: true, EndHeaders: true}) != nil ||
			rc.Fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
			break
		}
		sent++
	}
	g := <-goaway
	if g == nil || g.ErrCode != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("after %d reset streams: %v", sent, g)
	}
	if p := peak.Load(); p > maxStreams {
		t.Fatalf("%d handlers at once, over %d", p, maxStreams)
	}
	rc.C.Close()
	deadline := time.Now().Add(testTimeout)
	for runtime.NumGoroutine() > before+2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+2 {
		t.Fatalf("%d goroutines, %d before", n, before)
	}
}

// A client that resets streams at a pace the handlers keep up with is
// served on (Go's server's behaviour).
func TestResetsWithinBounds(t *testing.T) {
	rc := rawServer(t, Config{MaxConcurrentStreams: 100}, okHandler())
	for id := uint32(1); id < 400; id += 2 {
		rc.Headers(id, true)
		rc.Fr.WriteRSTStream(id, http2.ErrCodeCancel)
	}
	rc.Headers(401, true)
	if r := rc.Response(401); r.Status != "200" {
		t.Fatal(r.Status)
	}
}

// A PING flood from a client that does not read: the server stops
// reading once its answers cannot be written (TCP backpressure), so
// nothing queues up without bound; the client's writes stall.
func TestPingFloodWithoutReading(t *testing.T) {
	ts := startServer(t, Config{}, okHandler())
	rc := h2test.Dial(t, ts.addr)
	rc.Handshake()
	rc.C.SetWriteDeadline(time.Now().Add(3 * time.Second))
	var err error
	sent := 0
	for ; sent < 10000000 && err == nil; sent++ {
		err = rc.Fr.WritePing(false, [8]byte{byte(sent)})
	}
	if err == nil {
		t.Fatalf("%d PINGs taken without any answer read", sent)
	}
	t.Logf("the client's writes stalled after %d PINGs: %v", sent, err)
}

// Too many streams at once: REFUSED_STREAM beyond the limit, the others
// served.
func TestTooManyStreams(t *testing.T) {
	rc := rawServer(t, Config{MaxConcurrentStreams: 3}, blockingHandler())
	for id := uint32(1); id <= 9; id += 2 {
		rc.Headers(id, false)
	}
	rc.ExpectRST(7, http2.ErrCodeRefusedStream)
	rc.ExpectRST(9, http2.ErrCodeRefusedStream)
	for id := uint32(1); id <= 5; id += 2 {
		rc.Fr.WriteData(id, true, nil)
		if r := rc.Response(id); string(r.Body) != "done" {
			t.Fatalf("%d: %q", id, r.Body)
		}
	}
}
