package h2server

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/meridian-mesh/meridian/proxy/internal/h2test"
)

// oldTLS claims a TLS 1.1 connection.
type oldTLS struct{ net.Conn }

func (oldTLS) ConnectionState() tls.ConnectionState {
	return tls.ConnectionState{Version: tls.VersionTLS11, HandshakeComplete: true}
}

// RFC 9113 9.2: HTTP/2 over TLS needs TLS 1.2 at least.
func TestTLSVersionTooOld(t *testing.T) {
	a, b := net.Pipe()
	srv := &Server{Handler: okHandler()}
	go srv.ServeConn(context.Background(), oldTLS{a})
	defer srv.Close()
	b.SetDeadline(time.Now().Add(testTimeout))
	fr := http2.NewFramer(b, b)
	f, err := fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	if g, ok := f.(*http2.GoAwayFrame); !ok || g.ErrCode != http2.ErrCodeInadequateSecurity {
		t.Fatalf("%v", f)
	}
	b.Close()
}

func TestPrefaceTimeout(t *testing.T) {
	ts := startServer(t, Config{PrefaceTimeout: 100 * time.Millisecond}, okHandler())
	rc := h2test.Dial(t, ts.addr)
	rc.Read() // SETTINGS
	start := time.Now()
	for {
		if _, err := rc.Fr.ReadFrame(); err != nil {
			break
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("closed after %v", d)
	}
}

// The client's SETTINGS_HEADER_TABLE_SIZE bounds the server's encoder:
// with 0, responses use no dynamic table (the client's decoder refuses it).
func TestClientHeaderTableSize(t *testing.T) {
	rc := rawServer(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Repeated", "the same value every time")
		io.WriteString(w, "ok")
	}), http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0})
	rc.Fr.ReadMetaHeaders.SetAllowedMaxDynamicTableSize(0)
	for id := uint32(1); id < 8; id += 2 {
		rc.Headers(id, true)
		if r := rc.Response(id); r.Header["x-repeated"][0] != "the same value every time" {
			t.Fatalf("%v", r.Header)
		}
	}
}

func TestHeadResponse(t *testing.T) {
	rc := rawServer(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "twelve bytes")
	}))
	rc.Headers(1, true, ":method", "HEAD", ":scheme", "http", ":authority", "a", ":path", "/")
	r := rc.Response(1)
	if len(r.Frames) != 1 || len(r.Body) != 0 || r.Header["content-length"][0] != "12" {
		t.Fatalf("%d frames, body %q, %v", len(r.Frames), r.Body, r.Header)
	}
}

// Frames on a stream the client reset: DATA is refused with STREAM_CLOSED
// (its connection window given back), the rest ignored.
func TestFramesAfterClientReset(t *testing.T) {
	rc := rawServer(t, Config{MaxReceiveBufferPerConnection: 65535}, blockingHandler())
	rc.Headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "a", ":path", "/noread")
	rc.Fr.WriteRSTStream(1, http2.ErrCodeCancel)
	rc.Fr.WritePriority(1, http2.PriorityParam{StreamDep: 0, Weight: 1})
	rc.Fr.WriteWindowUpdate(1, 5)
	rc.Fr.WriteData(1, false, make([]byte, 60000))
	rc.ExpectRST(1, http2.ErrCodeStreamClosed)
	// the connection's window came back: a full window's worth goes through
	rc.Headers(3, false)
	rc.Fr.WriteData(3, true, make([]byte, 60000))
	if r := rc.Response(3); string(r.Body) != "done" {
		t.Fatalf("%q", r.Body)
	}
}

// TestHeaderSnapshot: the HEADERS carry the header as it was at
// WriteHeader, though the snapshot's storage is reused between responses
// (concurrent ones included).
func TestHeaderSnapshot(t *testing.T) {
	ts := startServer(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("id")
		w.Header().Set("X-Id", id)
		w.Header()["X-Multi"] = []string{"a", id}
		w.Header()["X-Nil"] = nil
		w.WriteHeader(http.StatusAccepted)
		w.Header().Set("X-Id", "changed")
		w.Header().Set("X-Late", "1")
		w.Header()["X-Multi"][0] = "changed"
		w.Write([]byte(id))
	}))
	c := h2cClient(t)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := strconv.Itoa(i)
			resp, err := c.Get("http://" + ts.addr + "/?id=" + id)
			if err != nil {
				t.Error(err)
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted || string(body) != id || resp.Header.Get("X-Id") != id ||
				strings.Join(resp.Header["X-Multi"], ",") != "a,"+id || resp.Header.Get("X-Late") != "" {
				t.Errorf("id %s: %d %q %v", id, resp.StatusCode, body, resp.Header)
			}
		}()
	}
	wg.Wait()
}

func TestSnapshotIsClone(t *testing.T) {
	for range 3 {
		h := http.Header{"A": {"1", "2"}, "B": nil, "C": {}, "D": {"x"}}
		s := snapshot(h)
		if got, want := s.h, h.Clone(); len(got) != len(want) || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("snapshot %v, Clone %v", got, want)
		}
		if s.h["B"] != nil {
			t.Fatal("nil value not kept nil")
		}
		h["A"][0] = "changed"
		if s.h["A"][0] != "1" {
			t.Fatal("snapshot shares values")
		}
		s.h["D"] = append(s.h["D"], "y")
		if s.h["A"][1] != "2" {
			t.Fatal("an append overwrote another name's values")
		}
		s.release()
	}
}
