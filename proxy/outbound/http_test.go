package outbound

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/metrics"
	"github.com/meridian-mesh/meridian/proxy/middleware/route"
	"github.com/meridian-mesh/meridian/proxy/outbound/connect"
	"github.com/meridian-mesh/meridian/proxy/tlsid"
	"github.com/meridian-mesh/meridian/proxy/tlsid/tlsidtest"
)

// hostRouter routes by Host through a Cache, as a gateway would: no
// sidecar, only the cache and the forwarder.
type hostRouter struct{ c *Cache }

func (r hostRouter) Route(req *http.Request) (*httpproxy.Target, error) {
	d, err := r.c.Get(req.Context(), req.Host)
	if err != nil {
		return nil, &httpproxy.RouteError{Status: http.StatusServiceUnavailable, Reason: "resolve", Err: err}
	}
	return d.Target(), nil
}

// gateway is the route middleware over hostRouter in front of the
// forwarder: the smallest chain that reaches a Dest.
func gateway(c *Cache, reg *metrics.Registry) http.Handler {
	fwd := httpproxy.New(httpproxy.Options{Direction: "outbound", LabelTargetTLS: true, Metrics: reg, Log: slog.New(slog.DiscardHandler)})
	return route.New(route.Options{Router: hostRouter{c}, Direction: "outbound", Metrics: reg})(fwd)
}

// meshedHTTP serves HTTP over mTLS with id, answering with the protocol,
// the client's SPIFFE ID and the Meridian-Orig-Proto header it got.
func meshedHTTP(t *testing.T, id *tlsid.Identity) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{TLSConfig: id.ServerConfig(), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer := ""
		if r.TLS != nil {
			if pid, ok := tlsid.PeerID(*r.TLS); ok {
				peer = pid.String()
			}
		}
		fmt.Fprintf(w, "%s %s %s", r.Proto, peer, r.Header.Get(httpproxy.OrigProtoHeader))
	})}
	done := make(chan struct{})
	go func() { defer close(done); srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().String()
}

// TestHTTPThroughTarget forwards HTTP requests with httpproxy to a Dest's
// Target: plaintext to an unmeshed endpoint, and, to a meshed one, over
// mTLS, HTTP/1 staying HTTP/1 (no Meridian-Orig-Proto); a new connection
// to it resumes the first one's TLS session.
func TestHTTPThroughTarget(t *testing.T) {
	svc := tlsidtest.Start(t, time.Hour)
	client := svc.Identity(t, "gw", "gateway")
	server := svc.Identity(t, "ns", "web")
	meshed := meshedHTTP(t, server)
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s plain", r.Proto)
	}))
	defer plain.Close()
	r := newResolver(t,
		dest("web.ns:80", discover.Endpoint{Addr: meshed, Identity: tlsidtest.ID("ns", "web").String()}),
		dest("legacy.ns:80", discover.Endpoint{Addr: plain.Listener.Addr().String()}),
	)
	c := New(Options{Resolver: r, Identity: client})
	defer c.Close()
	reg := metrics.New()
	fwd := httptest.NewServer(gateway(c, reg))
	defer fwd.Close()

	for _, tc := range []struct {
		host, want string
	}{
		{"web.ns:80", "HTTP/1.1 " + tlsidtest.ID("gw", "gateway").String() + " "},
		{"legacy.ns:80", "HTTP/1.1 plain"},
	} {
		req, _ := http.NewRequest("GET", fwd.URL+"/", nil)
		req.Host = tc.host
		resp, err := fwd.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != tc.want {
			t.Errorf("%s: %d %q, want 200 %q", tc.host, resp.StatusCode, body, tc.want)
		}
	}
	if n := c.Handshakes(); n != 1 {
		t.Errorf("Handshakes() = %d, want 1", n)
	}
	// A new connection (the pool emptied) resumes the session.
	d, err := c.Get(context.Background(), "web.ns:80")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range d.Target().Balancer.Endpoints() {
		e.Value().Close()
	}
	req, _ := http.NewRequest("GET", fwd.URL+"/", nil)
	req.Host = "web.ns:80"
	resp, err := fwd.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if n, r := c.Handshakes(), c.Resumed(); n != 2 || r != 1 {
		t.Errorf("after the pool emptied: %d handshakes, %d resumed; want 2 and 1", n, r)
	}
}

// TestHTTPConnectReasons: httpproxy answers with the reasons connect
// names (Meridian-Proxy-Error), the ones the opaque path counts.
func TestHTTPConnectReasons(t *testing.T) {
	r := newResolver(t,
		dest("empty:80"),
		dest("down:80", discover.Endpoint{Addr: refusedAddr(t)}, discover.Endpoint{Addr: refusedAddr(t)},
			discover.Endpoint{Addr: refusedAddr(t)}, discover.Endpoint{Addr: refusedAddr(t)}),
	)
	c := New(Options{Resolver: r})
	defer c.Close()
	fwd := httptest.NewServer(gateway(c, metrics.New()))
	defer fwd.Close()
	for _, tc := range []struct {
		host   string
		status int
		reason string
	}{
		{"empty:80", 503, "no_endpoints"},
		{"down:80", 503, "connect"},
	} {
		req, _ := http.NewRequest("GET", fwd.URL+"/", nil)
		req.Host = tc.host
		resp, err := fwd.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status || resp.Header.Get(httpproxy.ErrorHeader) != tc.reason {
			t.Errorf("%s: %d %q, want %d %q", tc.host, resp.StatusCode, resp.Header.Get(httpproxy.ErrorHeader), tc.status, tc.reason)
		}
	}
	// The opaque path names the same failures the same way.
	d, _ := c.Get(context.Background(), "empty:80")
	_, err := d.Dial(context.Background())
	var ue *connect.UnavailableError
	if !errors.As(err, &ue) || ue.Reason != "no_endpoints" || !errors.Is(err, balance.ErrNoEndpoints) {
		t.Errorf("Dial(empty) = %v, want an UnavailableError no_endpoints", err)
	}
}
