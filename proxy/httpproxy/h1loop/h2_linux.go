package h1loop

// HTTP/2 on the loops: a plaintext connection whose first bytes are
// HTTP/2's preface (h2c with prior knowledge), or a TLS one whose ALPN
// settled h2, is served by Server.HTTP2 (proxy/httpproxy/h2loop) over the
// client's stream, on the same loop, with the same accounting: its bytes
// counted in its metrics.Conn, its end told to Closed.

import (
	"bytes"
	"crypto/tls"

	"golang.org/x/net/http2"

	"github.com/meridian-mesh/meridian/proxy/httpproxy/h2loop"
)

var preface = []byte(http2.ClientPreface)

// h2Start says what a client's first bytes are for HTTP/2: the whole
// preface (serve it), a part of it (wait for more), or neither.
func h2Start(buf []byte) (whole, part bool) {
	if len(buf) >= len(preface) {
		return bytes.Equal(buf[:len(preface)], preface), false
	}
	return false, bytes.Equal(buf, preface[:len(buf)])
}

// serveH2 hands c to the Server's HTTP/2 server for good.
func (c *client) serveH2() {
	c.timer.Stop()
	c.headWait = false
	var st *tls.ConnectionState
	if c.tls != nil {
		st = &c.tls.state
	}
	c.h2 = c.s.HTTP2.ServeTransport(c.lp.l, h2transport{c}, c.remote, st)
}

// h2transport is a client's stream as h2loop's Transport.
type h2transport struct{ c *client }

var _ h2loop.Transport = h2transport{}

func (t h2transport) Buffered() []byte {
	t.c.pull()
	return t.c.buffered()
}

func (t h2transport) Consume(n int)        { t.c.consume(n) }
func (t h2transport) Write(b []byte) error { return t.c.write(b, nil) }
func (t h2transport) Pending() int         { return t.c.c.Pending() }
func (t h2transport) EOF() bool            { return t.c.readEOF() }
func (t h2transport) Err() error           { return t.c.readErr() }

// CloseWrite ends the client's side: close_notify first over TLS, as
// crypto/tls's CloseWrite sends it.
func (t h2transport) CloseWrite() error {
	if ts := t.c.ts; ts != nil {
		ts.tc.CloseWrite()
		ts.flush()
	}
	return t.c.c.CloseWrite()
}

func (t h2transport) Close() error {
	t.c.h2 = nil // closed by its own end: not told again
	t.c.close()
	return nil
}
