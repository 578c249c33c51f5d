// Package authz refuses the requests an inbound policy does not allow, with
// 403 (gRPC PERMISSION_DENIED). The policy itself is proxy/authz's; this is
// where it meets HTTP requests.
package authz

import (
	"fmt"
	"net/http"

	policy "github.com/meridian-mesh/meridian/proxy/authz"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/metrics"
)

// Options configure the check.
type Options struct {
	// Policy says who may send a request to which port and path.
	Policy policy.Config
	// Client tells who opened the request's connection and the application
	// port the request is for; ok false: not known, and not checked.
	Client func(r *http.Request) (c policy.Client, port uint16, ok bool)
	// Direction is the metrics' direction label (of the exchange).
	Direction string
	// Metrics counts the refusals in inbound_authz_deny_total{protocol="http"},
	// labelled with the connection's tls and client ID (the exchange's
	// labels, which are the connection's until the forwarder runs).
	Metrics *metrics.Registry
}

// New returns the middleware.
func New(o Options) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if c, port, ok := o.Client(r); ok && !o.Policy.HTTP(c, port, r.URL.Path) {
				x, r := httpproxy.ExchangeFor(w, r, o.Direction)
				o.Metrics.AuthzDenied("http", o.Policy.Name(), port, x.Labels.TLS, x.Labels.ClientID)
				httpproxy.WriteError(w, r, http.StatusForbidden, "unauthorized",
					fmt.Errorf("unauthorized: the default inbound policy %s refuses this client", o.Policy.Name()))
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}
