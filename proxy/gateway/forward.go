package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/metrics"
)

// route serves a request with the table current when it arrived: the
// listener its Host selects on its port (for HTTPS the one its SNI chose
// too), that listener's Host, and that host's first matching rule.
func (g *Gateway) route(w http.ResponseWriter, r *http.Request) {
	t := g.table.Load()
	var p *port
	if t != nil {
		p = t.ports[portOf(r.Context())]
	}
	if p == nil {
		answer(w, r, http.StatusNotFound, "no_listener", errors.New("no listener on this port"))
		return
	}
	if n := headerBytes(r); n > t.maxHeader {
		// net/http bounds the head at the most any snapshot may allow;
		// the snapshot's own limit is answered here, the same way.
		w.Header().Set("Connection", "close")
		http.Error(w, fmt.Sprintf("431 Request Header Fields Too Large: %d bytes of headers, at most %d", n, t.maxHeader), http.StatusRequestHeaderFieldsTooLarge)
		return
	}
	name := requestHost(r.Host)
	var l *listener
	if r.TLS != nil {
		l = p.listenerFor(name, gatewaypb.Listener_HTTPS)
		if sni := requestHost(r.TLS.ServerName); sni != "" && l != p.listenerFor(sni, gatewaypb.Listener_HTTPS) {
			// The connection was set up for another listener (its
			// certificate, its routes): RFC 9110 §15.5.20.
			answer(w, r, http.StatusMisdirectedRequest, "misdirected", fmt.Errorf("host %q is not served on the connection made for %q", name, sni))
			return
		}
	} else {
		l = p.listenerFor(name, gatewaypb.Listener_HTTP)
	}
	if l == nil {
		answer(w, r, http.StatusNotFound, "no_listener", fmt.Errorf("no listener for host %q", name))
		return
	}
	var rl *rule
	if h := l.hostFor(name); h != nil {
		rl = h.rule(r)
	}
	if rl == nil {
		answer(w, r, http.StatusNotFound, "no_route", fmt.Errorf("no route for %s %s on host %q", r.Method, r.URL.Path, name))
		return
	}
	if g.sawBefore(r.Header) {
		// A backend that leads back here (the gateway's own address, or
		// another gateway routing to this one) would loop until the file
		// descriptors run out.
		g.metrics.Unavailable(direction, rl.ref, "loop")
		answer(w, r, http.StatusLoopDetected, "loop", fmt.Errorf("the request came back to the gateway that forwarded it (%s: %s)", httpproxy.HopHeader, g.id))
		return
	}
	x, r := httpproxy.ExchangeFor(w, r, direction)
	x.Labels.Route = rl.noBackend
	forwarded(r, t.trustedHops, l.scheme, g.id)
	if rl.request > 0 {
		// From the request's arrival to its response's headers, across
		// retries; the forwarder stops it once they are in.
		ctx, cancel := context.WithCancelCause(r.Context())
		defer cancel(nil)
		x.Timeout = time.AfterFunc(rl.request, func() { cancel(httpproxy.ErrRouteTimeout) })
		defer x.Timeout.Stop()
		r = r.WithContext(ctx)
	}
	rl.serve.ServeHTTP(w, r)
}

// headerBytes is the size of r's head as HTTP/1 would carry it: the
// request line and each field line.
func headerBytes(r *http.Request) int {
	n := len(r.Method) + len(r.RequestURI) + len(r.Proto) + 4 + len(r.Host) + 8
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// sawBefore says whether this gateway forwarded the request already.
func (g *Gateway) sawBefore(h http.Header) bool {
	for _, v := range h.Values(httpproxy.HopHeader) {
		for id := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(id) == g.id {
				return true
			}
		}
	}
	return false
}

// forwarded removes what no client may tell the mesh (Meridian's and
// Linkerd's own headers: an override header from outside would make the
// gateway an open relay) and the client certificate headers (set again
// from the connection's verified certificate: setClientCert), appends the
// client to X-Forwarded-For, trusting
// the last trustedHops entries already there (the proxies in front of the
// gateway; with none, the client's own forwarding headers are replaced),
// and appends the gateway's id to Meridian-Hop.
func forwarded(r *http.Request, trustedHops int, scheme, id string) {
	h := r.Header
	for k := range h {
		// Meridian-Hop stays: it can only make a request refused as a
		// loop, and removing it would hide a loop through two gateways.
		if (strings.HasPrefix(k, "Meridian-") && k != httpproxy.HopHeader) || strings.HasPrefix(k, "L5d-") {
			delete(h, k)
		}
	}
	setClientCert(r, h)
	client, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		client = r.RemoteAddr
	}
	// The values the gateway sets share one array (one allocation instead
	// of four); each is a full slice of its own (len == cap), so that an
	// Add to one copies it rather than writing over the next.
	vals := make([]string, 4)
	set := func(i int, k, v string) {
		vals[i] = v
		h[k] = vals[i : i+1 : i+1]
	}
	xff := client
	if trustedHops > 0 {
		var hops []string
		for _, v := range h["X-Forwarded-For"] {
			for hop := range strings.SplitSeq(v, ",") {
				if hop = strings.TrimSpace(hop); hop != "" {
					hops = append(hops, hop)
				}
			}
		}
		if hops = hops[max(len(hops)-trustedHops, 0):]; len(hops) > 0 {
			xff = strings.Join(hops, ", ") + ", " + client
		}
	}
	set(0, "X-Forwarded-For", xff)
	if trustedHops == 0 || h.Get("X-Forwarded-Proto") == "" {
		set(1, "X-Forwarded-Proto", scheme)
	}
	if trustedHops == 0 || h.Get("X-Forwarded-Host") == "" {
		set(2, "X-Forwarded-Host", r.Host)
	}
	if trustedHops == 0 {
		delete(h, "Forwarded")
	}
	if hop := h[httpproxy.HopHeader]; len(hop) > 0 {
		h[httpproxy.HopHeader] = append(hop, id)
	} else {
		set(3, httpproxy.HopHeader, id)
	}
}

// pick serves a rule after its filters: a backend by weight (or the one a
// session is pinned to), then that backend's handler. No backend with a
// weight: 500 (gRPC UNAVAILABLE), as the spec says.
func (g *Gateway) pick(rl *rule) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rl.session != nil {
			g.pickSession(rl, w, r)
			return
		}
		be := pickWeighted(rl.backends, rl.total)
		if be == nil {
			g.invalid(w, r, rl, errors.New("the rule has no backend with a weight"))
			return
		}
		be.serve.ServeHTTP(w, r)
	})
}

// pickSession is pick for a rule with session persistence: the backend and
// endpoint the request's session names (the endpoint while it is ready),
// else a backend by weight and the balancer's endpoint, which the response
// then names in a new session token.
func (g *Gateway) pickSession(rl *rule, w http.ResponseWriter, r *http.Request) {
	p, had := rl.session.pinned(r, rl)
	if !had {
		p = pinned{be: pickWeighted(rl.backends, rl.total)}
	}
	if p.be == nil {
		g.invalid(w, r, rl, errors.New("the rule has no backend with a weight"))
		return
	}
	x, r := httpproxy.ExchangeFor(w, r, direction)
	if had {
		x.Prefer = p.prefer
	}
	p.be.serve.ServeHTTP(&sessionWriter{ResponseWriter: w, s: rl.session, x: x, p: p, had: had}, r)
}

// forward sends a request to the backend be of rule rl: resolved through
// the destination API, with the rule's retries and per-try timeout.
func (g *Gateway) forward(rl *rule, be *backend) http.Handler {
	key := be.key
	retrier := httpproxy.Retrier((&retryLoop{g: g, rule: rl}).retry)
	connRetrier := httpproxy.Retrier((&retryLoop{g: g, rule: rl, connAttempts: connErrorRetries}).retry)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		x, r := httpproxy.ExchangeFor(w, r, direction)
		x.Labels.Route = key
		if be.authority == "" {
			g.invalid(w, r, rl, fmt.Errorf("backend %s is invalid", be.label()))
			return
		}
		d, err := be.cache.Get(r.Context(), be.authority)
		switch {
		case errors.Is(err, discover.ErrNotFound):
			g.invalid(w, r, rl, fmt.Errorf("backend %s: the destination API does not know %s", be.label(), be.authority))
			return
		case err != nil && r.Context().Err() != nil:
			g.metrics.ClientError(direction, be.authority, "canceled")
			answer(w, r, 499, "canceled", err)
			return
		case err != nil:
			g.metrics.Unavailable(direction, be.authority, "resolve")
			answer(w, r, http.StatusServiceUnavailable, "resolve", err)
			return
		}
		x.SetTarget(d.Target())
		if !be.h2 {
			// The backend speaks HTTP/1.1 whatever the client spoke (an
			// HTTP/2 client says nothing of the backend): the forwarder
			// takes this from the gateway as from a peer proxy
			// (httpproxy.Options.AcceptPeerHeaders). Clients' own
			// Meridian-* headers were removed (forwarded).
			r.Header[httpproxy.OrigProtoHeader] = origHTTP11
		} else {
			x.H2 = true // and HTTP/2 whatever the client spoke
		}
		policy := (rl.retry != nil && rl.retry.attempts > 0) || rl.perTry > 0
		// With no policy, an idempotent request without a body (RFC 9110
		// 9.2.2) is still tried again when its connection fails before a
		// response (an endpoint going away in a rolling restart): another
		// endpoint answers it instead of the client seeing a 502.
		connOnly := !policy && httpproxy.Idempotent(r.Method) && (r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0)
		if (policy || connOnly) && httpproxy.Resendable(r.Header) {
			ok, err := readAhead(r, x)
			if err != nil {
				httpproxy.BadRequest(w, r, x, g.metrics, g.log, err)
				return
			}
			switch {
			case ok && policy:
				x.Retry = retrier
			case ok && len(x.Body) == 0:
				x.Retry = connRetrier
			}
		}
		g.fwd.ServeHTTP(w, r)
	})
}

// origHTTP11 is the Meridian-Orig-Proto value that sends a request to its
// backend over HTTP/1.1, shared by every request: no one writes a header's
// value in place (Set replaces the slice, Add appends to this full one: a
// copy), and the Forwarder removes this header before the request goes on.
var origHTTP11 = []string{"HTTP/1.1"}

// invalid answers a request of a rule without a valid backend: 500, or
// UNAVAILABLE to gRPC (the spec's answers), counted as unavailable.
func (g *Gateway) invalid(w http.ResponseWriter, r *http.Request, rl *rule, err error) {
	g.metrics.Unavailable(direction, rl.ref, "invalid_backend")
	answer(w, r, http.StatusInternalServerError, "invalid_backend", err)
}

// answer is the gateway's own answer: the HTTP status, or to a gRPC
// client a gRPC status (404: UNIMPLEMENTED, a method nothing routes; 500:
// UNAVAILABLE, as GRPCRoute's spec says of invalid backends).
func answer(w http.ResponseWriter, r *http.Request, status int, reason string, err error) {
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		httpproxy.WriteError(w, r, status, reason, err)
		return
	}
	code := "14"
	switch status {
	case http.StatusNotFound:
		code = "12"
	case http.StatusRequestHeaderFieldsTooLarge:
		code = "8" // RESOURCE_EXHAUSTED
	case 499:
		code = "1"
	}
	h := w.Header()
	h.Set(httpproxy.ErrorHeader, reason)
	h.Set("Content-Type", "application/grpc")
	h.Set("Grpc-Status", code)
	h.Set("Grpc-Message", "meridian gateway: "+reason)
	w.WriteHeader(http.StatusOK)
}

// readAheadLimit bounds the request body kept to send again.
const readAheadLimit = 64 << 10

// readAhead reads a request's body into x.Body, up to readAheadLimit, so
// that it can be sent again; ok is false for a larger one (streamed, never
// retried).
func readAhead(r *http.Request, x *httpproxy.Exchange) (ok bool, err error) {
	if r.Body == nil || r.Body == http.NoBody {
		return true, nil
	}
	buf, err := io.ReadAll(io.LimitReader(r.Body, readAheadLimit+1))
	if err != nil {
		return false, err
	}
	if len(buf) > readAheadLimit {
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
		return false, nil
	}
	x.Body = buf
	return true, nil
}

// retryLoop is a rule's retries: its attempts, codes and backoff, and its
// per-try timeout (Rule.timeouts.backend_request).
type retryLoop struct {
	g    *Gateway
	rule *rule
	// connAttempts: with no retry policy, the tries again after a
	// connection error, or a meshed backend's proxy's answer that its
	// application is unreachable (never after the application's response).
	connAttempts int
}

// connRetryBackoff is the wait before the first retry without a policy.
const connRetryBackoff = 100 * time.Millisecond

// connErrorRetries is how many times a request with no retry policy is
// tried again after connection errors (idempotent, bodiless requests only).
const connErrorRetries = 2

// verificationFailed: a TLS handshake refused a certificate, which trying
// again will not change (connection-error retries skip it).
func verificationFailed(err error) bool {
	var cv *tls.CertificateVerificationError
	var alert tls.AlertError
	return errors.As(err, &cv) || errors.As(err, &alert)
}

func (l *retryLoop) retry(r *http.Request, x *httpproxy.Exchange, a httpproxy.Attempts) (*http.Response, error) {
	rl := l.rule
	// Without a policy the tries wait a little (connRetryBackoff, then
	// twice that): an endpoint set mid-rollout, every endpoint briefly in
	// connect backoff or the destination's update still on its way, is
	// fixed by time, not by trying again at once.
	attempts, backoff := l.connAttempts, connRetryBackoff
	if rl.retry != nil {
		attempts, backoff = rl.retry.attempts, rl.retry.backoff
	}
	for try := 0; ; try++ {
		if x.Body != nil {
			r.Body = io.NopCloser(bytes.NewReader(x.Body))
			r.ContentLength = int64(len(x.Body))
		}
		// This try's timeout bounds the wait for its response's headers.
		// A try that fails ends its context; the one passed on keeps it
		// until the request ends (it is its parent's).
		tr, cancel := r, context.CancelCauseFunc(func(error) {})
		var timer *time.Timer
		if rl.perTry > 0 {
			var ctx context.Context
			ctx, cancel = context.WithCancelCause(r.Context())
			timer = time.AfterFunc(rl.perTry, func() { cancel(httpproxy.ErrRouteTimeout) })
			tr = r.WithContext(ctx)
		}
		resp, err := a.Send(tr, x)
		if timer != nil {
			timer.Stop()
		}
		if err != nil && context.Cause(tr.Context()) == httpproxy.ErrRouteTimeout && r.Context().Err() == nil {
			err = httpproxy.ErrRouteTimeout // this try's timeout
		}
		last := try >= attempts || r.Context().Err() != nil
		if err != nil {
			// A connection error (refused, reset before a response) or this
			// try's timeout: retried while attempts remain.
			cancel(nil)
			if last || errors.Is(err, context.Canceled) || (rl.retry == nil && verificationFailed(err)) {
				return nil, err
			}
		} else {
			retryable := rl.retry != nil && rl.retry.codes[resp.StatusCode] && !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/grpc")
			// A meshed backend's proxy that could not reach its application
			// (it is shutting down in a rolling restart) is a connection
			// failure one hop further: the request never got there.
			retryable = retryable || (rl.retry == nil && l.connAttempts > 0 && httpproxy.PeerFailed(resp))
			if !retryable || last {
				if x.Timeout != nil {
					x.Timeout.Stop()
				}
				return resp, nil
			}
			l.g.metrics.ResponseDone(x.Labels, metrics.Response{Status: resp.StatusCode, Latency: time.Since(x.Start)})
			a.Discard(x, resp)
			cancel(nil)
		}
		l.g.metrics.Retry(x.Labels, "retried")
		if backoff > 0 {
			wait := backoff
			if rl.retry == nil {
				wait = backoff * time.Duration(try+1)
			}
			select {
			case <-time.After(wait):
			case <-r.Context().Done():
				return nil, context.Cause(r.Context())
			}
		}
	}
}
