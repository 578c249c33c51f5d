// Package route routes a request: a Router names its Target, and the
// target's profile names its route. Both go in the request's exchange for
// the middlewares after it (split, timeout, retry) and the forwarder.
package route

import (
	"context"
	"errors"
	"net/http"

	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/metrics"
	"github.com/meridian-mesh/meridian/proxy/profile"
)

// Router maps a request to its target. A request it cannot route gets an
// error, a *httpproxy.RouteError to choose the answer (else 502, "route").
type Router interface {
	Route(r *http.Request) (*httpproxy.Target, error)
}

// Options configure routing.
type Options struct {
	Router Router
	// Direction is the metrics' direction label.
	Direction string
	// Metrics counts the requests that could not be routed
	// (endpoint_unavailable_total, or request_client_error_total when the
	// client went away meanwhile).
	Metrics *metrics.Registry
}

// New returns the middleware.
func New(o Options) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			x, r := httpproxy.ExchangeFor(w, r, o.Direction)
			t, err := o.Router.Route(r)
			if err != nil {
				refuse(w, r, o, err)
				return
			}
			x.SetTarget(t)
			var prof *profile.Profile
			if t.Profile != nil {
				prof = t.Profile()
			}
			x.Profile = prof
			if x.Probe != nil && x.Probe(r) {
				x.Labels.Route = metrics.RouteProbe // unless a profile route matches
			}
			if prof != nil {
				if x.Route = prof.Match(r); x.Route != nil {
					x.Labels.Route = x.Route.Name
				}
			}
			next.ServeHTTP(w, r)
		})
	}
}

// refuse answers and counts a request the router refused.
func refuse(w http.ResponseWriter, r *http.Request, o Options, err error) {
	var re *httpproxy.RouteError
	if !errors.As(err, &re) {
		re = &httpproxy.RouteError{Status: http.StatusBadGateway, Reason: "route", Err: err}
	}
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The client went away while its destination was resolved:
		// a cancellation, not an unavailable destination.
		re = &httpproxy.RouteError{Status: 499, Reason: "canceled", Authority: re.Authority, Err: err}
		o.Metrics.ClientError(o.Direction, authority(re, r), re.Reason)
	} else {
		o.Metrics.Unavailable(o.Direction, authority(re, r), re.Reason)
	}
	httpproxy.WriteError(w, r, re.Status, re.Reason, err)
}

// authority is the authority label of a request that was not routed: the
// router's canonical form when it got that far, else Host made canonical
// (default port 80) when it can be.
func authority(re *httpproxy.RouteError, r *http.Request) string {
	if re.Authority != "" {
		return re.Authority
	}
	if a, err := discover.CanonicalAuthority(r.Host, 80); err == nil {
		return a
	}
	return r.Host
}
