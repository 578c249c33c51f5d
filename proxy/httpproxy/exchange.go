package httpproxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-mesh/meridian/proxy/metrics"
	"github.com/meridian-mesh/meridian/proxy/profile"
)

// Exchange is one request's state along a chain of middlewares
// (proxy/middleware) and the Forwarder at its end. It is the one context
// value the chain adds to a request: whichever middleware runs first
// attaches it (ExchangeFor), the others fill its exported fields in the
// chain's order, and the Forwarder reads them.
type Exchange struct {
	// Target is where the request was routed (middleware/route, SetTarget).
	Target *Target
	// Backend is where it goes: a traffic-split backend of Target
	// (middleware/split), else Target itself.
	Backend *Target
	// Profile is Target's profile, nil without one; Route the profile's
	// route the request matched, nil for none (middleware/route).
	Profile *profile.Profile
	Route   *profile.Route
	// Probe is the connection's Peer.Probe (WithPeer), nil for none.
	Probe func(*http.Request) bool
	// Labels are the request's metric labels: direction and the client's
	// connection (Peer's tls and client ID) from the start, authority and
	// route once routed, the endpoint (and, with LabelTargetTLS, its tls
	// and server ID) once picked.
	Labels metrics.Request
	// Start is when the request was routed: its latency counts from there.
	Start time.Time
	// Timeout, when set (middleware/timeout), fires the route timeout: its
	// context's cause is then ErrRouteTimeout. The Forwarder stops it once
	// the response's headers are in: it bounds the wait for them, not the body.
	Timeout *time.Timer
	// Retry, when set (middleware/retry), sends the request in place of a
	// single attempt; Body is the request body it read ahead (nil for a
	// request without one), sent again on each attempt.
	Retry Retrier
	Body  []byte
	// Prefer, when set, names the endpoint the request's first attempt
	// goes to when it is ready (a gateway session pinned to it); other
	// attempts, and a request whose endpoint is not ready, get the
	// balancer's choice. Labels.Target says which endpoint answered.
	Prefer func(*Upstream) bool

	inBody  io.Closer   // the client's HTTP/2 request body; see guardedBody.Close
	client  *clientBody // the client's HTTP/1 request body, nil without one
	out     *outcome    // the latest attempt's, for the balancer (outcome.go)
	errOnce sync.Once   // the request's metric, counted once
	// flush is what flushGate needs to know of the response (flag bits).
	flush  atomic.Uint32
	origH1 bool // the request came over HTTP/2 from a peer proxy but was HTTP/1
	sent   bool // Send has used body
	// H2, when set, sends the request over HTTP/2 whatever the client
	// spoke: the backend speaks HTTP/2 with prior knowledge (a gateway's
	// H2C backend). An upgrade or a request waiting for 100 Continue still
	// goes over HTTP/1.1. (Here, in the bools' padding, to keep the
	// Exchange in its size class.)
	H2 bool

	// What the Forwarder would otherwise allocate on its own for every
	// request: the ResponseWriter it gives ReverseProxy, the first Send's
	// body guard, the first attempt's outcome, the response's body wrapper.
	gate     flushGate
	body     guardedBody
	out0     outcome
	respBody observedBody
	// ctx is the request's context from ExchangeFor on; its parent is the
	// client's own (no route timeout): done when the client went away.
	ctx exchangeCtx
}

// The Exchange is allocated once per request, with the Forwarder's own
// per-request state (gate, body, out0, respBody) and the request's context
// inside it: one allocation of 480 bytes (the 480-byte size class) instead
// of seven of about 550 in all (TestExchangeSize).

type exchangeKey struct{}

// exchangeCtx is context.WithValue(parent, exchangeKey{}, x) inside x: no
// allocation of its own. Being no *cancelCtx, it passes the lookup of the
// nearest one (Value) to its parent, whose Done is its own: the contexts
// derived from it are linked to that one without a goroutine, as from a
// WithValue context.
type exchangeCtx struct {
	context.Context
	x *Exchange
}

func (c *exchangeCtx) Value(key any) any {
	if _, ok := key.(exchangeKey); ok {
		return c.x
	}
	return c.Context.Value(key)
}

// ExchangeFor returns r's exchange, and r. The first call for a request
// starts one for direction (the metrics' label) and returns a copy of r
// carrying it; the server's own request is left as it was (it looks at its
// Body after the handler). A request that arrived with both Content-Length
// and Transfer-Encoding (h1server.AmbiguousFraming) gets "Connection:
// close" on w.
func ExchangeFor(w http.ResponseWriter, r *http.Request, direction string) (*Exchange, *http.Request) {
	if x, ok := r.Context().Value(exchangeKey{}).(*Exchange); ok {
		return x, r
	}
	if ambiguousFraming(r) {
		// Content-Length and Transfer-Encoding: forwarded by the latter
		// alone (net/http dropped Content-Length), and the connection is
		// closed after the response, whatever it is (RFC 9112 §6.1).
		w.Header().Set("Connection", "close")
	}
	peer, _ := r.Context().Value(peerKey{}).(Peer)
	x := &Exchange{Probe: peer.Probe,
		Labels: metrics.Request{Direction: direction, TLS: peer.TLS, ClientID: peer.ClientID}}
	x.ctx = exchangeCtx{Context: r.Context(), x: x}
	r = r.WithContext(&x.ctx)
	if r.ProtoMajor == 1 && r.Body != nil && r.Body != http.NoBody {
		x.client = &clientBody{ReadCloser: r.Body}
		r.Body = x.client
	}
	return x, r
}

// clientCtx is the client's own context (no route timeout): done when it
// went away.
func (x *Exchange) clientCtx() context.Context { return x.ctx.Context }

// exchangeOf is the exchange of a request the chain has seen, or nil.
func exchangeOf(ctx context.Context) *Exchange {
	x, _ := ctx.Value(exchangeKey{}).(*Exchange)
	return x
}

// SetTarget routes the request to t (its Backend too, until a split picks
// another), labels it with t's authority and starts its clock.
func (x *Exchange) SetTarget(t *Target) {
	x.Target, x.Backend = t, t
	x.Labels.Authority = t.Authority
	x.Start = time.Now()
}

// ErrRouteTimeout is the cause of a request's context when its route
// timeout expires before the response headers arrive: the Forwarder answers
// 504 (gRPC DEADLINE_EXCEEDED) with reason "timeout", and the endpoint's
// outcome is a "timeout" rather than the client's cancellation.
var ErrRouteTimeout = errors.New("route timeout")

// Retrier sends a request as many times as its policy allows
// (proxy/middleware/retry). The Forwarder calls it, when a middleware set
// one on the exchange, in place of a single attempt: it returns the
// response to pass on, or the error of the attempt that failed. (A func,
// not an interface: it keeps the Exchange in a smaller size class.)
type Retrier func(r *http.Request, x *Exchange, a Attempts) (*http.Response, error)

// Attempts is the Forwarder's side of a retry loop.
type Attempts interface {
	// Send makes one attempt on x.Backend: it picks an endpoint and moves
	// to another when connecting fails (nothing was sent).
	Send(r *http.Request, x *Exchange) (*http.Response, error)
	// Discard drops a response that is not passed on: it is reported as
	// its endpoint's failure, and what is left of its body is read (up to
	// 64 KiB) so that the connection can be reused.
	Discard(x *Exchange, resp *http.Response)
}

// The bits of Exchange.flush.
const (
	// trailersOnly: the response is a gRPC trailers-only response.
	trailersOnly uint32 = 1 << iota
	// holdHeaders: its body has a known length, so a flush of its headers
	// alone waits for the body's first bytes.
	holdHeaders
	// bodyWritten: they came.
	bodyWritten
)
