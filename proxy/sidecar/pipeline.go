package sidecar

import (
	"net/http"

	"github.com/meridian-mesh/meridian/proxy/authz"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	authzmw "github.com/meridian-mesh/meridian/proxy/middleware/authz"
	"github.com/meridian-mesh/meridian/proxy/middleware/inflight"
	"github.com/meridian-mesh/meridian/proxy/middleware/retry"
	"github.com/meridian-mesh/meridian/proxy/middleware/route"
	"github.com/meridian-mesh/meridian/proxy/middleware/split"
	"github.com/meridian-mesh/meridian/proxy/middleware/timeout"
)

// The request pipelines of the two sides, each in the order its requests
// go through it (see proxy/middleware).

// outboundHandler: shed, route by authority (loops refused), pick a split
// backend, arm the route's timeout, read ahead a retryable body, forward
// (tls labels from the target: this side originates mTLS).
func (p *Proxy) outboundHandler() http.Handler {
	const dir = "outbound"
	return chain(
		inflight.New(inflight.Options{Direction: dir, Max: int64(max(p.cfg.MaxInFlight, 0)), Metrics: p.metrics, Count: &p.out.inFlight}),
		route.New(route.Options{Direction: dir, Router: outboundRouter{p}, Metrics: p.metrics}),
		split.New(split.Options{Direction: dir, Backends: outboundRouter{p}, Log: p.log, Metrics: p.metrics}),
		timeout.New(timeout.Options{Direction: dir}),
		retry.New(retry.Options{Direction: dir, Metrics: p.metrics, Log: p.log}),
	)(httpproxy.New(httpproxy.Options{Direction: dir, LabelTargetTLS: true, Metrics: p.metrics, Log: p.log}))
}

// inboundHandler: shed, apply the inbound policy, route to the application,
// forward (a peer proxy's Meridian-Orig-Proto and Meridian-Expect
// honoured). Inbound targets have no profile, so neither splits, timeouts
// nor retries: those middlewares would never act here.
func (p *Proxy) inboundHandler() http.Handler {
	const dir = "inbound"
	return chain(
		inflight.New(inflight.Options{Direction: dir, Max: int64(max(p.cfg.MaxInFlight, 0)), Metrics: p.metrics, Count: &p.in.inFlight}),
		authzmw.New(authzmw.Options{Direction: dir, Policy: p.cfg.Authz, Client: p.inboundClient, Metrics: p.metrics}),
		route.New(route.Options{Direction: dir, Router: inboundRouter{p}, Metrics: p.metrics}),
	)(httpproxy.New(httpproxy.Options{Direction: dir, AcceptPeerHeaders: true, Metrics: p.metrics, Log: p.log}))
}

// inboundClient is who opened an inbound request's connection, and the
// application port it is for, for the policy.
func (p *Proxy) inboundClient(r *http.Request) (authz.Client, uint16, bool) {
	a, _ := r.Context().Value(acceptedKey{}).(*accepted)
	if a == nil {
		return authz.Client{}, 0, false
	}
	return client(a), p.inboundPort(a), true
}

// chain composes middlewares, the first outermost: chain(a, b)(h) serves
// a request with a, then b, then h.
func chain(mws ...func(http.Handler) http.Handler) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		for i := len(mws) - 1; i >= 0; i-- {
			h = mws[i](h)
		}
		return h
	}
}
