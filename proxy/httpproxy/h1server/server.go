// Package h1server serves the HTTP/1.x requests of one accepted connection
// on the calling goroutine, with net/http's server's behaviour: its request
// parser (http.ReadRequest), the checks its server makes on top (Host,
// header fields, Expect, 505, 431), and its response writer (chunking,
// Content-Length, Content-Type sniffing, trailers, 1xx, keep-alive rules).
// What it leaves out is net/http's per-request background read (a
// goroutine, an EAGAIN read and two SetReadDeadline calls per request): a
// request's context still ends when its client goes away, but the read
// that notices it starts only once the handler has run for WatchDelay.
//
// Much of this file and response.go follows $GOROOT/src/net/http/server.go
// (BSD licence, the Go Authors) line by line, so that the bytes on the
// wire stay the same; the differential test holds it to that.
package h1server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// WatchDelay is how long a handler runs before its connection is watched
// for the client going away (a background read). Requests shorter than it
// cost no goroutine and no read; longer ones are cancelled at most this
// much later than net/http's server would cancel them.
const WatchDelay = 10 * time.Millisecond

// Server serves HTTP/1.x connections handed to ServeConn. Its fields have
// net/http.Server's meaning; set them before the first ServeConn.
type Server struct {
	// Handler serves requests; nil: http.DefaultServeMux.
	Handler http.Handler
	// ReadHeaderTimeout bounds the reading of a request's head, from the
	// connection's start or the first byte of a later request.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle for that long
	// (0: no limit, as net/http's with ReadTimeout unset).
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's line and header fields; 0:
	// http.DefaultMaxHeaderBytes. Over it: 431.
	MaxHeaderBytes int
	// ConnContext derives a connection's context from the one given to
	// ServeConn (net/http's BaseContext and ConnContext in one). The
	// context it gets carries http.ServerContextKey (this *Server, not an
	// *http.Server) and http.LocalAddrContextKey.
	ConnContext func(ctx context.Context, c net.Conn) context.Context
	// ErrorLog receives what net/http's server logs; nil: the log package.
	ErrorLog *log.Logger
	// H2C, when set, takes connections that open with the HTTP/2 preface
	// (prior knowledge): the connection it gets replays the bytes read.
	// net/http's UnencryptedHTTP2 protocol, handed elsewhere.
	H2C func(net.Conn)
	// DisableGeneralOptionsHandler passes "OPTIONS *" to Handler instead
	// of answering it with an empty 200.
	DisableGeneralOptionsHandler bool

	inShutdown atomic.Bool
	mu         sync.Mutex
	conns      map[*conn]struct{}
}

// ServeConn serves rwc's requests until the connection ends, the server
// shuts down or a handler hijacks it; the connection is closed unless
// hijacked or handed to H2C. A *tls.Conn is handshaken first if it was not
// already (ALPN is not looked at: hand only HTTP/1 connections over).
func (s *Server) ServeConn(ctx context.Context, rwc net.Conn) {
	c := &conn{server: s, rwc: rwc}
	if !s.trackConn(c, true) {
		rwc.Close()
		return
	}
	c.setState(http.StateNew)
	c.serve(ctx)
}

// Shutdown closes idle connections at once and every other one once its
// request in flight is answered, as http.Server.Shutdown does, and
// returns when none is left or ctx ends (its error then). Connections
// handed over later are closed at once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.inShutdown.Store(true)
	pollIntervalBase := time.Millisecond
	nextPollInterval := func() time.Duration {
		interval := pollIntervalBase + time.Duration(rand.Int64N(int64(pollIntervalBase/10)))
		pollIntervalBase = min(2*pollIntervalBase, 500*time.Millisecond)
		return interval
	}
	timer := time.NewTimer(nextPollInterval())
	defer timer.Stop()
	for {
		if s.closeIdleConns() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			timer.Reset(nextPollInterval())
		}
	}
}

// Close closes every connection at once.
func (s *Server) Close() error {
	s.inShutdown.Store(true)
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.rwc.Close()
		delete(s.conns, c)
	}
	return nil
}

func (s *Server) shuttingDown() bool { return s.inShutdown.Load() }
func (s *Server) doKeepAlives() bool { return !s.shuttingDown() }

func (s *Server) trackConn(c *conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.conns, c)
		return true
	}
	if s.shuttingDown() {
		return false
	}
	if s.conns == nil {
		s.conns = map[*conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	return true
}

// closeIdleConns is net/http's: a connection that has not sent its first
// request's head in 5 s counts as idle.
func (s *Server) closeIdleConns() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	quiescent := true
	for c := range s.conns {
		st, unixSec := c.getState()
		if st == http.StateNew && unixSec < time.Now().Unix()-5 {
			st = http.StateIdle
		}
		if st != http.StateIdle || unixSec == 0 {
			quiescent = false
			continue
		}
		c.rwc.Close()
		delete(s.conns, c)
	}
	return quiescent
}

func (s *Server) maxHeaderBytes() int {
	if s.MaxHeaderBytes > 0 {
		return s.MaxHeaderBytes
	}
	return http.DefaultMaxHeaderBytes
}

func (s *Server) initialReadLimitSize() int64 { return int64(s.maxHeaderBytes()) + 4096 }

func (s *Server) logf(format string, args ...any) {
	if s.ErrorLog != nil {
		s.ErrorLog.Printf(format, args...)
	} else {
		log.Printf(format, args...)
	}
}

// connValues carries the connection's context values in one allocation.
type connValues struct {
	context.Context
	c *conn
}

func (v *connValues) Value(key any) any {
	switch key {
	case http.ServerContextKey:
		return v.c.server
	case http.LocalAddrContextKey:
		return v.c.rwc.LocalAddr()
	case connKey{}:
		return v.c
	}
	return v.Context.Value(key)
}

type connKey struct{}

// AmbiguousFraming reports whether r, served by an h1server connection,
// arrived with both Content-Length and Transfer-Encoding (HTTP/1.1): the
// two framings disagree, and RFC 9112 §6.3 wants it forwarded by
// Transfer-Encoding alone and the connection closed after the response.
// http.ReadRequest drops the Content-Length before anyone sees it; the
// server sees the head and keeps the answer for the request in flight.
func AmbiguousFraming(r *http.Request) bool {
	c, _ := r.Context().Value(connKey{}).(*conn)
	if c == nil {
		return false
	}
	w := c.curReq.Load()
	return w != nil && w.ambiguous
}

var errTooLarge = errors.New("http: request too large")

// statusError is a request error answered with its status and text.
type statusError struct {
	code int
	text string
}

func (e statusError) Error() string { return http.StatusText(e.code) + ": " + e.text }

func badRequestError(e string) error { return statusError{http.StatusBadRequest, e} }

// tlsHandshake completes a TLS connection's handshake within the header
// timeout, as net/http's server does, and returns its state.
func (c *conn) tlsHandshake(ctx context.Context, tc *tls.Conn) (*tls.ConnectionState, error) {
	if d := c.server.ReadHeaderTimeout; d > 0 {
		dl := time.Now().Add(d)
		c.rwc.SetReadDeadline(dl)
		c.rwc.SetWriteDeadline(dl)
		defer func() {
			c.rwc.SetReadDeadline(time.Time{})
			c.rwc.SetWriteDeadline(time.Time{})
		}()
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("http: TLS handshake error from %s: %v", c.rwc.RemoteAddr(), err)
	}
	st := tc.ConnectionState()
	return &st, nil
}
