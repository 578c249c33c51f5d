// Package timeout bounds the wait for a response's headers by the route's
// timeout. The body is not bounded: a stream may last as long as it flows.
// On expiry the forwarder answers 504 (gRPC DEADLINE_EXCEEDED), reason
// "timeout", and counts it.
package timeout

import (
	"context"
	"net/http"
	"time"

	"github.com/meridian-mesh/meridian/proxy/httpproxy"
)

// Options configure the timeout.
type Options struct {
	// Direction is the direction label of the exchange, when this
	// middleware starts it.
	Direction string
}

// New returns the middleware. It acts on requests whose route
// (middleware/route) has a timeout.
func New(o Options) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			x, r := httpproxy.ExchangeFor(w, r, o.Direction)
			if x.Route != nil && x.Route.Timeout > 0 {
				ctx, cancel := context.WithCancelCause(r.Context())
				defer cancel(nil)
				// The forwarder stops it once the headers are in.
				x.Timeout = time.AfterFunc(x.Route.Timeout, func() { cancel(httpproxy.ErrRouteTimeout) })
				defer x.Timeout.Stop()
				r = r.WithContext(ctx)
			}
			next.ServeHTTP(w, r)
		})
	}
}
