package httpproxy

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/meridian-mesh/meridian/proxy/httpproxy/h1client"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/h2client"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/internal/h1head"
	"github.com/meridian-mesh/meridian/proxy/outbound/connect"
)

// How much an HTTP/2 peer may send the proxy before the proxy reads it
// (flow-control windows). Go's defaults let an upstream push 4 MiB per
// stream and 1 GiB per connection ahead of a client that stopped reading:
// 500 such streams took a proxy to 2 GB. A stream's window bounds its
// throughput to window/RTT (256 KiB at a 0.5 ms cluster RTT: 500 MiB/s);
// the connection's bounds what all its streams hold together, so at most
// 16 stalled streams with full windows hold up the others of their
// connection (Envoy's edge best practice is 64 KiB and 1 MiB; these are
// larger for throughput inside a cluster).
const (
	DefaultH2StreamWindow     = 256 << 10
	DefaultH2ConnectionWindow = 4 << 20
)

// DialFunc opens a transport connection to an endpoint.
type DialFunc func(ctx context.Context, addr string) (net.Conn, error)

// DialError marks a failure to connect, which is always safe to retry on
// another endpoint because nothing was sent. It is connect.DialError, so
// that the opaque path's connect loop and this one agree on it.
type DialError = connect.DialError

// Upstream is one endpoint's connection pools: keep-alive HTTP/1 and
// multiplexed HTTP/2 (prior knowledge). A request keeps the protocol its
// client used unless the endpoint is known to speak HTTP/2.
type Upstream struct {
	Addr   string
	H2Only bool // the destination says the endpoint speaks h2
	// h1c carries HTTP/1 requests on its caller's goroutine; h1, net/http's
	// Transport, the few it leaves to it (Expect: 100-continue, upgrades).
	// h2 writes HTTP/2 requests on their caller's goroutine too.
	h1c  *h1client.Client
	h1   *http.Transport
	h2   *h2client.Client
	dial DialFunc
}

// pool is a connection pool that transportFor picks.
type pool interface {
	http.RoundTripper
	CloseIdleConnections()
}

type dialProtocolKey struct{}

// DialProtocol tells a DialFunc which protocol the connection it opens will
// carry, as an ALPN name: "h2" or "http/1.1" (mTLS offers it to the peer).
func DialProtocol(ctx context.Context) string {
	p, _ := ctx.Value(dialProtocolKey{}).(string)
	return p
}

// NewUpstream builds the pools for addr. dial wraps connections (metrics, mTLS).
func NewUpstream(addr string, h2only bool, dial DialFunc) *Upstream {
	dialFor := func(proto string) func(ctx context.Context, _, _ string) (net.Conn, error) {
		return func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, err := dial(context.WithValue(ctx, dialProtocolKey{}, proto), addr)
			if err != nil {
				return nil, &DialError{Addr: addr, Err: err}
			}
			return c, nil
		}
	}
	base := func() *http.Transport {
		return &http.Transport{
			Proxy:                 nil,  // a sidecar never chains to an environment proxy
			DisableCompression:    true, // pass encodings through untouched
			MaxIdleConns:          0,
			MaxIdleConnsPerHost:   256, // the default of 2 churns connections under load
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: 0, // per-route timeouts come from profiles, not here
			ExpectContinueTimeout: time.Second,
			// Go's default 4 KiB: bufio only holds headers and small
			// writes; bodies are copied in 32 KiB chunks that bypass it.
			// 16 KiB each cost 24 KiB more per HTTP/1 request in flight.
			WriteBufferSize: 4 << 10,
			ReadBufferSize:  4 << 10,
		}
	}
	h1 := base()
	h1.DialContext = dialFor("http/1.1")
	h1.Protocols = new(http.Protocols)
	h1.Protocols.SetHTTP1(true)
	h2Dial := dialFor("h2")
	h2 := h2client.New(h2client.Options{
		Dial:         func(ctx context.Context) (net.Conn, error) { return h2Dial(ctx, "", "") },
		StreamWindow: DefaultH2StreamWindow,
		ConnWindow:   DefaultH2ConnectionWindow,
		IdleTimeout:  h1.IdleConnTimeout,
		// Keep a dead peer from holding streams forever.
		SendPingTimeout:       10 * time.Second,
		PingTimeout:           5 * time.Second,
		ExpectContinueTimeout: h1.ExpectContinueTimeout,
	})
	h1cDial := dialFor("http/1.1")
	h1c := h1client.New(h1client.Options{
		Dial:        func(ctx context.Context) (net.Conn, error) { return h1cDial(ctx, "", "") },
		MaxIdle:     h1.MaxIdleConnsPerHost,
		IdleTimeout: h1.IdleConnTimeout,
	})
	return &Upstream{Addr: addr, H2Only: h2only, h1c: h1c, h1: h1, h2: h2, dial: dial}
}

// DialHTTP1 opens a connection to the endpoint for HTTP/1.1 as the pools
// do (metered, mTLS offering http/1.1 to a meshed one), for a caller that
// serves it itself (the gateway's event loops).
func (u *Upstream) DialHTTP1(ctx context.Context) (net.Conn, error) {
	c, err := u.dial(context.WithValue(ctx, dialProtocolKey{}, "http/1.1"), u.Addr)
	if err != nil {
		return nil, &DialError{Addr: u.Addr, Err: err}
	}
	return c, nil
}

// DialH2 opens a connection to the endpoint for HTTP/2 as the pools do
// (metered, mTLS offering h2 to a meshed one), for a caller that serves it
// itself (the event loops' HTTP/2 relays).
func (u *Upstream) DialH2(ctx context.Context) (net.Conn, error) {
	c, err := u.dial(context.WithValue(ctx, dialProtocolKey{}, "h2"), u.Addr)
	if err != nil {
		return nil, &DialError{Addr: u.Addr, Err: err}
	}
	return c, nil
}

// SetH2Windows replaces the HTTP/2 receive windows (DefaultH2StreamWindow,
// DefaultH2ConnectionWindow) for responses from this endpoint; 0 keeps a
// default. Call it before the first request.
func (u *Upstream) SetH2Windows(stream, conn int) {
	u.h2.SetWindows(stream, conn)
}

// transportFor picks the pool for a request: HTTP/1 when the client spoke
// it (origH1: a peer proxy said so), HTTP/2 when the client did or when the
// endpoint is a meshed proxy, which multiplexes HTTP/1 requests over HTTP/2.
// upgraded reports an HTTP/1 request carried over HTTP/2, which the peer
// must be told about (OrigProtoHeader).
//
// h2 says the backend speaks HTTP/2 with prior knowledge (Exchange.H2: a
// gateway's H2C backend): an HTTP/1 request goes over HTTP/2 as itself, no
// OrigProtoHeader (the endpoint, or the application behind its proxy,
// wants HTTP/2), except an upgrade or a request waiting for 100 Continue,
// which only HTTP/1.1 carries here.
func (u *Upstream) transportFor(r *http.Request, origH1, h2 bool) (t pool, upgraded bool) {
	switch {
	case origH1:
		return u.h1For(r), false
	case r.ProtoMajor == 2:
		return u.h2, false
	case h2 && Resendable(r.Header):
		return u.h2, false
	case u.H2Only && h1head.Get(r.Header, "Upgrade") == "":
		return u.h2, true
	}
	return u.h1For(r), false
}

// h1For picks the HTTP/1 pool: net/http's Transport for what h1client
// leaves to it (it waits for 100 Continue, and gives a 101 a writable body).
func (u *Upstream) h1For(r *http.Request) pool {
	if !Resendable(r.Header) {
		return u.h1
	}
	return u.h1c
}

// Close drops idle connections; requests in flight finish on theirs.
func (u *Upstream) Close() {
	u.h1c.CloseIdleConnections()
	u.h1.CloseIdleConnections()
	u.h2.CloseIdleConnections()
}
