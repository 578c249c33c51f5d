// Package h2client is an HTTP/2 client for one endpoint: a pool of
// multiplexed connections and an http.RoundTripper that writes each request
// on its caller's goroutine. See README.md.
package h2client

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// Buffered is implemented by a body that can tell, without blocking, how
// many bytes a Read would return at once and whether the body's end is in
// with them (a Read then returns them with io.EOF). The client's response
// bodies implement it, and it looks for it on request bodies (h2server's
// implement it): a request body whose end is already in leaves with its
// HEADERS in one write.
type Buffered interface {
	Buffered() (n int, eof bool)
}

// Options configure a Client. Zero values take the defaults named.
type Options struct {
	// Dial opens a connection to the endpoint: TCP for h2c with prior
	// knowledge, or TLS that negotiated h2. Its error is returned as it is.
	Dial func(ctx context.Context) (net.Conn, error)
	// StreamWindow and ConnWindow bound what the peer may send ahead of
	// the reader, per stream and per connection (4 MiB and 1 GiB, Go's).
	StreamWindow, ConnWindow int
	// IdleTimeout closes a connection without streams for that long
	// (90 s; negative: never).
	IdleTimeout time.Duration
	// SendPingTimeout: a connection that received nothing for that long
	// is sent a PING (0: never); PingTimeout: without its answer that
	// soon the connection is closed (15 s, Go's).
	SendPingTimeout, PingTimeout time.Duration
	// ExpectContinueTimeout: how long a request with Expect: 100-continue
	// waits for the 100 before it sends its body (1 s).
	ExpectContinueTimeout time.Duration
	// MaxHeaderListSize bounds a response's header block (10 MiB, Go's).
	MaxHeaderListSize uint32
}

// Client is one endpoint's HTTP/2 connections.
type Client struct {
	o Options

	mu    sync.Mutex
	conns []*conn
	dial  *dialCall // the dial in progress, shared by those waiting for it
}

type dialCall struct {
	done chan struct{}
	cc   *conn
	err  error
}

// New returns a client; Options.Dial is required.
func New(o Options) *Client {
	if o.StreamWindow <= 0 {
		o.StreamWindow = 4 << 20
	}
	if o.StreamWindow > maxWindow {
		o.StreamWindow = maxWindow
	}
	if o.ConnWindow <= 0 {
		o.ConnWindow = 1 << 30
	}
	if o.ConnWindow > maxWindow-initialWindow {
		o.ConnWindow = maxWindow - initialWindow
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = 90 * time.Second
	}
	if o.PingTimeout <= 0 {
		o.PingTimeout = 15 * time.Second
	}
	if o.ExpectContinueTimeout <= 0 {
		o.ExpectContinueTimeout = time.Second
	}
	if o.MaxHeaderListSize == 0 {
		o.MaxHeaderListSize = 10 << 20
	}
	return &Client{o: o}
}

// SetWindows changes the receive windows of connections dialled from now
// on; 0 keeps a value.
func (c *Client) SetWindows(stream, conn int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if stream > 0 {
		c.o.StreamWindow = min(stream, maxWindow)
	}
	if conn > 0 {
		c.o.ConnWindow = min(conn, maxWindow-initialWindow)
	}
}

// RoundTrip sends req on a connection of the pool and returns the
// response once its headers are in. A request refused unprocessed
// (REFUSED_STREAM, above a GOAWAY's last stream, a connection that died
// before the request was written) is sent again, on another connection,
// when its body was not read (or GetBody gives another), as Go's
// transport does.
func (c *Client) RoundTrip(req *http.Request) (*http.Response, error) {
	for retry := 0; ; retry++ {
		if retry > 1 {
			// Go's backoff after the first retry: 1 s, 2 s, ... with jitter.
			d := time.Second << (retry - 2)
			d += time.Duration(rand.Int64N(int64(d / 10)))
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-req.Context().Done():
				t.Stop()
				closeBody(req)
				return nil, context.Cause(req.Context())
			}
		}
		cc, err := c.getConn(req.Context())
		if err != nil {
			closeBody(req)
			return nil, err
		}
		resp, touched, replay, err := cc.roundTrip(req)
		if err == nil {
			return resp, nil
		}
		if retry >= 6 || !canRetry(err) {
			return nil, err
		}
		if touched && replay != nil {
			// The body left whole with the HEADERS: send its bytes again.
			r := *req
			r.Body = replay
			req = &r
		} else if touched {
			if req.GetBody == nil {
				return nil, err
			}
			body, gerr := req.GetBody()
			if gerr != nil {
				return nil, err
			}
			r := *req
			r.Body = body
			req = &r
		}
	}
}

// getConn reserves a stream on a connection that can take one, or dials
// one. Go's transport opens another connection when all are at the peer's
// SETTINGS_MAX_CONCURRENT_STREAMS; so does this.
func (c *Client) getConn(ctx context.Context) (*conn, error) {
	for {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		c.mu.Lock()
		for _, cc := range c.conns {
			if cc.reserve() {
				c.mu.Unlock()
				return cc, nil
			}
		}
		d := c.dial
		if d == nil {
			d = &dialCall{done: make(chan struct{})}
			c.dial = d
			o := c.o
			// The dial outlives a caller that gives up: others may wait
			// for it (Go's transport dials the same way).
			go c.dialConn(context.WithoutCancel(ctx), d, o)
		}
		c.mu.Unlock()
		select {
		case <-d.done:
			if d.err != nil {
				return nil, d.err
			}
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

func (c *Client) dialConn(ctx context.Context, d *dialCall, o Options) {
	nc, err := o.Dial(ctx)
	var cc *conn
	if err == nil {
		cc, err = newConn(c, nc, o)
	}
	c.mu.Lock()
	d.cc, d.err = cc, err
	if cc != nil {
		c.conns = append(c.conns, cc)
	}
	c.dial = nil
	c.mu.Unlock()
	close(d.done)
}

// forget removes a closed or draining connection from the pool.
func (c *Client) forget(cc *conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, x := range c.conns {
		if x == cc {
			c.conns = slices.Delete(c.conns, i, i+1)
			return
		}
	}
}

// CloseIdleConnections closes the connections without streams (GOAWAY
// first); those with streams in flight finish them.
func (c *Client) CloseIdleConnections() {
	c.mu.Lock()
	conns := append([]*conn(nil), c.conns...)
	c.mu.Unlock()
	for _, cc := range conns {
		cc.closeIfIdle()
	}
}

// Errors a request fails with when it was not processed: RoundTrip sends
// it again; they reach the caller only when it cannot.
var (
	errConnUnusable = errors.New("h2client: connection not usable")
	errGotGoAway    = errors.New("h2client: the server sent GOAWAY before it processed the stream")
)

// canRetry reports an error that means the server did not process the
// request (Go's canRetryError).
func canRetry(err error) bool {
	if err == errConnUnusable || err == errGotGoAway {
		return true
	}
	var se http2.StreamError
	if errors.As(err, &se) {
		return se.Code == http2.ErrCodeRefusedStream
	}
	return false
}

// IsRetryable reports whether err says that the server did not process the
// request, so that it is safe to send again elsewhere.
func IsRetryable(err error) bool { return canRetry(err) }

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}
