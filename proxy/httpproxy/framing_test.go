package httpproxy

import (
	"net"
	"net/http"
	"testing"
)

// chunkedConn serves a fixed byte stream, at most n bytes per Read.
type chunkedConn struct {
	net.Conn
	data []byte
	n    int
}

func (c *chunkedConn) Read(p []byte) (int, error) {
	k := min(len(p), c.n, len(c.data))
	copy(p, c.data[:k])
	c.data = c.data[k:]
	return k, nil
}

// FramingConn pairs each request with its head whatever the read
// boundaries: only the head with both Content-Length and Transfer-Encoding
// is ambiguous, not a body that looks like one, not an HTTP/1.0 request
// (whose Transfer-Encoding net/http ignores).
func TestFramingConnHeads(t *testing.T) {
	stream := "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n" +
		"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: 1\r\n\r\n" +
		"POST /b HTTP/1.1\r\nHost: a\r\ncontent-length: 3\r\nTRANSFER-ENCODING: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n" +
		"POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 61\r\n\r\nPOST /d HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n" +
		"POST /d HTTP/1.0\r\nHost: a\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nok" +
		"POST /d HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
	want := []struct {
		method, target string
		ambiguous      bool
	}{
		{"POST", "/a", false}, {"POST", "/b", true}, {"POST", "/c", false},
		{"POST", "/d", false}, {"POST", "/d", false},
	}
	for _, step := range []int{1, 2, 7, 64, len(stream)} {
		c := NewFramingConn(&chunkedConn{data: []byte(stream), n: step})
		buf := make([]byte, 4096)
		for {
			n, _ := c.Read(buf)
			if n == 0 {
				break
			}
		}
		if c.state != inHead {
			t.Fatalf("read %d at a time: state %d at the end, want inHead", step, c.state)
		}
		for _, w := range want {
			r := &http.Request{Method: w.method, RequestURI: w.target}
			if got := c.ambiguous(r); got != w.ambiguous {
				t.Errorf("read %d at a time: %s %s ambiguous %v, want %v", step, w.method, w.target, got, w.ambiguous)
			}
		}
	}
}

// After a request to switch protocols, the connection's bytes are no longer
// followed (a WebSocket's frames are not scanned for lines).
func TestFramingConnStopsAtUpgrade(t *testing.T) {
	c := NewFramingConn(&chunkedConn{data: []byte("GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"), n: 4096})
	c.Read(make([]byte, 4096))
	r := &http.Request{Method: "GET", RequestURI: "/ws", Header: http.Header{"Upgrade": {"websocket"}}}
	if c.ambiguous(r) {
		t.Error("an upgrade request is not ambiguous")
	}
	c.Conn = &chunkedConn{data: []byte("\x81\x05hello no newline in sight"), n: 4096}
	c.Read(make([]byte, 4096))
	if c.state != lost || len(c.line) != 0 {
		t.Errorf("after the upgrade: state %d, %d bytes kept; want lost, none", c.state, len(c.line))
	}
}
