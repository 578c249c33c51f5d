package h1loop

// Streams relayed to HTTP/2 endpoints. A stream whose Target says H2 (its
// endpoint is spoken to in HTTP/2: a gRPC or h2c backend, a peer proxy
// that takes HTTP/2) goes, body and all, on the loop's HTTP/2 connections
// to that endpoint (h2up_linux.go), as a stream of its own there
// (h2loop.ClientConn): the request's DATA passed on as the endpoint's
// windows take it and given back to the client's window only then, the
// response's head, DATA and trailers the other way likewise, so that a
// slow reader on either side holds the other's windows, not the proxy's
// memory. What the goroutine path would tell (request_total, the
// response's status, gRPC status and latency, the balancer's begin and
// end, failure accrual) is told as it tells it; a stream the endpoint
// did not process, or one the goroutine path would send again, is handed
// to Server.HTTP2's Handler while none of its body went out, and answered
// 502 (a gRPC request: UNAVAILABLE) otherwise.

import (
	"errors"
	"io"
	"net/http"
	"slices"
	"time"

	"golang.org/x/net/http2"

	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/h2server"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/h2loop"
	"github.com/meridian-mesh/meridian/proxy/metrics"
)

// relayDown is where a relay's response goes, and what it tells the
// client's side of the request's body: an HTTP/2 client's stream
// (*h2loop.Stream), or an HTTP/1.1 client's connection (h1down,
// h1relay_linux.go). Flush ends a pass: what was written leaves.
type relayDown interface {
	WriteHeader(status int, h http.Header, end bool)
	Write(p []byte, end bool) int
	WriteTrailers(h http.Header)
	Reset(code http2.ErrCode)
	Consumed(n int)
	Continue()
	Flush()
}

// relay is one stream relayed to an HTTP/2 endpoint: the client's
// stream's Receiver and the endpoint's stream's ResponseReceiver.
type relay struct {
	c        *client
	st       *h2loop.Stream // an HTTP/2 client's; nil for an HTTP/1.1 client's request (h1)
	h1       *h1down
	down     relayDown    // st, or h1
	req      http.Request // as sent: the Router's copy
	ep       *balance.Endpoint[*httpproxy.Upstream]
	labels   metrics.Request
	key      poolKey
	connTLS  string
	start    time.Time // the metrics' latency
	begin    time.Time // the balancer's
	u        *h2up     // nil until a connection took it
	waiting  bool      // for the connection being dialed
	cs       *h2loop.ClientStream
	fallback h2loop.Receiver // the stream handed over: its events go there

	// The request: DATA the endpoint has not taken yet (not given back to
	// the client's window), and its end.
	reqBuf    []byte
	reqEnded  bool // the client's END_STREAM came
	reqOut    bool // ... and went to the endpoint
	bodyTaken bool // the endpoint took some: no hand-over any more
	resend    bool // may be tried again after a failure before a response

	// The response.
	resp        http.Response // its head (Header), its trailers at the end
	headPending bool          // the head came in this read: written at its end
	headOut     bool          // the final head went out
	respBuf     []byte        // DATA the client's windows did not take yet
	respEnded   bool          // the endpoint's END_STREAM came
	latency     time.Duration // to the head, as the Forwarder measures it
	grpc        bool          // a gRPC request: answered in gRPC's terms

	counted bool // request_total has it
	ended   bool // the balancer's EndRequest told
	over    bool // counted and let go: the rest of the stream is dropped
}

func (r *relay) server() *Server { return r.c.s }

// newRelay relays st's request, r routed to t, on the loop's HTTP/2
// connections to t's endpoint.
func newRelay(c *client, st *h2loop.Stream, req *http.Request, t Target) *relay {
	x := &relay{c: c, st: st, down: st, req: *req}
	x.target(t)
	x.grpc = httpproxy.IsGRPC(req)
	x.resend = httpproxy.Idempotent(req.Method) && st.RequestEnded() && len(st.Trailer) == 0
	x.reqEnded = st.RequestEnded()
	x.start = time.Now()
	return x
}

// target takes what x needs of t.
func (x *relay) target(t Target) {
	x.ep, x.labels, x.connTLS = t.Endpoint, t.Labels, t.ConnTLS
	x.req.URL.Scheme = "http" // as the Forwarder's rewrite: req's URL is the Router's copy (or the loop's own)
	if x.connTLS == "" {
		x.connTLS = x.labels.TLS
	}
	x.key = poolKey{direction: x.labels.Direction, addr: x.ep.Addr()}
	if t.MTLS {
		x.key.serverID = x.labels.ServerID
	}
}

// trailer is the request's trailers (an HTTP/1.1 request on the loop has
// none: its body is by Content-Length).
func (x *relay) trailer() http.Header {
	if x.st == nil {
		return nil
	}
	return x.st.Trailer
}

// send opens the request's stream on a connection to the endpoint that
// takes one now, or waits for the one dialed for it; false (nothing told,
// nothing written) when the goroutine path should serve it: a dial to the
// endpoint failed a moment ago, or the request is one h2msg refuses (that
// path answers it as it always does).
func (x *relay) send() bool {
	lp := x.c.lp
	p := lp.h2pool(x.key)
	if u := p.ready(); u != nil {
		if !x.open(u) {
			return false
		}
		x.flushUp()
		return true
	}
	if !p.dialing && time.Since(p.dialFailed) < p.redial {
		return false
	}
	// Waiting before the dial starts: one refused at once hands x over.
	p.waiting = append(p.waiting, x)
	x.waiting = true
	p.dial(lp, x)
	return true
}

// open opens the request's stream on u, and starts the exchange; false
// (nothing told, nothing written) when u does not take it.
func (x *relay) open(u *h2up) bool {
	end := x.reqEnded && len(x.trailer()) == 0 && len(x.reqBuf) == 0
	cs, err := u.cc.Open(&x.req, end, (*relayUp)(x))
	if err != nil {
		return false
	}
	s := x.server()
	x.waiting = false
	x.u, x.cs, x.reqOut = u, cs, end
	x.begin = x.ep.BeginRequest()
	s.inFlight().Add(1)
	u.opened()
	x.down.Continue() // the body is taken as it comes (Expect: 100-continue)
	x.pump()          // what came while it waited for the connection
	return true
}

// dialed is the end of the dial x waited for: u, or nil if it failed
// (the stream goes to the goroutine path, which tries another endpoint).
func (x *relay) dialed(u *h2up) {
	if !x.waiting {
		return // the client went away meanwhile
	}
	if u == nil || !x.open(u) {
		x.waiting = false
		x.handOver()
	}
	x.down.Flush()
}

// pump passes on the request's DATA the endpoint's windows take, then
// its end.
func (x *relay) pump() {
	cs := x.cs
	if cs == nil || x.over {
		return
	}
	if len(x.reqBuf) > 0 {
		n := cs.Write(x.reqBuf, false)
		if n > 0 {
			x.bodyTaken = true
			x.down.Consumed(n)
			x.reqBuf = x.reqBuf[:copy(x.reqBuf, x.reqBuf[n:])]
		}
		if len(x.reqBuf) > 0 {
			return // Writable resumes it
		}
	}
	if x.reqEnded && !x.reqOut {
		x.reqOut = true
		cs.WriteTrailers(x.trailer())
	}
}

// The client's stream (h2loop.Receiver).

// Data is the request's DATA: passed on as the endpoint's windows take
// it, the rest kept (it holds the client's window until taken).
func (x *relay) Data(st *h2loop.Stream, p []byte) {
	if x.fallback != nil {
		x.fallback.Data(st, p)
		return
	}
	if x.over {
		st.Consumed(len(p)) // the response is over: nobody takes it
		return
	}
	if x.cs != nil && len(x.reqBuf) == 0 {
		n := x.cs.Write(p, false)
		if n > 0 {
			x.bodyTaken = true
			st.Consumed(n)
			p = p[n:]
		}
	}
	x.reqBuf = append(x.reqBuf, p...) // the endpoint's Writable passes it on
	x.flushUp()
}

// End is the client's END_STREAM, or its reset (or its connection's end):
// the exchange is canceled, as the goroutine path counts a client gone.
func (x *relay) End(st *h2loop.Stream, err error) {
	if x.fallback != nil {
		x.fallback.End(st, err)
		return
	}
	if err == nil {
		x.reqEnded = true
		x.pump()
		x.flushUp()
		return
	}
	x.cancel()
	st.Done()
}

// cancel ends the exchange of a client gone, counted as the goroutine path
// counts one: the endpoint's stream reset (CANCEL).
func (x *relay) cancel() {
	if x.waiting {
		// Gone while its connection was dialed: counted as the goroutine
		// path counts a client gone before a response.
		x.waiting, x.over = false, true
		x.server().Metrics.ClientError(x.labels.Direction, x.labels.Authority, "canceled")
		return
	}
	if x.over {
		return
	}
	s := x.server()
	x.endRequest(false)
	x.count()
	s.Metrics.ClientError(x.labels.Direction, x.labels.Authority, "canceled")
	x.letGo()
	if x.cs != nil {
		x.cs.Reset(http2.ErrCodeCancel)
		x.flushUp()
	}
}

// Writable: the client's windows grew: the response's DATA kept goes on.
func (x *relay) Writable(st *h2loop.Stream) {
	if x.fallback != nil {
		x.fallback.Writable(st)
		return
	}
	x.passResponse()
	x.flushUp()
}

// The endpoint's stream (h2loop.ResponseReceiver): a relay's other face.
type relayUp relay

var _ h2loop.ResponseReceiver = (*relayUp)(nil)

// Informational passes a 1xx on (but 100 Continue: the client had its own).
func (rx *relayUp) Informational(cs *h2loop.ClientStream, status int, h http.Header) {
	x := (*relay)(rx)
	if status == http.StatusContinue || x.over {
		return
	}
	x.count()
	httpproxy.RemoveHopByHop(h)
	x.down.WriteHeader(status, h, false)
	x.u.touch(x)
}

// Response is the final head: counted and passed on once the read that
// brought it is over (with END_STREAM, when the stream ended in it: a gRPC
// trailers-only response keeps its status where the client reads it).
func (rx *relayUp) Response(cs *h2loop.ClientStream, status int, h http.Header) {
	x := (*relay)(rx)
	if x.over {
		return
	}
	x.resp = http.Response{StatusCode: status, Header: h, ProtoMajor: 2, Trailer: cs.Trailer, ContentLength: cs.ContentLength()}
	if x.resend && httpproxy.PeerFailed(&x.resp) {
		// A meshed endpoint's proxy could not reach its application: the
		// goroutine path's retries take it from here, as h1loop's
		// HTTP/1.1 exchanges do.
		cs.Reset(http2.ErrCodeCancel)
		x.tryAgain(httpproxy.EndFailure(&x.resp, nil))
		return
	}
	x.latency = time.Since(x.start)
	x.count()
	x.endRequest(status >= 500)
	x.ep.Succeed()
	httpproxy.RemoveHopByHop(h)
	announceTrailers(&x.resp)
	if _, ok := h["Date"]; !ok {
		h["Date"] = []string{h2server.Date()}
	}
	x.headPending = true
	x.u.touch(x)
}

// writeHead sends the final head, with END_STREAM when the response is
// over already with no body and no trailers.
func (x *relay) writeHead(end bool) {
	x.headPending = false
	x.headOut = true
	x.c.lp.served.Add(1) // before the client can see the response
	x.down.WriteHeader(x.resp.StatusCode, x.resp.Header, end)
}

// Data is the response's DATA: passed on as the client's windows take it.
func (rx *relayUp) Data(cs *h2loop.ClientStream, p []byte) {
	x := (*relay)(rx)
	if x.over {
		x.cs.Consumed(len(p))
		return
	}
	if x.headPending {
		x.writeHead(false)
	}
	if len(x.respBuf) == 0 {
		n := x.down.Write(p, false)
		if n > 0 {
			cs.Consumed(n)
			p = p[n:]
		}
	}
	x.respBuf = append(x.respBuf, p...) // Writable passes it on
	x.u.touch(x)
}

// passResponse writes the response's DATA kept, as much as the client's
// windows take, then its end.
func (x *relay) passResponse() {
	if x.over || !x.headOut {
		return
	}
	if len(x.respBuf) > 0 {
		n := x.down.Write(x.respBuf, false)
		if n > 0 {
			x.cs.Consumed(n)
			x.respBuf = x.respBuf[:copy(x.respBuf, x.respBuf[n:])]
		}
		if len(x.respBuf) > 0 {
			return // Writable resumes it
		}
	}
	if x.respEnded {
		x.down.WriteTrailers(x.resp.Trailer)
		x.finish(nil)
	}
}

// End is the response's end (its trailers), or the stream's failure.
func (rx *relayUp) End(cs *h2loop.ClientStream, trailers http.Header, err error) {
	x := (*relay)(rx)
	if x.over {
		return
	}
	x.u.touch(x)
	if err == nil {
		x.respEnded = true
		x.resp.Trailer = trailers
		if x.headPending && len(x.respBuf) == 0 && len(trailers) == 0 {
			x.writeHead(true) // no body: the head ends it (trailers-only, for gRPC)
			x.finish(nil)
			return
		}
		if x.headPending {
			x.writeHead(false)
		}
		x.passResponse()
		return
	}
	if x.headPending || x.headOut {
		x.cut()
		return
	}
	// No response: the request goes to the goroutine path when the
	// endpoint did not process it, or when it may be sent again, and none
	// of its body went out; otherwise it is answered 502.
	if x.resend || errors.Is(err, h2loop.ErrRefused) {
		x.tryAgain("reset") // as the Forwarder reports an attempt it makes again
		return
	}
	x.respondError()
}

// Writable: the endpoint's windows grew: the request's DATA kept goes on.
func (rx *relayUp) Writable(cs *h2loop.ClientStream) {
	x := (*relay)(rx)
	x.pump()
	x.u.touch(x) // the client's window updates
}

// The ends.

// count counts the request (request_total) once.
func (x *relay) count() {
	if !x.counted {
		x.counted = true
		x.server().Metrics.RequestStarted(x.labels)
	}
}

// endRequest tells the balancer the request's end once.
func (x *relay) endRequest(failed bool) {
	if !x.ended {
		x.ended = true
		x.ep.EndRequest(x.begin, failed)
	}
}

// letGo ends the exchange's accounting: what comes after is dropped.
func (x *relay) letGo() {
	x.over = true
	x.server().inFlight().Add(-1)
	// What was kept goes back to the connections' windows.
	x.down.Consumed(len(x.reqBuf))
	x.cs.Consumed(len(x.respBuf))
	x.reqBuf, x.respBuf = nil, nil
	if x.u != nil {
		x.u.closed1()
	}
}

// finish counts a response passed whole (err nil), as observedBody does.
func (x *relay) finish(err error) {
	o := metrics.Response{Status: x.resp.StatusCode, Latency: x.latency, GRPCStatus: httpproxy.GRPCStatus(&x.resp)}
	if err != nil {
		o.Error = "stream"
	}
	x.ep.Result(httpproxy.EndFailure(&x.resp, err))
	x.server().Metrics.ResponseDone(x.labels, o)
	x.letGo()
}

// cut ends a response that broke after its head: counted as the goroutine
// path counts it, the client's stream reset (INTERNAL_ERROR, as h2server
// resets a handler's aborted response); the connection serves on.
func (x *relay) cut() {
	x.finish(io.ErrUnexpectedEOF)
	x.down.Reset(http2.ErrCodeInternal)
}

// tryAgain ends x uncounted (the goroutine path counts the attempts it
// makes), failure accrual told result, and hands the stream over, unless
// some of its body went out: it is answered 502 then.
func (x *relay) tryAgain(result string) {
	if x.bodyTaken {
		x.respondError()
		return
	}
	x.endRequest(true)
	x.ep.Result(result)
	x.server().inFlight().Add(-1)
	x.u.closed1()
	x.handOver()
}

// handOver gives the stream to Server.HTTP2's Handler with what came of
// its body and was not passed on (h2loop's Bridge reads it first, and
// the rest as it comes). A Handler that cannot take a body already
// received gets a stream whose request is not over, what came replayed.
func (x *relay) handOver() {
	x.over = true
	buf := x.reqBuf
	x.reqBuf = nil
	if x.h1 != nil {
		x.h1.handOver()
		return
	}
	x.fallback = serveWithBody(x.server().HTTP2.Handler, x.st, buf)
}

// respondError answers a request that got no response as the goroutine
// path's WriteError does (gRPC clients get a trailers-only UNAVAILABLE),
// and counts it as that path counts one.
func (x *relay) respondError() {
	const reason = "upstream"
	x.endRequest(true)
	x.ep.Result("reset")
	x.count()
	x.server().Metrics.ResponseDone(x.labels, metrics.Response{Error: reason, Latency: time.Since(x.start)})
	x.letGo()
	x.cs.Reset(http2.ErrCodeCancel)
	if x.grpc { // an HTTP/2 client's: an HTTP/1.1 one's goes to the goroutine path
		x.st.WriteHeader(http.StatusOK, http.Header{
			httpproxy.ErrorHeader: {reason},
			"Date":                {h2server.Date()},
			"Content-Type":        {"application/grpc"},
			"Grpc-Status":         {"14"}, // UNAVAILABLE
			"Grpc-Message":        {"meridian proxy: " + reason},
		}, true)
		return
	}
	write502(x.down, "meridian proxy: the endpoint's stream ended without a response\n")
}

// flushUp writes what the client's callback wrote on the endpoint's
// connection (a client's callback is not that connection's own): at the
// end of the client connection's pass when in one, so that a request's
// HEADERS, DATA and end that came in one read leave in one write, and so
// do the streams of one read bound for one endpoint (a write each cost a
// gRPC hop three writes and the next hop as many wake-ups per request).
func (x *relay) flushUp() {
	u := x.u
	if u == nil {
		return
	}
	if c := x.c; c.h2pass {
		if !slices.Contains(c.ups, u) {
			c.ups = append(c.ups, u)
		}
		return
	}
	u.cc.Flush()
}

// flushUps ends a pass of the client's HTTP/2 callbacks: the endpoints'
// connections its relays wrote to are flushed.
func (c *client) flushUps() {
	c.h2pass = false
	for i, u := range c.ups {
		u.cc.Flush()
		c.ups[i] = nil
	}
	c.ups = c.ups[:0]
}
