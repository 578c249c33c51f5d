package h1loop

// HTTP/2 on the loops: a plaintext connection whose first bytes are
// HTTP/2's preface (h2c with prior knowledge), or a TLS one whose ALPN
// settled h2, is served by proxy/httpproxy/h2loop over the client's
// stream, on the same loop, with the same accounting: its bytes counted in
// its metrics.Conn, its end told to Closed. Each request the loop can
// carry (h2carry), and the Router sends to an endpoint, goes there on the
// loop's HTTP/1.1 pools as an HTTP/1.1 client's would, its response passed
// back as frames (h2stream); any other is served by Server.HTTP2's own
// Handler (the caller's Bridge: its http.Handler on a goroutine), as is a
// request whose endpoint failed before a response byte and that the
// goroutine path would send again.

import (
	"bytes"
	"crypto/tls"
	"io"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http2"

	"github.com/meridian-mesh/meridian/proxy/h2server"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/h2loop"
	"github.com/meridian-mesh/meridian/proxy/internal/evloop"
	"github.com/meridian-mesh/meridian/proxy/metrics"
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

// loopH2 is the Server's HTTP/2 server on the loops: HTTP2's settings,
// its streams routed by h2router first.
func (s *Server) loopH2() *h2loop.Server {
	s.h2once.Do(func() {
		s.h2 = &h2loop.Server{Config: s.HTTP2.Config, Handler: h2router{s}, Logf: s.HTTP2.Logf}
	})
	return s.h2
}

// serveH2 hands c to the Server's HTTP/2 server for good.
func (c *client) serveH2() {
	c.timer.Stop()
	c.headWait = false
	var st *tls.ConnectionState
	if c.tls != nil {
		st = &c.tls.state
	}
	c.h2 = c.s.loopH2().ServeTransport(c.lp.l, h2transport{&c.stream, c}, c.remote, st, c)
}

// ConnValue is the value st's connection was served with (ServeConn's,
// ServeTLS's; nil for Listen's), for Server.HTTP2's Handler: the stream's
// own ConnValue is the loop's.
func ConnValue(st *h2loop.Stream) any {
	if c, ok := st.ConnValue().(*client); ok {
		return c.value
	}
	return nil
}

// h2transport is a loop connection's stream (a client's, or an
// endpoint's: h2up_linux.go) as h2loop's Transport; its Close is its
// owner's.
type h2transport struct {
	s     *stream
	owner interface{ closeH2() }
}

var _ h2loop.Transport = h2transport{}

func (t h2transport) Buffered() []byte {
	t.s.pull()
	return t.s.buffered()
}

func (t h2transport) Consume(n int)        { t.s.consume(n) }
func (t h2transport) Write(b []byte) error { return t.s.write(b, nil) }
func (t h2transport) Pending() int         { return t.s.c.Pending() }
func (t h2transport) EOF() bool            { return t.s.readEOF() }
func (t h2transport) Err() error           { return t.s.readErr() }

// CloseWrite ends the proxy's side: close_notify first over TLS, as
// crypto/tls's CloseWrite sends it.
func (t h2transport) CloseWrite() error {
	if ts := t.s.ts; ts != nil {
		ts.tc.CloseWrite()
		ts.flush()
	}
	return t.s.c.CloseWrite()
}

func (t h2transport) Close() error {
	t.owner.closeH2()
	return nil
}

// closeH2 is the end h2loop gives a client's HTTP/2 connection: closed by
// its own end, it is not told again.
func (c *client) closeH2() {
	c.h2 = nil
	c.close()
}

// h2router takes the streams the loop carries, and gives the others to
// HTTP2's Handler.
type h2router struct{ s *Server }

// h2carry says whether the loop may carry st's request, by its head: not
// HEAD, CONNECT or the server-wide "*". One with a body goes only to an
// HTTP/2 endpoint (relay); the HTTP/1.1 pools take none.
func h2carry(st *h2loop.Stream) bool {
	r := &st.Request
	return r.Method != http.MethodHead && r.Method != http.MethodConnect && r.RequestURI != "*"
}

func (hr h2router) ServeStream(st *h2loop.Stream) h2loop.Receiver {
	s := hr.s
	fallback := s.HTTP2.Handler
	c, _ := st.ConnValue().(*client)
	if c == nil || !h2carry(st) || (s.MaxInFlight > 0 && s.inFlight().Load() >= s.MaxInFlight) {
		return fallback.ServeStream(st)
	}
	h := &h2stream{c: c, st: st}
	// The Router may rewrite the request (X-Forwarded-For, the query):
	// a copy, so that the stream's own goes to the fallback as it came.
	h.req = st.Request
	r := &h.req
	r.Header = st.Request.Header.Clone()
	u := *st.Request.URL
	r.URL = &u
	t := s.Router.Route(r, c.value) // r's protocol is the client's: HTTP/2
	if t.Endpoint == nil || (t.MTLS && t.Labels.ServerID == "") {
		return fallback.ServeStream(st) // awaited, declined, or no identity to require
	}
	if t.H2 {
		httpproxy.PrepareOutgoing(r)
		x := newRelay(c, st, r, t)
		if !x.send() {
			return fallback.ServeStream(st) // the endpoint refused a dial a moment ago, or h2msg refuses the request
		}
		return x
	}
	if !st.RequestEnded() {
		// A body: read whole, if it ends within maxBodyWait, before the
		// request goes on the HTTP/1.1 pools, as an HTTP/1.1 client's is
		// (Data, End); one that waits for 100 Continue is the goroutine
		// path's, as HTTP/1.1's.
		if st.ExpectsContinue() {
			return fallback.ServeStream(st)
		}
		h.t, h.bodyWait = t, true
		h.wait = c.lp.l.After(maxBodyWait, h.bodyTimedOut)
		return h
	}
	h.carry(t)
	if h.fallback != nil {
		return h.fallback // its endpoint failed at once, or the request does not write: the goroutine path's
	}
	return h
}

// maxCarriedBody bounds an HTTP/2 request's body that the loop reads
// whole to send on its HTTP/1.1 pools: an HTTP/1.1 client's is bounded
// by the loop's buffer.
const maxCarriedBody = evloop.BufferSize

// maxBodyWait bounds the wait for such a body's end: a client's DATA
// follows its HEADERS within a round trip, or comes with them. The body
// of a client that waits for an answer before it sends the rest (its
// endpoint may answer early) goes to the handler then, with what came of
// it: its answer is that much later.
const maxBodyWait = 5 * time.Millisecond

// bodyTimedOut hands over a stream whose body did not end within
// maxBodyWait.
func (h *h2stream) bodyTimedOut() {
	h.wait = nil
	if h.bodyWait {
		h.bodyWait = false
		h.handOver()
		h.st.Flush() // a timer's callback: nothing else flushes
	}
}

// bodyDone ends the wait for the body.
func (h *h2stream) bodyDone() {
	h.bodyWait = false
	if h.wait != nil {
		h.wait.Stop()
		h.wait = nil
	}
}

// carry sends the request, routed to t, on the loop's HTTP/1.1 pools
// with the body read (h.body); a request the writer refuses is handed
// over.
func (h *h2stream) carry(t Target) {
	c, r := h.c, &h.req
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.1", 1, 1
	r.ContentLength = int64(len(h.body))
	x := &exchange{d: h, ep: t.Endpoint, labels: t.Labels, mtls: t.MTLS, connTLS: t.ConnTLS}
	if x.connTLS == "" {
		x.connTLS = x.labels.TLS
	}
	httpproxy.PrepareOutgoing(r)
	// Sent again after a failure before a response only as the
	// goroutine path would: idempotent, without a body.
	x.resend = httpproxy.Idempotent(r.Method) && len(h.body) == 0
	var ok bool
	if x.out, ok = c.lp.rw.AppendRequest(nil, r, h.body); !ok {
		h.handOver()
		return
	}
	h.x = x
	x.send()
	if h.fallback == nil {
		// The body is in the request written: the stream's window has
		// it back. A Handler given it after this (a connect that fails
		// later) gives back nothing more: Consumed is bounded by what was
		// received and not consumed.
		h.st.Consumed(len(h.body))
	}
}

// bodyLimit is how much of a body the loop reads before it hands the
// stream over: maxCarriedBody, within the stream's receive window.
func (h *h2stream) bodyLimit() int {
	if w := h.c.s.HTTP2.Config.MaxReceiveBufferPerStream; w > 0 && w < maxCarriedBody {
		return w
	}
	return maxCarriedBody
}

// handOver gives the stream to Server.HTTP2's Handler, with the body read
// so far.
func (h *h2stream) handOver() {
	h.fallback = serveWithBody(h.c.s.HTTP2.Handler, h.st, h.body)
}

// serveWithBody hands st to handler with body, what another Handler took
// of it first: h2loop's Bridge takes it (ServeStreamBody); any other gets
// it replayed.
func serveWithBody(handler h2loop.Handler, st *h2loop.Stream, body []byte) h2loop.Receiver {
	if b, ok := handler.(interface {
		ServeStreamBody(*h2loop.Stream, []byte) h2loop.Receiver
	}); ok {
		return b.ServeStreamBody(st, body)
	}
	r := handler.ServeStream(st)
	if len(body) > 0 {
		r.Data(st, body)
	}
	return r
}

// h2stream is a stream the loop carries: its request on the loop's pools,
// its response passed back as frames. Once handed to the fallback, it
// passes the stream's events on to it.
type h2stream struct {
	c        *client
	st       *h2loop.Stream
	req      http.Request
	x        *exchange // in flight, nil once over
	fallback h2loop.Receiver
	blocked  bool   // a Write the windows cut short: Writable resumes
	trailer  []byte // a chunked response's trailer section, as it comes
	bodyWait bool   // the request's body is read before it goes (carry)
	body     []byte
	t        Target        // where it goes then
	wait     *evloop.Timer // bounds bodyWait
}

func (h *h2stream) loop() *Loop            { return h.c.lp }
func (h *h2stream) server() *Server        { return h.c.s }
func (h *h2stream) request() *http.Request { return &h.req }
func (h *h2stream) room() bool             { return !h.blocked && h.st.Open() }
func (h *h2stream) flush()                 { h.st.Flush() }

func (h *h2stream) waits(x *exchange) bool { return h.x == x && h.st.Open() && x.up == nil }

// Data: a carried request's body is read whole before it goes; one
// larger than bodyLimit goes to the fallback, with what came of it.
func (h *h2stream) Data(st *h2loop.Stream, p []byte) {
	if h.fallback != nil {
		h.fallback.Data(st, p)
		return
	}
	if !h.bodyWait {
		st.Consumed(len(p))
		return
	}
	h.body = append(h.body, p...)
	if len(h.body) > h.bodyLimit() {
		h.bodyDone()
		h.handOver()
	}
}

// End: the client reset the stream, or the connection ended: the
// exchange is canceled, as the goroutine path counts a client gone.
func (h *h2stream) End(st *h2loop.Stream, err error) {
	if h.fallback != nil {
		h.fallback.End(st, err)
		return
	}
	if err == nil {
		if h.bodyWait {
			// The body's end: the request goes, but one with trailers,
			// which the HTTP/1.1 pools do not carry.
			h.bodyDone()
			if len(st.Trailer) > 0 {
				h.handOver()
				return
			}
			h.carry(h.t)
		}
		return
	}
	if h.bodyWait {
		// Gone before its body's end: counted as the goroutine path
		// counts a client gone before a response.
		h.bodyDone()
		h.c.s.Metrics.ClientError(h.t.Labels.Direction, h.t.Labels.Authority, "canceled")
	}
	if x := h.x; x != nil {
		h.x = nil
		s := h.c.s
		x.ep.EndRequest(x.begin, false)
		x.count()
		s.Metrics.ClientError(x.labels.Direction, x.labels.Authority, "canceled")
		s.inFlight().Add(-1)
		if x.up != nil {
			x.up.x = nil
			x.up.close()
		}
	}
	st.Done()
}

// Writable resumes the response the windows held.
func (h *h2stream) Writable(st *h2loop.Stream) {
	if h.fallback != nil {
		h.fallback.Writable(st)
		return
	}
	h.blocked = false
	if x := h.x; x != nil && x.sent && x.up != nil {
		x.up.readable() // the stream's callback: flushed at its end
	}
}

// writeHead passes the response's head on as HEADERS, as h2server writes
// the goroutine path's: no Content-Length where there is no body (1xx,
// 204, 304), Date added, and the body's first bytes after it.
func (h *h2stream) writeHead(x *exchange, rest []byte) (take int) {
	resp := &x.resp
	code := resp.StatusCode
	if code < 200 || code == http.StatusNoContent || code == http.StatusNotModified {
		delete(resp.Header, "Content-Length")
	}
	delete(resp.Header, "Transfer-Encoding") // HTTP/2's frames carry the body
	if code < 200 {
		h.st.WriteHeader(code, resp.Header, false)
		return 0
	}
	if _, ok := resp.Header["Date"]; !ok {
		resp.Header["Date"] = []string{h2server.Date()}
	}
	end := x.framing == noBody || (x.framing == byLength && x.remaining == 0)
	h.st.WriteHeader(code, resp.Header, end)
	if end {
		x.done = true
		return 0
	}
	return h.passBody(x, rest, false)
}

// passBody passes what of buf belongs to the body on as DATA (a chunked
// body's data, its framing taken off; its trailers as HEADERS), as much
// as the windows take.
func (h *h2stream) passBody(x *exchange, buf []byte, eof bool) int {
	st := h.st
	switch x.framing {
	case byLength:
		k := int(min(int64(len(buf)), x.remaining))
		n := st.Write(buf[:k], int64(k) == x.remaining)
		x.remaining -= int64(n)
		x.done = x.remaining == 0
		h.blocked = n < k
		return n
	case byChunks:
		return h.dechunk(x, buf)
	case byClose:
		n := st.Write(buf, false)
		if h.blocked = n < len(buf); h.blocked {
			return n
		}
		if eof {
			st.Write(nil, true)
			x.done = true
			x.resp.Close = true // the upstream closed: not pooled
		}
		return n
	}
	return 0
}

// dechunk passes a chunked body's data on, its sizes, extensions and
// line ends taken off by the chunkScanner, and its trailers, once the
// last chunk's are in, as HEADERS ending the stream.
func (h *h2stream) dechunk(x *exchange, buf []byte) int {
	st, sc := h.st, &x.chunks
	i := 0
	for i < len(buf) && !x.done {
		if sc.state == chunkData {
			k := int(min(sc.left, int64(len(buf)-i)))
			n := st.Write(buf[i:i+k], false)
			i += n
			if sc.left -= int64(n); sc.left == 0 {
				sc.state = chunkDataEnd
			}
			if n < k {
				h.blocked = true
				return i
			}
			continue
		}
		// The framing, a byte at a time: a few per chunk.
		trailer := sc.state == chunkTrailer
		n, done, err := sc.scan(buf[i : i+1])
		if err != nil {
			x.broken = true
			return i
		}
		if trailer {
			h.trailer = append(h.trailer, buf[i:i+n]...)
		}
		i += n
		if done {
			x.done = true
			st.WriteTrailers(parseTrailer(h.trailer))
		}
	}
	return i
}

// parseTrailer reads a chunked body's trailer section (field lines, then
// an empty line): nil for none or for lines that do not parse, which are
// dropped as net/http's reader would fail them.
func parseTrailer(b []byte) http.Header {
	var h http.Header
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimRight(line, "\r")
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok || k == "" || strings.ContainsAny(k, " \t") {
			continue
		}
		if h == nil {
			h = http.Header{}
		}
		key := textproto.CanonicalMIMEHeaderKey(k)
		h[key] = append(h[key], strings.TrimSpace(v))
	}
	return h
}

// finish ends a response passed whole, as client.finish does; the stream
// ended with its last frame.
func (h *h2stream) finish(x *exchange) {
	h.done(x, x.resp.StatusCode >= 500, metrics.Response{Status: x.resp.StatusCode, Latency: time.Since(x.start)})
	x.ep.Succeed()
	up := x.up
	up.x = nil
	if x.resp.Close || len(up.buffered()) > 0 || len(up.c.Buffered()) > 0 {
		up.close()
	} else {
		h.c.lp.pool(up.key).put(up)
	}
}

// done counts x's end and lets it go.
func (h *h2stream) done(x *exchange, failed bool, resp metrics.Response) {
	x.ep.EndRequest(x.begin, failed)
	s := h.c.s
	if resp.Error == "" {
		x.ep.Result(httpproxy.EndFailure(&x.resp, nil))
	}
	s.Metrics.ResponseDone(x.labels, resp)
	s.inFlight().Add(-1)
	h.x = nil
}

// failed: the endpoint failed before a response byte. A request not sent
// again is answered 502; one that is goes to the fallback, which tries
// again, as client.failed hands its connection over.
func (h *h2stream) failed(x *exchange, dial bool) {
	if !dial && !x.resend {
		h.respond502(x, "meridian proxy: the endpoint's connection ended without a response\n")
		return
	}
	x.ep.EndRequest(x.begin, true)
	if !dial {
		x.ep.Result("reset")
	}
	h.tryAgain(x)
}

func (h *h2stream) peerFailed(x *exchange) {
	x.ep.EndRequest(x.begin, true)
	x.ep.Result(httpproxy.EndFailure(&x.resp, nil))
	h.tryAgain(x)
}

// tryAgain ends x uncounted and serves the stream with the fallback.
func (h *h2stream) tryAgain(x *exchange) {
	h.c.s.inFlight().Add(-1)
	if x.up != nil {
		x.up.x = nil
		x.up.close()
	}
	h.x = nil
	h.handOver()
}

// respond502 answers as client.respond502 does, in frames.
func (h *h2stream) respond502(x *exchange, text string) {
	x.ep.EndRequest(x.begin, true)
	x.ep.Result("reset")
	x.count()
	s := h.c.s
	s.Metrics.ResponseDone(x.labels, metrics.Response{Error: "upstream", Latency: time.Since(x.start)})
	s.inFlight().Add(-1)
	x.up.x = nil
	x.up.close()
	h.x = nil
	write502(h.st, text)
}

// write502 is the loop's 502 in frames, as the goroutine path's
// WriteError answers a request that got no response.
func write502(st relayDown, text string) {
	st.WriteHeader(http.StatusBadGateway, http.Header{
		"Content-Length":         {strconv.Itoa(len(text))},
		"Content-Type":           {"text/plain; charset=utf-8"},
		"Date":                   {h2server.Date()},
		httpproxy.ErrorHeader:    {"upstream"},
		"X-Content-Type-Options": {"nosniff"},
	}, false)
	st.Write([]byte(text), true)
}

// cut ends a response that broke after its head: counted as client.cut
// counts it, the stream reset (INTERNAL_ERROR, as h2server resets a
// handler's aborted response); the connection serves on.
func (h *h2stream) cut(x *exchange) {
	x.ep.EndRequest(x.begin, true)
	x.ep.Result(httpproxy.EndFailure(&x.resp, io.ErrUnexpectedEOF))
	s := h.c.s
	s.Metrics.ResponseDone(x.labels, metrics.Response{Status: x.resp.StatusCode, Error: "stream", Latency: time.Since(x.start)})
	s.inFlight().Add(-1)
	x.up.x = nil
	x.up.close()
	h.x = nil
	h.st.Reset(http2.ErrCodeInternal)
}
