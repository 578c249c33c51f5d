package h1loop

// An HTTP/1.1 client's request relayed to an HTTP/2 endpoint (Target.H2:
// a peer proxy that takes HTTP/2, an h2c backend): the request the loop
// read whole (its head, and a body by Content-Length) goes as a stream of
// the loop's HTTP/2 connections to the endpoint, as an HTTP/2 client's
// does (relay_linux.go), and its response comes back as an HTTP/1.1
// response (h1down): the head with the length the endpoint declared, or
// with the body's length when the whole response came with its head,
// chunked otherwise (with its trailers); the response's bytes leave in one
// write per pass of the endpoint's connection. Whatever the relay would
// give an HTTP/2 client's fallback (a dial refused, a stream the endpoint
// did not process or that may be sent again, before a response) hands the
// connection to the goroutine path with the request in front, as an
// HTTP/1.1 exchange's failure does.

import (
	"net/http"
	"strconv"
	"time"

	"golang.org/x/net/http2"

	"github.com/meridian-mesh/meridian/proxy/httpproxy"
)

// The field the loop adds to an HTTP/1.1 request it carries over HTTP/2
// to a peer proxy (Target.OrigProto), and its value.
var (
	origProtoKey = http.CanonicalHeaderKey(httpproxy.OrigProtoHeader)
	origHTTP11   = []string{"HTTP/1.1"} // shared: nobody writes a header's values in place
)

// newH1Relay is the relay of the client's request r (its body, if any, in
// body; head and body as they came in raw), routed to t, an HTTP/2
// endpoint; nil when the goroutine path must serve it: a gRPC request
// (HTTP/2's alone).
func (c *client) newH1Relay(r *http.Request, body, raw []byte, t Target) *relay {
	if httpproxy.IsGRPC(r) {
		return nil
	}
	httpproxy.PrepareOutgoing(r)
	if t.OrigProto {
		r.Header[origProtoKey] = origHTTP11
	}
	d := &c.h1
	x := &relay{c: c, h1: d, down: d, req: *r}
	x.target(t)
	x.resend = httpproxy.Idempotent(r.Method) && len(body) == 0
	x.reqEnded = true
	if len(body) > 0 {
		x.reqBuf = append([]byte(nil), body...)
	}
	x.start = time.Now()
	*d = h1down{c: c, x: x, head: append(d.head[:0], raw...), out: d.out[:0], body: d.body[:0]}
	return x
}

// h1down is an HTTP/1.1 client's side of its relayed request (relayDown):
// the response written as HTTP/1.1, kept until the pass's Flush.
type h1down struct {
	c        *client
	x        *relay // the request relayed; nil between requests, and once handed over
	head     []byte // the request as it came, to hand over
	out      []byte // written at Flush
	status   int    // the final head, while held
	header   http.Header
	held     bool   // the final head waits for Flush (its framing not settled)
	body     []byte // the body that came with a held head
	framing  int    // byLength, byChunks or noBody, once the head is out
	ended    bool   // the response is over (its END_STREAM, or the loop's 502)
	trailers http.Header
	reset    bool // broken after its head: the connection ends
}

// WriteHeader takes a 1xx as it is, and holds the final head until the
// pass ends (or the body's bytes wait for it).
func (d *h1down) WriteHeader(status int, h http.Header, end bool) {
	if status < 200 {
		d.out = d.c.appendHead(d.out, status, h)
		return
	}
	d.status, d.header, d.held = status, h, true
	d.ended = d.ended || end
}

// Write takes p while the client's connection has room for it.
func (d *h1down) Write(p []byte, end bool) int {
	if d.c.closed {
		return len(p)
	}
	if !d.c.room() {
		return 0
	}
	if d.held {
		d.body = append(d.body, p...)
	} else {
		d.appendBody(p)
	}
	d.ended = d.ended || end
	return len(p)
}

// WriteTrailers ends the response: its trailers end a chunked body (a
// body of known length has no room for them: dropped, as net/http's
// server drops them).
func (d *h1down) WriteTrailers(h http.Header) {
	d.ended, d.trailers = true, h
	if !d.held {
		d.appendEnd()
	}
}

// Reset: the response broke after its head: what was written goes out,
// then the connection ends (a client reads a body cut short).
func (d *h1down) Reset(http2.ErrCode) { d.reset = true }

func (d *h1down) Consumed(int) {} // the body was read whole before
func (d *h1down) Continue()    {} // Expect is the goroutine path's

// Flush ends a pass: the head held settles its framing, what was written
// leaves in one write, and a response over serves the connection's next
// request.
func (d *h1down) Flush() {
	c := d.c
	if d.x == nil || c.closed {
		return
	}
	if d.held {
		d.writeHead()
	}
	if len(d.out) > 0 {
		c.write(d.out, nil)
		d.out = d.out[:0]
	}
	switch {
	case d.reset:
		d.x = nil
		c.closeWritten()
	case d.ended && d.x.over:
		d.x = nil
		if c.s.draining.Load() {
			c.closeWritten()
			return
		}
		c.next()
	}
}

// writeHead writes the final head: the length the endpoint declared, the
// body's own when the response ended with it here (as net/http's server
// gives a handler's response that ends before its first flush), or
// chunked; none of the body's fields where there is no body.
func (d *h1down) writeHead() {
	d.held = false
	h := d.header
	switch code := d.status; {
	case code == http.StatusNoContent || code == http.StatusNotModified:
		d.framing = noBody
	case h["Content-Length"] != nil:
		d.framing = byLength
	case d.ended && len(d.trailers) == 0 && h["Trailer"] == nil:
		d.framing = byLength
		h["Content-Length"] = []string{strconv.Itoa(len(d.body))}
	default:
		d.framing = byChunks
		h["Transfer-Encoding"] = chunkedTE
	}
	d.out = d.c.appendHead(d.out, d.status, h)
	d.appendBody(d.body)
	d.body = d.body[:0]
	if d.ended {
		d.appendEnd()
	}
}

// appendBody frames p by the head's framing.
func (d *h1down) appendBody(p []byte) {
	if len(p) == 0 {
		return
	}
	switch d.framing {
	case byLength:
		d.out = append(d.out, p...)
	case byChunks:
		d.out = strconv.AppendInt(d.out, int64(len(p)), 16)
		d.out = append(d.out, "\r\n"...)
		d.out = append(d.out, p...)
		d.out = append(d.out, "\r\n"...)
	}
}

// appendEnd ends a chunked body: the last chunk, and the trailers.
func (d *h1down) appendEnd() {
	if d.framing != byChunks {
		return
	}
	d.out = append(d.out, "0\r\n"...)
	d.out, d.c.keys = appendHeader(d.out, d.trailers, d.c.keys)
	d.out = append(d.out, "\r\n"...)
}

// handOver gives the connection to the goroutine path with the request in
// front, as tryAgain does an HTTP/1.1 exchange's: nothing of the response
// was written.
func (d *h1down) handOver() {
	c := d.c
	d.x = nil
	c.handoffHead = append(c.handoffHead[:0], d.head...)
	c.handoff()
}
