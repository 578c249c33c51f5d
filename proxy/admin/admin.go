// Package admin serves the proxy's operational endpoints: /metrics for
// Prometheus, /ready for the kubelet's readiness probe and /live for liveness.
package admin

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/meridian-mesh/meridian/internal/adminmux"
	"github.com/meridian-mesh/meridian/proxy/listen"
)

// Server is a running admin endpoint.
type Server struct {
	ln  net.Listener
	srv *http.Server
	mux *http.ServeMux
	tls *tls.Config // set by Protect: mTLS for meshed clients
}

// Handle adds an endpoint; call it before Serve.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Listen binds addr (comma-separated addresses, see proxy/listen). ready
// reports whether the proxy can serve traffic.
func Listen(addr string, log *slog.Logger, metrics http.Handler, ready func() bool) (*Server, error) {
	ln, err := listen.Listen(addr, log.With("listener", "admin"))
	if err != nil {
		return nil, err
	}
	mux := adminmux.New(metrics, func() error {
		if !ready() {
			return errNotReady
		}
		return nil
	})
	return &Server{ln: ln, mux: mux, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}, nil
}

var errNotReady = errors.New("not ready")

// Addr is the first bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Addrs are all the bound addresses.
func (s *Server) Addrs() []net.Addr { return listen.Addrs(s.ln) }

// Serve blocks until Close.
func (s *Server) Serve() error {
	if s.tls != nil {
		return s.serveDetecting()
	}
	return s.srv.Serve(s.ln)
}

// Close stops the server.
func (s *Server) Close() error {
	err := s.srv.Close()
	s.ln.Close() // the detecting accept loop's listener
	return err
}
