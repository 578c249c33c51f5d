package sidecar

import (
	"bufio"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
)

// A request with both Content-Length and Transfer-Encoding is framed by
// Transfer-Encoding and forwarded without Content-Length, and the
// connection is closed after the response (RFC 9112 §6.1): a request
// pipelined behind it is not processed.
func TestContentLengthWithTransferEncoding(t *testing.T) {
	for _, topo := range topologies {
		t.Run(topo.name, func(t *testing.T) {
			var served atomic.Int32
			app := startHTTP(t, countingApp(&served))
			a := topo.start(t, app.addr)
			c := dialTCP(t, a.out)
			io.WriteString(c, "POST /smuggle HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"+
				"5\r\nhello\r\n0\r\n\r\n"+
				"GET /next HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
			rs, closed := readResponses(t, bufio.NewReader(c), http.MethodPost, 3)
			if len(rs) != 1 || !closed {
				t.Fatalf("responses %v (closed %v), want one and the connection closed", statuses(rs), closed)
			}
			r := rs[0]
			if r.status != http.StatusOK || r.body != "hello" || r.header.Get("X-Path") != "/smuggle" {
				t.Errorf("got %d %q path %q, want 200 \"hello\" from /smuggle", r.status, r.body, r.header.Get("X-Path"))
			}
			if cl := r.header.Get("X-Content-Length"); cl == "3" {
				t.Errorf("the application received Content-Length %q beside the chunked body", cl)
			}
			if !r.close {
				t.Errorf("no Connection: close on the response")
			}
			if n := served.Load(); n != 1 {
				t.Errorf("the application served %d requests, want 1", n)
			}
		})
	}
}

// Following the request framing never closes a connection that did nothing
// wrong: chunked requests (with extensions and trailers), bodies that look
// like request heads, and pipelined requests keep the connection open.
func TestFramingKeepsHonestConnectionsOpen(t *testing.T) {
	for _, topo := range topologies {
		t.Run(topo.name, func(t *testing.T) {
			var served atomic.Int32
			app := startHTTP(t, countingApp(&served))
			a := topo.start(t, app.addr)
			c := dialTCP(t, a.out)
			fake := "POST /fake HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
			io.WriteString(c, "POST /chunked HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n"+
				"5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"+
				"POST /fixed HTTP/1.1\r\nHost: app.test\r\nContent-Length: "+strconv.Itoa(len(fake))+"\r\n\r\n"+fake+
				// The request the body above looks like, honest this time.
				"POST /fake HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
			br := bufio.NewReader(c)
			rs, _ := readResponses(t, br, http.MethodPost, 3)
			if len(rs) != 3 {
				t.Fatalf("responses %v, want 3", statuses(rs))
			}
			for i, want := range []string{"/chunked", "/fixed", "/fake"} {
				if rs[i].status != http.StatusOK || rs[i].header.Get("X-Path") != want || rs[i].close {
					t.Errorf("response %d: %d from %q (close %v), want 200 from %s, connection kept", i, rs[i].status, rs[i].header.Get("X-Path"), rs[i].close, want)
				}
			}
			// Still open: one more request is answered.
			io.WriteString(c, "GET /again HTTP/1.1\r\nHost: app.test\r\n\r\n")
			if rs, _ := readResponses(t, br, http.MethodGet, 1); len(rs) != 1 || rs[0].header.Get("X-Path") != "/again" {
				t.Errorf("after three requests: responses %v, want the fourth's", statuses(rs))
			}
		})
	}
}
