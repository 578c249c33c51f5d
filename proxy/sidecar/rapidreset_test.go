package sidecar

import (
	"bytes"
	"io"
	"net/http"
	"runtime"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// rapidReset opens an HTTP/2 connection to addr and sends, up to max times
// or for at most d, a request's HEADERS followed at once by its
// RST_STREAM (CVE-2023-44487). It returns how many streams it sent, the
// server's GOAWAY, if one came before the connection closed, and the
// SETTINGS_MAX_CONCURRENT_STREAMS the server announced (0 for none).
func rapidReset(t *testing.T, addr, authority string, max int, d time.Duration) (sent int, goaway *http2.GoAwayFrame, maxStreams uint32) {
	t.Helper()
	c := dialTCP(t, addr)
	deadline := time.Now().Add(d)
	c.SetDeadline(deadline.Add(testTimeout))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	// Acknowledge the server's SETTINGS, or it closes the connection.
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			maxStreams, _ = sf.Value(http2.SettingMaxConcurrentStreams)
			if err := fr.WriteSettingsAck(); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	got := make(chan *http2.GoAwayFrame, 1)
	go func() {
		defer close(got)
		rf := http2.NewFramer(io.Discard, c)
		for {
			f, err := rf.ReadFrame()
			if err != nil {
				return
			}
			if g, ok := f.(*http2.GoAwayFrame); ok {
				ga := *g
				got <- &ga
				return
			}
		}
	}()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, hf := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", authority}, {":path", "/"}} {
		enc.WriteField(hpack.HeaderField{Name: hf[0], Value: hf[1]})
	}
	block := hb.Bytes()
	for id := uint32(1); sent < max && time.Now().Before(deadline); id += 2 {
		if fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: true, EndHeaders: true}) != nil ||
			fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
			break
		}
		sent++
	}
	// The server's answer to what was sent: a GOAWAY, or nothing (the
	// connection stays usable) until this side closes it.
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	g := <-got
	c.Close()
	return sent, g, maxStreams
}

// peakHeap samples HeapInuse (garbage included: what the process holds)
// until stop is closed, and returns the highest value seen.
func peakHeap(stop <-chan struct{}) <-chan uint64 {
	out := make(chan uint64, 1)
	go func() {
		var peak uint64
		var ms runtime.MemStats
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-stop:
				out <- peak
				return
			case <-t.C:
			}
		}
	}()
	return out
}

// Rapid reset (CVE-2023-44487) against the outbound and the inbound
// listener, each in front of a slow application: both bound it alike
// (h2server, as Go's server, runs at most the advertised
// MaxConcurrentStreams handlers per connection, the same number on both
// listeners, and a connection whose queue of unstarted ones passes four
// times that gets GOAWAY ENHANCE_YOUR_CALM, never another error: whether
// the queue gets there depends on how fast the reset handlers end, so
// either outcome is right), the proxies' memory stays bounded while it
// lasts and after, every reset stream's handler ends, and the proxy serves
// the next client.
func TestRapidResetBounded(t *testing.T) {
	slow := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // an application slower than the attack
		case <-r.Context().Done():
		case <-time.After(50 * time.Millisecond):
		}
	}))
	b := startProxy(t, Config{InboundForward: slow.addr})
	a := clientProxy(t, dst("web.test:80", b.in))
	const streams = 20000
	var bounds []uint32
	for _, side := range []struct{ name, addr string }{{"outbound", a.out}, {"inbound", b.in}} {
		before := heapInuse()
		stop := make(chan struct{})
		peak := peakHeap(stop)
		sent, g, bound := rapidReset(t, side.addr, "web.test:80", streams, 3*time.Second)
		bounds = append(bounds, bound)
		close(stop)
		p := <-peak
		// Every reset stream's handler ends (pooled connections to the
		// next hop stay, so goroutines are not the measure).
		expectMetric(t, a.admin, "request_in_flight", nil, 0)
		expectMetric(t, b.admin, "request_in_flight", nil, 0)
		after := heapInuse()
		outcome := "no GOAWAY"
		if g != nil {
			outcome = "GOAWAY " + g.ErrCode.String()
			if g.ErrCode != http2.ErrCodeEnhanceYourCalm {
				t.Errorf("%s: GOAWAY %v, want ENHANCE_YOUR_CALM or none", side.name, g.ErrCode)
			}
		}
		t.Logf("%s: %d streams reset; %s; heap in use: peak %+d MiB, after GC %+d MiB",
			side.name, sent, outcome, (int64(p)-int64(before))>>20, (int64(after)-int64(before))>>20)
		if grown := int64(after) - int64(before); grown > 32<<20 {
			t.Errorf("%s: the heap kept %d MiB after the attack", side.name, grown>>20)
		}
		if grown := int64(p) - int64(before); grown > 128<<20 {
			t.Errorf("%s: the heap peaked %d MiB above its start during the attack", side.name, grown>>20)
		}
		// The next client is served.
		client, _ := h2cClient(t, side.addr)
		resp, err := client.Get("http://web.test/")
		if err != nil {
			t.Fatalf("%s after the attack: %v", side.name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s after the attack: %s", side.name, resp.Status)
		}
	}
	if bounds[0] == 0 || bounds[0] != bounds[1] {
		t.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS: outbound %d, inbound %d; want the same bound on both", bounds[0], bounds[1])
	}
}
