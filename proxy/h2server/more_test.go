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
)

// h2server's own tests: the RFC 9113 rules both of the proxy's HTTP/2
// servers keep are proxy/internal/h2suite's (suite_test.go runs them).

// okHandler reads the body, then answers "ok".
func okHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	})
}

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
