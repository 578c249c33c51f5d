// Package adminmux is the admin endpoints every Meridian process serves the
// same way, the proxy's and the controller's: /metrics for Prometheus,
// /ready for the kubelet's readiness probe, /live for liveness.
package adminmux

import "net/http"

// New returns a mux serving GET /metrics with metrics, GET /live (always
// 200 "live"), and GET /ready: 200 "ready" when ready returns nil, else 503
// with the error's text, which says what is missing. Callers add their own
// endpoints to the mux.
func New(metrics http.Handler, ready func() error) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("live\n"))
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	return mux
}
