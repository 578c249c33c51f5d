// Package httpproxy forwards HTTP/1 requests and HTTP/2 streams (gRPC
// included) to a balanced set of endpoints, one request at a time, and
// records the golden metrics of each.
package httpproxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/meridian-mesh/meridian/internal/names"
	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/metrics"
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

// Router maps a request to its target.
type Router interface {
	Route(r *http.Request) (*Target, error)
	// Backend resolves a traffic-split backend authority. Its own profile's
	// splits are not applied again.
	Backend(ctx context.Context, authority string) (*Target, error)
}

// Handler is the forwarding http.Handler for one direction of a proxy.
type Handler struct {
	// MaxInFlight bounds the requests (gRPC streams included) handled at
	// once; beyond it a request is refused at once with 503 (gRPC
	// UNAVAILABLE) instead of queueing without bound while the proxy or
	// its endpoints are saturated. 0: no bound. Set it before serving.
	MaxInFlight int64

	direction string
	router    Router
	metrics   *metrics.Registry
	log       *slog.Logger
	rp        *httputil.ReverseProxy
	inFlight  atomic.Int64
}

// maxConnectAttempts bounds how many endpoints one request tries when
// connecting fails; nothing has been sent, so trying another is safe.
const maxConnectAttempts = 3

type ctxKey struct{}

// reqState travels with a request through the ReverseProxy.
type reqState struct {
	target  *Target
	backend *Target // the traffic-split backend chosen, or target itself
	route   *profile.Route
	budget  *profile.Budget // non-nil when the request may be retried
	body    []byte          // the whole request body, kept for retries
	mreq    metrics.Request
	start   time.Time
	errOnce sync.Once
	inBody  io.Closer   // the client's HTTP/2 request body; see guardedBody.Close
	client  *clientBody // the client's HTTP/1 request body, nil without one
	timeout *time.Timer // the route timeout, stopped once headers arrive
	origH1  bool        // the request came over HTTP/2 from a peer proxy but was HTTP/1
	// trailersOnly: the response is a gRPC trailers-only response; see flushGate.
	trailersOnly atomic.Bool
	// clientCtx is the client's own request context (no route timeout):
	// done when the client went away.
	clientCtx context.Context
	out       *outcome // the latest attempt's, for the balancer (outcome.go)
}

// New returns a handler forwarding requests for direction ("inbound" or "outbound").
func New(direction string, router Router, m *metrics.Registry, log *slog.Logger) *Handler {
	h := &Handler{direction: direction, router: router, metrics: m, log: log}
	m.InFlight(direction, h.inFlight.Load)
	h.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// A sidecar is transparent: keep the client's forwarding headers,
			// which Rewrite would otherwise strip (unless the client made
			// them hop-by-hop by naming them in Connection).
			for _, k := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
				if v, ok := pr.In.Header[k]; ok && !httpguts.HeaderValuesContainsToken(pr.In.Header["Connection"], k) {
					pr.Out.Header[k] = v
				}
			}
			pr.Out.Header.Del(DstOverrideHeader)
			pr.Out.URL.Scheme = "http"
			pr.Out.Host = pr.In.Host
		},
		Transport:    roundTripper{h},
		BufferPool:   bufferPool{},
		ErrorHandler: h.proxyError,
		ErrorLog:     slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		// Stream everything: gRPC, server-sent events and slow bodies must
		// not wait in a buffer. (flushGate keeps gRPC trailers-only
		// responses whole.)
		FlushInterval: -1,
	}
	return h
}

// errMaxInFlight is the answer to a request shed because the handler had
// MaxInFlight requests already.
var errMaxInFlight = errors.New("the proxy has its maximum of requests in flight")

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if ambiguousFraming(r) {
		// Content-Length and Transfer-Encoding: forwarded by the latter
		// alone (net/http dropped Content-Length), and the connection is
		// closed after the response, whatever it is (RFC 9112 §6.1).
		w.Header().Set("Connection", "close")
	}
	if n := h.inFlight.Add(1); h.MaxInFlight > 0 && n > h.MaxInFlight {
		h.inFlight.Add(-1)
		h.metrics.Shed(h.direction)
		writeError(w, r, http.StatusServiceUnavailable, "max_in_flight", errMaxInFlight)
		return
	}
	defer h.inFlight.Add(-1)
	t, err := h.router.Route(r)
	if err != nil {
		var re *RouteError
		if !errors.As(err, &re) {
			re = &RouteError{Status: http.StatusBadGateway, Reason: "route", Err: err}
		}
		switch {
		case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
			// The client went away while its destination was resolved:
			// a cancellation, not an unavailable destination.
			re = &RouteError{Status: 499, Reason: "canceled", Authority: re.Authority, Err: err}
			h.metrics.ClientError(h.direction, routeAuthority(re, r), re.Reason)
		case re.Status != http.StatusForbidden: // refused by policy: counted by the router
			h.metrics.Unavailable(h.direction, routeAuthority(re, r), re.Reason)
		}
		writeError(w, r, re.Status, re.Reason, err)
		return
	}
	st := &reqState{target: t, backend: t, start: time.Now(), clientCtx: r.Context(),
		mreq: metrics.Request{Direction: h.direction, Authority: t.Authority}}
	peer, _ := r.Context().Value(peerKey{}).(Peer)
	st.mreq.TLS, st.mreq.ClientID = peer.TLS, peer.ClientID
	if v := r.Header.Get(OrigProtoHeader); v != "" {
		// Only a peer proxy's word counts, and only on the way in.
		r.Header.Del(OrigProtoHeader)
		st.origH1 = h.direction == "inbound" && strings.HasPrefix(v, "HTTP/1")
	}
	if r.Header.Get(ExpectHeader) != "" {
		// A peer proxy's client expects 100-continue; the HTTP/2 server
		// consumed the Expect header: ask the application again.
		r.Header.Del(ExpectHeader)
		if h.direction == "inbound" && r.ProtoMajor == 2 {
			r.Header.Set("Expect", "100-continue")
		}
	}
	if r.ProtoMajor == 1 && r.Body != nil && r.Body != http.NoBody {
		// On a copy: the server looks at its own request's Body after the
		// handler (an unread 100-continue body closes the connection).
		r = r.WithContext(r.Context())
		st.client = &clientBody{ReadCloser: r.Body}
		r.Body = st.client
	}
	var prof *profile.Profile
	if t.Profile != nil {
		prof = t.Profile()
	}
	ctx := r.Context()
	if peer.Probe != nil && peer.Probe(r) {
		st.mreq.Route = metrics.RouteProbe // unless a profile route matches
	}
	if prof != nil {
		if st.route = prof.Match(r); st.route != nil {
			st.mreq.Route = st.route.Name
		}
		if split := prof.Pick(); split != "" {
			bt, err := h.router.Backend(ctx, split)
			if err != nil {
				// A broken backend is reported, never an outage: the apex serves.
				h.log.Warn("traffic split backend unavailable; using the apex", "authority", t.Authority, "backend", split, "err", err)
			} else {
				st.backend = bt
			}
		}
		if st.route != nil && st.route.Timeout > 0 {
			var cancel context.CancelCauseFunc
			ctx, cancel = context.WithCancelCause(ctx)
			defer cancel(nil)
			st.timeout = time.AfterFunc(st.route.Timeout, func() { cancel(errRouteTimeout) })
			defer st.timeout.Stop()
		}
		// A client waiting for 100 Continue gets the application's
		// decision, so its body is not read ahead for retries.
		if st.route != nil && st.route.Retryable && r.Header.Get("Upgrade") == "" && !expectsContinue(r.Header) {
			prof.Budget().Deposit()
			ok, err := st.bufferBody(r)
			if err != nil {
				h.answerBadRequest(w, r, st, err)
				return
			}
			if ok {
				st.budget = prof.Budget()
			} else {
				h.metrics.Retry(st.mreq, "body_too_large")
			}
		}
	}
	if r.ProtoMajor == 2 && r.Body != nil && r.Body != http.NoBody {
		st.inBody = r.Body
	}
	if r.ProtoMajor == 1 {
		// A proxy streams the request body and the response at once. Left
		// half-duplex, the server would read the rest of the body and close
		// it as soon as the response's headers are flushed, while the
		// transport may still be reading it: that read fails, and the
		// transport closes the upstream connection under the response.
		http.NewResponseController(w).EnableFullDuplex()
	}
	h.rp.ServeHTTP(flushGate{w, st}, r.WithContext(context.WithValue(ctx, ctxKey{}, st)))
	if st.client != nil && !st.client.complete() {
		// The response is out but the client's body is not over (the
		// application answered early) or broke: what is left of it must
		// not be parsed as the next request, and draining it, as the
		// server would, can end in an error the server answers with an
		// unsolicited 400. Close the connection after the response.
		closeAfterResponse(w)
	}
}

// errRouteTimeout is the cause when a route's timeout expires before the
// response headers arrive.
var errRouteTimeout = errors.New("route timeout")

// maxRetries bounds retries of one request, on top of the budget.
const maxRetries = 3

// bufferBody reads a retryable request's body into memory, up to
// RetryBufferSize. A larger body is not retried: it is sent as it streams,
// the part already read first. ok reports whether the body is buffered.
func (st *reqState) bufferBody(r *http.Request) (ok bool, err error) {
	if r.Body == nil || r.Body == http.NoBody {
		return true, nil
	}
	buf, err := io.ReadAll(io.LimitReader(r.Body, RetryBufferSize+1))
	if err != nil {
		return false, err
	}
	if len(buf) > RetryBufferSize {
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
		return false, nil
	}
	st.body = buf
	return true, nil
}

// RetryBufferSize bounds the request body kept for retries. A request whose
// body is larger is never retried.
const RetryBufferSize = 64 << 10

// flushGate is the ResponseWriter given to ReverseProxy. It drops the
// flushes of a gRPC trailers-only response: ReverseProxy flushes the
// headers before copying the (empty) body, which would send them as a
// HEADERS frame of their own followed by an empty end of stream, and the
// client would lose grpc-status ("server closed the stream without sending
// trailers"). Unflushed, the headers go out with END_STREAM when the
// handler returns, as the server sent them.
type flushGate struct {
	http.ResponseWriter
	st *reqState
}

func (w flushGate) FlushError() error {
	if w.st.trailersOnly.Load() {
		return nil
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// WriteHeader drops the 100 Continue that ReverseProxy relays from
// upstream: the server sends its own when the transport first reads the
// client's body, which the transport does once upstream said 100 (or its
// ExpectContinueTimeout passed), so relaying it too would send it twice.
func (w flushGate) WriteHeader(code int) {
	if code == http.StatusContinue {
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap gives http.ResponseController the rest (Hijack for upgrades).
func (w flushGate) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type roundTripper struct{ h *Handler }

func (rt roundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	st := r.Context().Value(ctxKey{}).(*reqState)
	h := rt.h
	for retry := 0; ; retry++ {
		if st.budget != nil && st.body != nil {
			r.Body = io.NopCloser(bytes.NewReader(st.body))
			r.ContentLength = int64(len(st.body))
		}
		resp, err := rt.send(r, st)
		if err != nil {
			if st.timeout != nil && errors.Is(context.Cause(r.Context()), errRouteTimeout) {
				return nil, errRouteTimeout
			}
			return nil, err
		}
		if st.budget == nil || !st.route.IsFailure(resp.StatusCode) || isGRPCResponse(resp) {
			if st.timeout != nil {
				st.timeout.Stop() // the route timeout bounds the wait for headers, not the body
			}
			noContent(resp)
			h.observe(st, resp)
			return resp, nil
		}
		// A retryable failure: count it, and retry while the budget allows.
		h.metrics.ResponseDone(st.mreq, metrics.Response{Status: resp.StatusCode, Latency: time.Since(st.start)})
		if retry >= maxRetries || !st.budget.Withdraw() {
			h.metrics.Retry(st.mreq, "budget_exhausted")
			noContent(resp)
			h.observe(st, resp)
			return resp, nil
		}
		h.metrics.Retry(st.mreq, "retried")
		st.out.report(headerFailure(resp))
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
		resp.Body.Close()
	}
}

// send makes one attempt on the chosen backend's endpoints, moving to
// another endpoint when connecting fails (nothing was sent).
func (rt roundTripper) send(r *http.Request, st *reqState) (*http.Response, error) {
	h := rt.h
	body := &guardedBody{rc: r.Body, abort: st.inBody}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = body
	}
	var lastErr error
	for attempt := 0; attempt < maxConnectAttempts; attempt++ {
		ep, err := st.backend.Balancer.Pick()
		if err != nil {
			h.metrics.Unavailable(h.direction, st.backend.Authority, unavailableReason(err))
			if lastErr != nil {
				return nil, lastErr
			}
			return nil, &RouteError{Status: http.StatusServiceUnavailable, Reason: unavailableReason(err), Err: err}
		}
		up := ep.Value()
		st.mreq.Target = up.Addr
		if st.backend.TLS != nil && h.direction == "outbound" {
			st.mreq.TLS, st.mreq.ServerID = st.backend.TLS(up.Addr)
			if st.mreq.TLS == metrics.TLSLoopback {
				// This pod's own application, reached with no inbound
				// proxy to remove the loop mark: it must not see it.
				r.Header.Del(HopHeader)
			}
		}
		r.URL.Host = up.Addr
		h.metrics.RequestStarted(st.mreq)
		tr, upgraded := up.transportFor(r, st.origH1)
		if upgraded {
			r.Header.Set(OrigProtoHeader, "HTTP/1.1")
			if expectsContinue(r.Header) {
				r.Header.Set(ExpectHeader, "100-continue")
			}
		} else {
			r.Header.Del(OrigProtoHeader)
			r.Header.Del(ExpectHeader)
		}
		done := ep.StartRequest()
		st.out = &outcome{ep: ep, ctx: r.Context()}
		resp, err := tr.RoundTrip(r)
		if err != nil {
			done(true) // a failure's RTT may raise the estimate, never lower it
			var de *DialError
			if errors.As(err, &de) {
				if !clientCanceled(r.Context()) {
					ep.Fail() // backoff; a "connect" failure for accrual too
				}
				h.metrics.ResponseDone(st.mreq, metrics.Response{Error: "connect", Latency: time.Since(st.start)})
				lastErr = err
				if !body.touched() {
					continue
				}
				return nil, err
			}
			st.out.report(errorFailure(r.Context(), err))
			return nil, err // counted by proxyError
		}
		done(headerFailure(resp) != "")
		ep.Succeed()
		if resp.ProtoMajor == 1 && claimsContent(resp) {
			// Whatever content the application sent anyway follows on the
			// connection, which the transport has already put back in its
			// pool: the next request there would read it as its response.
			tr.CloseIdleConnections()
		}
		return resp, nil
	}
	return nil, lastErr
}

// observe arranges for the response to be counted when its body ends, when
// gRPC's status (often a trailer) is known.
func (h *Handler) observe(st *reqState, resp *http.Response) {
	lat := time.Since(st.start)
	if isGRPCResponse(resp) && resp.Header.Get("Grpc-Status") != "" {
		// grpc-status among the headers: a trailers-only response.
		st.trailersOnly.Store(true)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols || resp.Body == nil {
		// An upgraded body is the raw connection; ReverseProxy needs it unwrapped.
		h.metrics.ResponseDone(st.mreq, metrics.Response{Status: resp.StatusCode, Latency: lat})
		st.errOnce.Do(func() {})
		st.out.report(headerFailure(resp))
		return
	}
	resp.Body = &observedBody{ReadCloser: st.out.watch(resp), end: func(err error) {
		st.errOnce.Do(func() {
			if err != nil && st.clientError() != nil {
				h.metrics.ClientError(h.direction, st.mreq.Authority, "bad_request")
				return
			}
			if err != nil && st.clientCtx.Err() != nil {
				// The client went away mid-response: not the application's failure.
				h.metrics.ClientError(h.direction, st.mreq.Authority, "canceled")
				return
			}
			o := metrics.Response{Status: resp.StatusCode, Latency: lat, GRPCStatus: grpcStatus(resp)}
			if err != nil {
				o.Error = "stream"
			}
			h.metrics.ResponseDone(st.mreq, o)
		})
	}}
}

// proxyError answers a request that got no response from upstream.
func (h *Handler) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	st, _ := r.Context().Value(ctxKey{}).(*reqState)
	if st != nil {
		if cerr := st.clientError(); cerr != nil {
			h.answerBadRequest(w, r, st, cerr)
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
	case errors.Is(err, errRouteTimeout):
		status, reason = http.StatusGatewayTimeout, "timeout"
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil,
		st != nil && st.clientCtx != nil && st.clientCtx.Err() != nil:
		// The client went away; nobody reads this answer. Over HTTP/2 the
		// error may be the request body's (the stream was reset), but the
		// server cancels the request's context before it closes the body.
		status, reason = 499, "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		status, reason = http.StatusGatewayTimeout, "timeout"
	}
	if st != nil && st.mreq.Target != "" && de == nil {
		st.errOnce.Do(func() {
			if status == 499 {
				// A cancellation is the client's doing: it does not count
				// against the application's success rate.
				h.metrics.ClientError(h.direction, st.mreq.Authority, reason)
				return
			}
			h.metrics.ResponseDone(st.mreq, metrics.Response{Error: reason, Latency: time.Since(st.start)})
		})
	}
	if status != 499 {
		h.log.Debug("proxy error", "direction", h.direction, "authority", r.Host, "err", err)
	}
	writeError(w, r, status, reason, err)
}

func unavailableReason(err error) string {
	if errors.Is(err, balance.ErrNoEndpoints) {
		return "no_endpoints"
	}
	return "unavailable"
}

// writeError answers in the client's protocol: gRPC clients get a
// trailers-only response with a gRPC status, others an HTTP status.
func writeError(w http.ResponseWriter, r *http.Request, status int, reason string, err error) {
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
	return strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")
}

// grpcStatus reads grpc-status from trailers, or from headers for a trailers-only response.
func grpcStatus(resp *http.Response) string {
	if !isGRPCResponse(resp) {
		return ""
	}
	if s := resp.Trailer.Get("Grpc-Status"); s != "" {
		return s
	}
	if s := resp.Header.Get("Grpc-Status"); s != "" {
		return s
	}
	return strconv.Itoa(2) // UNKNOWN: the stream ended without a status
}

func isGRPCResponse(resp *http.Response) bool {
	return strings.HasPrefix(resp.Header.Get("Content-Type"), "application/grpc")
}

// observedBody calls end once, at EOF, error or close.
type observedBody struct {
	io.ReadCloser
	end func(error)
}

func (b *observedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.end(nil)
	} else if err != nil {
		b.end(err)
	}
	return n, err
}

func (b *observedBody) Close() error {
	b.end(nil)
	return b.ReadCloser.Close()
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
