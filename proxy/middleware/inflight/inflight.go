// Package inflight sheds load: beyond a number of requests in flight, a
// request is refused at once instead of queueing without bound while the
// proxy or its endpoints are saturated.
package inflight

import (
	"errors"
	"net/http"
	"sync/atomic"

	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/metrics"
)

// Options configure the limit.
type Options struct {
	// Max bounds the requests (gRPC streams included) in flight at once;
	// 0: no bound (they are still counted).
	Max int64
	// Direction is the metrics' direction label.
	Direction string
	// Metrics gets the request_in_flight gauge and the shed requests.
	Metrics *metrics.Registry
	// Count, when set, is the count to share with requests served
	// elsewhere (a gateway's event loop); nil: its own.
	Count *atomic.Int64
}

// ErrMaxInFlight is the answer to a request shed because Max requests were
// in flight already.
var ErrMaxInFlight = errors.New("the proxy has its maximum of requests in flight")

// New returns the middleware. Every handler it wraps shares one count,
// exported as request_in_flight{direction}.
func New(o Options) func(http.Handler) http.Handler {
	n := o.Count
	if n == nil {
		n = new(atomic.Int64)
	}
	o.Metrics.InFlight(o.Direction, n.Load)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, r = httpproxy.ExchangeFor(w, r, o.Direction)
			if c := n.Add(1); o.Max > 0 && c > o.Max {
				n.Add(-1)
				o.Metrics.Shed(o.Direction)
				httpproxy.WriteError(w, r, http.StatusServiceUnavailable, "max_in_flight", ErrMaxInFlight)
				return
			}
			defer n.Add(-1)
			next.ServeHTTP(w, r)
		})
	}
}
