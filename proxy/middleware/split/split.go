// Package split sends a request to a backend of its target. A request an
// HTTP route matched (a GAMMA rule, a Rollout's header route: the route
// owns its split) goes to that route's backend, picked by weight, through
// the route's and the backend's header filters. Any other request goes to
// a traffic-split backend of the target's profile, picked by weight; such
// a backend that cannot be resolved is reported, never an outage: the
// target itself (the apex) serves the request.
package split

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/metrics"
)

// Backends resolves a backend authority. The backend's own profile's
// splits are not applied again.
type Backends interface {
	Backend(ctx context.Context, authority string) (*httpproxy.Target, error)
}

// Options configure the split.
type Options struct {
	Backends Backends
	// Direction is the direction label of the exchange, when this
	// middleware starts it.
	Direction string
	Log       *slog.Logger
	// Metrics counts the requests of an HTTP route answered here (an
	// invalid backend: endpoint_unavailable_total); nil: not counted.
	Metrics *metrics.Registry
}

// New returns the middleware. It acts on routed requests (middleware/route
// before it) whose route owns its split or whose profile has splits.
func New(o Options) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			x, r := httpproxy.ExchangeFor(w, r, o.Direction)
			if rt := x.Route; rt.OwnsSplit() {
				routed(o, next, x, w, r)
				return
			}
			if s := x.Profile.Pick(); s != "" {
				bt, err := o.Backends.Backend(r.Context(), s)
				if err != nil {
					o.Log.Warn("traffic split backend unavailable; using the apex", "authority", x.Target.Authority, "backend", s, "err", err)
				} else {
					x.Backend = bt
				}
			}
			next.ServeHTTP(w, r)
		})
	}
}

// routed serves a request of an HTTP route: its backend by weight (none:
// the apex itself), through the route's then the backend's filters. An
// invalid backend, or one the destination API does not know, is answered
// 500 as the Gateway API says; a backend that cannot be resolved now, 503.
func routed(o Options, next http.Handler, x *httpproxy.Exchange, w http.ResponseWriter, r *http.Request) {
	rt := x.Route
	b, ok := rt.Pick()
	h := next
	switch {
	case rt.Status != 0:
		h = answer(o, x, rt.Status, "no_route", fmt.Errorf("no rule of the routes of %s matches the request", x.Target.Authority))
	case !ok:
		h = answer(o, x, http.StatusInternalServerError, "invalid_backend", fmt.Errorf("route %s has no backend with a weight", rt.Name))
	case b == nil:
	case b.Authority == "":
		h = answer(o, x, http.StatusInternalServerError, "invalid_backend", fmt.Errorf("route %s: the backend is invalid (see the route's status)", rt.Name))
	default:
		bt, err := o.Backends.Backend(r.Context(), b.Authority)
		switch {
		case err == nil:
			x.Backend = bt
			if b.Filters != nil {
				h = b.Filters(h)
			}
		case errors.Is(err, discover.ErrNotFound):
			h = answer(o, x, http.StatusInternalServerError, "invalid_backend", fmt.Errorf("route %s: backend %s: %w", rt.Name, b.Authority, err))
		case r.Context().Err() != nil:
			h = answer(o, x, 499, "canceled", err)
		default:
			h = answer(o, x, http.StatusServiceUnavailable, "resolve", fmt.Errorf("route %s: backend %s: %w", rt.Name, b.Authority, err))
		}
	}
	if rt.Filters != nil {
		h = rt.Filters(h)
	}
	h.ServeHTTP(w, r)
}

// answer is the handler of a request the route cannot send anywhere,
// counted as the forwarder counts one it cannot send.
func answer(o Options, x *httpproxy.Exchange, status int, reason string, err error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if o.Metrics != nil {
			switch {
			case status == 499:
				o.Metrics.ClientError(o.Direction, x.Target.Authority, reason)
			case status >= 500:
				o.Metrics.Unavailable(o.Direction, x.Target.Authority, reason)
			}
		}
		if status == http.StatusNotFound && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			// A method no GRPCRoute rule routes: UNIMPLEMENTED.
			h := w.Header()
			h.Set(httpproxy.ErrorHeader, reason)
			h.Set("Content-Type", "application/grpc")
			h.Set("Grpc-Status", "12")
			h.Set("Grpc-Message", "meridian proxy: "+reason)
			w.WriteHeader(http.StatusOK)
			return
		}
		httpproxy.WriteError(w, r, status, reason, err)
	})
}
