// Package httpproxy is the end of the proxy's HTTP pipeline: the Forwarder
// sends HTTP/1 requests and HTTP/2 streams (gRPC included) to a balanced set
// of endpoints, one request at a time, and records the golden metrics of
// each. The request policies before it are proxy/middleware's; the state
// they share with it is the request's Exchange.
package httpproxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/meridian-mesh/meridian/internal/names"
	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/internal/h1head"
	"github.com/meridian-mesh/meridian/proxy/metrics"
	"github.com/meridian-mesh/meridian/proxy/outbound/connect"
	"github.com/meridian-mesh/meridian/proxy/profile"
)

// DstOverrideHeader, when a client sets it, names the authority to route to
// instead of Host / :authority (as l5d-dst-override does for Linkerd).
const DstOverrideHeader = names.HeaderDstOverride

// OrigProtoHeader travels between two proxies when the outbound one carries
// an HTTP/1 request over HTTP/2: the inbound proxy removes it and speaks
// HTTP/1 to its application again (Linkerd's l5d-orig-proto).
const OrigProtoHeader = names.HeaderOrigProto

// HopHeader marks the requests an outbound proxy forwards with its instance
// ID, so that it can refuse one that comes back (a loop); the inbound side
// removes it (see proxy/sidecar).
const HopHeader = names.HeaderHop

// ErrorHeader tells the client that the proxy, not the application, produced the response.
const ErrorHeader = names.HeaderProxyError

// Target is where one request goes: a named set of endpoints and, when the
// control plane has one, the authority's profile.
type Target struct {
	Authority string // for metrics and errors
	Balancer  *balance.Balancer[*Upstream]
	// Profile returns the current profile; nil means none.
	Profile func() *profile.Profile
	// TLS, when set, gives the metrics' tls label and the server's SPIFFE
	// ID for a request sent to the endpoint at addr (outbound).
	TLS func(addr string) (tls, serverID string)
}

type peerKey struct{}

// Peer is what the inbound side knows about the client of a connection.
type Peer struct {
	TLS      string // the metrics' tls label (metrics.TLSTrue or a reason)
	ClientID string // the client proxy's SPIFFE ID over mTLS
	// Probe, when set, tells a kubelet probe of the application: a request
	// no profile route matched gets route="probe" in its metrics.
	Probe func(*http.Request) bool
}

// WithPeer records the client of the connection a request came on, for
// its metrics (an http.Server's ConnContext calls it).
func WithPeer(ctx context.Context, p Peer) context.Context {
	return context.WithValue(ctx, peerKey{}, p)
}

// RouteError is a request that cannot be routed; Status is the HTTP answer.
type RouteError struct {
	Status int
	Reason string // short, for the metric and the error header
	// Authority is the canonical authority the request was for, when the
	// router got that far (the metric's label); else Host is made canonical.
	Authority string
	Err       error
}

func (e *RouteError) Error() string { return e.Reason + ": " + e.Err.Error() }
func (e *RouteError) Unwrap() error { return e.Err }

// Options configure a Forwarder. The booleans are what tells one side of a
// sidecar from the other.
type Options struct {
	// Direction is the metrics' direction label: "inbound" or "outbound".
	Direction string
	// AcceptPeerHeaders honours what a peer proxy says about a request it
	// carried over HTTP/2 (OrigProtoHeader, ExpectHeader): the side that
	// receives from peer proxies (inbound). Without it both are removed.
	AcceptPeerHeaders bool
	// LabelTargetTLS takes the tls and server_id labels from the backend
	// (Target.TLS) rather than from the client's connection: the side that
	// originates mTLS (outbound). A request to this pod's own application
	// (tls="loopback") then loses its HopHeader, as no inbound proxy will.
	LabelTargetTLS bool
	Metrics        *metrics.Registry
	Log            *slog.Logger
}

// Forwarder is the http.Handler at the end of a chain: it sends the
// request to an endpoint of its exchange's Backend (connecting to another
// when connecting fails), streams the response back, records its metrics
// and reports its outcome to the balancer. Policies (load shedding, routing,
// authorization, splits, timeouts, retries) are middlewares in front of it
// (proxy/middleware), which fill the request's Exchange.
type Forwarder struct {
	direction   string
	peerHeaders bool
	targetTLS   bool
	metrics     *metrics.Registry
	log         *slog.Logger
	rp          *httputil.ReverseProxy
	// viaReverseProxy sends every request through rp, not forward (tests
	// compare the two).
	viaReverseProxy bool
}

// New returns a forwarder.
func New(o Options) *Forwarder {
	f := &Forwarder{direction: o.Direction, peerHeaders: o.AcceptPeerHeaders, targetTLS: o.LabelTargetTLS, metrics: o.Metrics, log: o.Log}
	f.rp = &httputil.ReverseProxy{
		Rewrite:      func(pr *httputil.ProxyRequest) { rewrite(pr.In, pr.Out) },
		Transport:    roundTripper{f},
		BufferPool:   bufferPool{},
		ErrorHandler: f.proxyError,
		ErrorLog:     slog.NewLogLogger(o.Log.Handler(), slog.LevelDebug),
		// Stream everything: gRPC, server-sent events and slow bodies must
		// not wait in a buffer. (flushGate keeps gRPC trailers-only
		// responses whole.)
		FlushInterval: -1,
	}
	return f
}

// rewrite is the ReverseProxy's Rewrite (and forward's): in is the
// client's request, out the one sent upstream.
func rewrite(in, out *http.Request) {
	// A sidecar is transparent: keep the client's forwarding headers,
	// which Rewrite would otherwise strip (unless the client made them
	// hop-by-hop by naming them in Connection).
	for _, k := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		if v, ok := in.Header[k]; ok && !httpguts.HeaderValuesContainsToken(in.Header["Connection"], k) {
			out.Header[k] = v
		}
	}
	out.Header.Del(DstOverrideHeader)
	out.URL.Scheme = "http"
	out.Host = in.Host
}

// errNoTarget answers a request that reached the forwarder unrouted: a
// chain assembled without a route middleware.
var errNoTarget = errors.New("the request reached the forwarder without a target (no route middleware)")

func (f *Forwarder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	x, r := ExchangeFor(w, r, f.direction)
	if x.Backend == nil {
		WriteError(w, r, http.StatusInternalServerError, "no_target", errNoTarget)
		return
	}
	if v := r.Header.Get(OrigProtoHeader); v != "" {
		// Only a peer proxy's word counts, and only on the way in.
		r.Header.Del(OrigProtoHeader)
		x.origH1 = f.peerHeaders && strings.HasPrefix(v, "HTTP/1")
	}
	if r.Header.Get(ExpectHeader) != "" {
		// A peer proxy's client expects 100-continue; the HTTP/2 server
		// consumed the Expect header: ask the application again.
		r.Header.Del(ExpectHeader)
		if f.peerHeaders && r.ProtoMajor == 2 {
			r.Header.Set("Expect", "100-continue")
		}
	}
	if r.ProtoMajor == 2 && r.Body != nil && r.Body != http.NoBody {
		x.inBody = r.Body
	}
	if r.ProtoMajor == 1 {
		// A proxy streams the request body and the response at once. Left
		// half-duplex, the server would read the rest of the body and close
		// it as soon as the response's headers are flushed, while the
		// transport may still be reading it: that read fails, and the
		// transport closes the upstream connection under the response.
		http.NewResponseController(w).EnableFullDuplex()
	}
	x.gate = flushGate{w, x} // a pointer to it: no allocation of its own
	if fastPath(r) && !f.viaReverseProxy {
		f.forward(&x.gate, r)
	} else {
		f.rp.ServeHTTP(&x.gate, r)
	}
	if x.client != nil && !x.client.complete() {
		// The response is out but the client's body is not over (the
		// application answered early) or broke: what is left of it must
		// not be parsed as the next request, and draining it, as the
		// server would, can end in an error the server answers with an
		// unsolicited 400. Close the connection after the response.
		closeAfterResponse(w)
	}
}

// flushGate is the ResponseWriter given to ReverseProxy. It drops the
// flushes of a gRPC trailers-only response: ReverseProxy flushes the
// headers before copying the (empty) body, which would send them as a
// HEADERS frame of their own followed by an empty end of stream, and the
// client would lose grpc-status ("server closed the stream without sending
// trailers"). Unflushed, the headers go out with END_STREAM when the
// handler returns, as the server sent them.
type flushGate struct {
	http.ResponseWriter
	x *Exchange
}

// FlushError drops the flushes of a gRPC trailers-only response (above),
// and holds back a flush of the headers alone when a body of known
// length follows (ReverseProxy flushes the headers as soon as it has
// written them): they leave with the body's first bytes, in one write
// instead of two, a write syscall less per response and hop. A body of
// unknown length (a stream, gRPC) gets its headers at once.
func (w *flushGate) FlushError() error {
	if f := w.x.flush.Load(); f&trailersOnly != 0 || f&(holdHeaders|bodyWritten) == holdHeaders {
		return nil
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Write notes that the body has begun: flushes go through from then on.
func (w *flushGate) Write(p []byte) (int, error) {
	if len(p) > 0 && w.x.flush.Load()&bodyWritten == 0 {
		w.x.flush.Or(bodyWritten)
	}
	return w.ResponseWriter.Write(p)
}

// WriteHeader drops the 100 Continue that ReverseProxy relays from
// upstream: the server sends its own when the transport first reads the
// client's body, which the transport does once upstream said 100 (or its
// ExpectContinueTimeout passed), so relaying it too would send it twice.
func (w *flushGate) WriteHeader(code int) {
	if code == http.StatusContinue {
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap gives http.ResponseController the rest (Hijack for upgrades).
func (w *flushGate) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// roundTripper is the ReverseProxy's transport: the request's attempts,
// and its Attempts for a Retrier.
type roundTripper struct{ f *Forwarder }

func (rt roundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	x := exchangeOf(r.Context())
	var resp *http.Response
	var err error
	if x.Retry != nil {
		resp, err = x.Retry(r, x, rt)
	} else {
		resp, err = rt.Send(r, x)
		if err == nil && x.Timeout != nil {
			x.Timeout.Stop() // the route timeout bounds the wait for headers, not the body
		}
	}
	if err != nil {
		if x.Timeout != nil && errors.Is(context.Cause(r.Context()), ErrRouteTimeout) {
			return nil, ErrRouteTimeout
		}
		return nil, err
	}
	noContent(resp)
	rt.f.observe(x, resp)
	return resp, nil
}

// Discard implements Attempts.
func (rt roundTripper) Discard(x *Exchange, resp *http.Response) {
	x.out.report(headerFailure(resp))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	resp.Body.Close()
}

// Send makes one attempt on the chosen backend's endpoints, moving to
// another endpoint when connecting fails (nothing was sent), on
// connect.Loop: the loop and its failure reasons are the opaque path's too.
func (rt roundTripper) Send(r *http.Request, x *Exchange) (*http.Response, error) {
	f := rt.f
	// The first Send's body guard is the exchange's own; a retry's is new,
	// as the transport may still hold (and close) the one before.
	body := &x.body
	if x.sent {
		body = new(guardedBody)
	}
	prefer := x.Prefer
	if x.sent {
		prefer = nil // a retry: the endpoint that failed is not preferred again
	}
	x.sent = true
	body.rc, body.abort = r.Body, x.inBody
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = body
	}
	resp, err := connect.LoopPreferring(x.Backend.Balancer, prefer, func(ep *balance.Endpoint[*Upstream]) (*http.Response, error) {
		return rt.attempt(r, x, ep, body)
	})
	if err != nil {
		return nil, f.unavailable(x, err)
	}
	return resp, nil
}

// unavailable turns connect.Loop's *UnavailableError into the request's
// answer and counts it; other errors pass as they are. (A function of its
// own: the target errors.As needs is allocated only on this path.)
func (f *Forwarder) unavailable(x *Exchange, err error) error {
	var ue *connect.UnavailableError
	if !errors.As(err, &ue) {
		return err
	}
	f.metrics.Unavailable(f.direction, x.Backend.Authority, ue.Reason)
	if ue.Last != nil {
		return ue.Last // the connect failure: the request's answer is 502
	}
	return &RouteError{Status: http.StatusServiceUnavailable, Reason: ue.Reason, Err: ue.Err}
}

// attempt sends r to the endpoint ep: one try of connect.Loop.
func (rt roundTripper) attempt(r *http.Request, x *Exchange, ep *balance.Endpoint[*Upstream], body *guardedBody) (*http.Response, error) {
	f := rt.f
	up := ep.Value()
	x.Labels.Target = up.Addr
	if x.Backend.TLS != nil && f.targetTLS {
		x.Labels.TLS, x.Labels.ServerID = x.Backend.TLS(up.Addr)
		if x.Labels.TLS == metrics.TLSLoopback {
			// This pod's own application, reached with no inbound
			// proxy to remove the loop mark: it must not see it.
			r.Header.Del(HopHeader)
		}
	}
	r.URL.Host = up.Addr
	f.metrics.RequestStarted(x.Labels)
	tr, upgraded := up.transportFor(r, x.origH1, x.H2)
	if upgraded {
		r.Header.Set(OrigProtoHeader, "HTTP/1.1")
		if ExpectsContinue(r.Header) {
			r.Header.Set(ExpectHeader, "100-continue")
		}
	} else {
		r.Header.Del(OrigProtoHeader)
		r.Header.Del(ExpectHeader)
	}
	start := ep.BeginRequest()
	// The request's first attempt reports through the exchange's own
	// outcome; another attempt (a retry, another endpoint after a failed
	// connect) through a new one.
	if x.out == nil {
		x.out0 = outcome{ep: ep, ctx: r.Context()}
		x.out = &x.out0
	} else {
		x.out = &outcome{ep: ep, ctx: r.Context()}
	}
	resp, err := tr.RoundTrip(r)
	if err != nil {
		ep.EndRequest(start, true) // a failure's RTT may raise the estimate, never lower it
		var de *DialError
		if errors.As(err, &de) {
			if !clientCanceled(r.Context()) {
				ep.Fail() // backoff; a "connect" failure for accrual too
			}
			f.metrics.ResponseDone(x.Labels, metrics.Response{Error: connect.ReasonConnect, Latency: time.Since(x.Start)})
			if body.touched() {
				return nil, connect.Final(err) // the body cannot be sent again
			}
			return nil, err // another endpoint is tried
		}
		x.out.report(errorFailure(r.Context(), err))
		return nil, err // counted by proxyError
	}
	ep.EndRequest(start, headerFailure(resp) != "")
	ep.Succeed()
	if resp.ProtoMajor == 1 && claimsContent(resp) && tr != up.h1c {
		// Whatever content the application sent anyway follows on the
		// connection, which net/http's Transport has already put back in
		// its pool: the next request there would read it as its response.
		// (h1client never pools such a connection.)
		tr.CloseIdleConnections()
	}
	return resp, nil
}

// observe arranges for the response to be counted when its body ends, when
// gRPC's status (often a trailer) is known.
func (f *Forwarder) observe(x *Exchange, resp *http.Response) {
	lat := time.Since(x.Start)
	if isGRPCResponse(resp) && h1head.Get(resp.Header, "Grpc-Status") != "" {
		// grpc-status among the headers: a trailers-only response.
		x.flush.Or(trailersOnly)
	}
	if resp.ContentLength > 0 && resp.StatusCode != http.StatusSwitchingProtocols {
		x.flush.Or(holdHeaders)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols || resp.Body == nil {
		// An upgraded body is the raw connection; ReverseProxy needs it unwrapped.
		f.metrics.ResponseDone(x.Labels, metrics.Response{Status: resp.StatusCode, Latency: lat})
		x.errOnce.Do(func() {})
		x.out.report(headerFailure(resp))
		return
	}
	// The body wrapper is the exchange's own: observe runs once per request.
	x.respBody = observedBody{ReadCloser: resp.Body, f: f, x: x, out: x.out, resp: resp, latency: lat}
	resp.Body = &x.respBody
}

// observedBody is a response's body on its way to the client: its end (EOF,
// an error or Close) reports the outcome to the balancer (outcome.go) and
// counts the response once.
type observedBody struct {
	io.ReadCloser
	f       *Forwarder
	x       *Exchange
	out     *outcome
	resp    *http.Response
	latency time.Duration
}

func (b *observedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		if err == io.EOF {
			b.out.report(endFailure(b.resp, nil))
			b.end(nil)
		} else {
			b.out.report(endFailure(b.resp, err))
			b.end(err)
		}
	}
	return n, err
}

// Buffered passes the upstream body's (h2client.Buffered) on, for
// copyResponse.
func (b *observedBody) Buffered() (int, bool) { return buffered(b.ReadCloser) }

func (b *observedBody) Close() error {
	b.end(nil)
	b.out.closed(b.resp)
	return b.ReadCloser.Close()
}

// end counts the response once, when its body ended with err (nil: at EOF
// or closed).
func (b *observedBody) end(err error) {
	x, f, resp := b.x, b.f, b.resp
	x.errOnce.Do(func() {
		if err != nil && x.clientError() != nil {
			f.metrics.ClientError(f.direction, x.Labels.Authority, "bad_request")
			return
		}
		if err != nil && x.clientCtx().Err() != nil {
			// The client went away mid-response: not the application's failure.
			f.metrics.ClientError(f.direction, x.Labels.Authority, "canceled")
			return
		}
		o := metrics.Response{Status: resp.StatusCode, Latency: b.latency, GRPCStatus: grpcStatus(resp)}
		if err != nil {
			o.Error = "stream"
		}
		f.metrics.ResponseDone(x.Labels, o)
	})
}

// proxyError answers a request that got no response from upstream.
func (f *Forwarder) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	x := exchangeOf(r.Context())
	if x != nil {
		if cerr := x.clientError(); cerr != nil {
			BadRequest(w, r, x, f.metrics, f.log, cerr)
			return
		}
	}
	status, reason := http.StatusBadGateway, "upstream"
	var re *RouteError
	var de *DialError
	switch {
	case errors.As(err, &re):
		status, reason = re.Status, re.Reason
	case errors.As(err, &de):
		status, reason = http.StatusServiceUnavailable, "connect"
	case errors.Is(err, ErrRouteTimeout):
		status, reason = http.StatusGatewayTimeout, "timeout"
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil,
		x != nil && x.clientCtx() != nil && x.clientCtx().Err() != nil:
		// The client went away; nobody reads this answer. Over HTTP/2 the
		// error may be the request body's (the stream was reset), but the
		// server cancels the request's context before it closes the body.
		status, reason = 499, "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		status, reason = http.StatusGatewayTimeout, "timeout"
	}
	if x != nil && x.Labels.Target != "" && de == nil {
		x.errOnce.Do(func() {
			if status == 499 {
				// A cancellation is the client's doing: it does not count
				// against the application's success rate.
				f.metrics.ClientError(f.direction, x.Labels.Authority, reason)
				return
			}
			f.metrics.ResponseDone(x.Labels, metrics.Response{Error: reason, Latency: time.Since(x.Start)})
		})
	}
	if status != 499 {
		f.log.Debug("proxy error", "direction", f.direction, "authority", r.Host, "err", err)
	}
	WriteError(w, r, status, reason, err)
}

// WriteError is the proxy's own answer to a request, marked with
// ErrorHeader: reason. It answers in the client's protocol: gRPC clients get
// a trailers-only response with a gRPC status, others the HTTP status.
func WriteError(w http.ResponseWriter, r *http.Request, status int, reason string, err error) {
	w.Header().Set(ErrorHeader, reason)
	if isGRPC(r) {
		code := "14" // UNAVAILABLE
		switch status {
		case http.StatusGatewayTimeout:
			code = "4" // DEADLINE_EXCEEDED
		case http.StatusForbidden:
			code = "7" // PERMISSION_DENIED
		case http.StatusLoopDetected:
			code = "9" // FAILED_PRECONDITION: a misconfiguration, not worth a retry
		}
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Grpc-Status", code)
		w.Header().Set("Grpc-Message", "meridian proxy: "+reason)
		w.WriteHeader(http.StatusOK)
		return
	}
	http.Error(w, "meridian proxy: "+err.Error(), status)
}

func isGRPC(r *http.Request) bool {
	return strings.HasPrefix(h1head.Get(r.Header, "Content-Type"), "application/grpc")
}

// grpcStatus reads grpc-status from trailers, or from headers for a trailers-only response.
func grpcStatus(resp *http.Response) string {
	if !isGRPCResponse(resp) {
		return ""
	}
	if s := h1head.Get(resp.Trailer, "Grpc-Status"); s != "" {
		return s
	}
	if s := h1head.Get(resp.Header, "Grpc-Status"); s != "" {
		return s
	}
	return strconv.Itoa(2) // UNKNOWN: the stream ended without a status
}

func isGRPCResponse(resp *http.Response) bool {
	return strings.HasPrefix(h1head.Get(resp.Header, "Content-Type"), "application/grpc")
}

// guardedBody remembers whether any byte was read, and defers closing the
// client's body, so that a request whose connection attempt failed can be
// sent again to another endpoint.
type guardedBody struct {
	mu    sync.Mutex
	rc    io.ReadCloser
	abort io.Closer // nil, or the client's HTTP/2 body underneath rc
	read  bool
}

func (b *guardedBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	b.read = true
	b.mu.Unlock()
	return b.rc.Read(p)
}

// Close passes through once the body has been read from, which is when a
// retry is off the table anyway; before that the server closes it when the
// handler returns.
//
// The transport closes the body to stop the goroutine that copies it
// upstream when the exchange ends or breaks. ReverseProxy's wrapper (rc)
// ignores Close, because closing an HTTP/1 server body can block reading
// what is left of it, so a Read waiting for the client's next message would
// never return; the HTTP/2 transport releases the response body only after
// that goroutine ends, and a stream whose endpoint died (a gRPC
// bidirectional stream, idle on the client's side) hung forever. Closing an
// HTTP/2 server body does not block and makes a pending Read return.
func (b *guardedBody) Close() error {
	if !b.touched() {
		return nil
	}
	if b.abort != nil {
		b.abort.Close()
	}
	return b.rc.Close()
}

// Buffered passes the client's body's (h2client.Buffered) on, so that
// the HTTP/2 transport sends a body that is already whole with its headers.
func (b *guardedBody) Buffered() (int, bool) { return buffered(b.rc) }

func (b *guardedBody) touched() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.read
}

// bufferPool reuses copy buffers; ReverseProxy allocates 32 KiB per body otherwise.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *buffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }
