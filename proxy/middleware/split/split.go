// Package split sends a request to a traffic-split backend of its target,
// picked by weight from the target's profile. A backend that cannot be
// resolved is reported, never an outage: the target itself (the apex)
// serves the request.
package split

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/meridian-mesh/meridian/proxy/httpproxy"
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
}

// New returns the middleware. It acts on routed requests (middleware/route
// before it) whose profile has splits.
func New(o Options) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			x, r := httpproxy.ExchangeFor(w, r, o.Direction)
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
