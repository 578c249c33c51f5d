// Package h2server is an HTTP/2 server for connections the proxy has
// already accepted (h2c with prior knowledge, or TLS after ALPN "h2"). It
// serves an http.Handler as net/http's HTTP/2 server does, with fewer
// goroutines and writes per request: see README.md.
package h2server

import (
	"context"
	"crypto/tls"
	"errors"
	"log"
	"net"
	"net/http"
	"sync"
	"time"
)

// Config holds a server's limits. Zero values take net/http's defaults
// (http.HTTP2Config's documentation), which are in parentheses.
type Config struct {
	// MaxConcurrentStreams is the SETTINGS_MAX_CONCURRENT_STREAMS
	// advertised to clients, and the most handlers a connection runs at
	// once (250).
	MaxConcurrentStreams int
	// MaxReadFrameSize is the largest frame the server reads, advertised
	// as SETTINGS_MAX_FRAME_SIZE (1 MiB; at least 16 KiB).
	MaxReadFrameSize int
	// MaxDecoderHeaderTableSize is the HPACK table the server decodes
	// requests' headers with, advertised as SETTINGS_HEADER_TABLE_SIZE (4 KiB).
	MaxDecoderHeaderTableSize int
	// MaxEncoderHeaderTableSize bounds the HPACK table the server encodes
	// responses with, whatever the client allows (4 KiB).
	MaxEncoderHeaderTableSize int
	// MaxReceiveBufferPerStream is how much of a request body a client
	// may send ahead of the handler's reading: the stream's flow-control
	// window (1 MiB).
	MaxReceiveBufferPerStream int
	// MaxReceiveBufferPerConnection is the same for all of a
	// connection's streams together (1 MiB).
	MaxReceiveBufferPerConnection int
	// MaxHeaderBytes bounds a request's header list, as
	// http.Server.MaxHeaderBytes (1 MiB); the advertised
	// SETTINGS_MAX_HEADER_LIST_SIZE adds 32 bytes for 10 fields, as Go does.
	MaxHeaderBytes int
	// IdleTimeout closes (GOAWAY, then close) a connection without
	// streams for this long (none when zero).
	IdleTimeout time.Duration
	// PrefaceTimeout bounds the wait for the client's connection preface
	// (10 s).
	PrefaceTimeout time.Duration
	// ErrorLog receives handler panics and connection errors (log's
	// standard logger when nil).
	ErrorLog *log.Logger
}

const (
	defaultMaxStreams  = 250
	defaultWindow      = 1 << 20
	defaultTableSize   = 4096
	defaultMaxFrame    = 1 << 20
	minMaxFrameSize    = 16 << 10
	maxMaxFrameSize    = 1<<24 - 1
	maxWindow          = 1<<31 - 1
	initialWindowSize  = 65535 // RFC 9113 6.9.2
	defaultPreface     = 10 * time.Second
	maxQueuedControl   = 10000 // control frames queued while the connection's writer is busy (Go's bound)
	maxSettingsEntries = 100
)

// goAwayTimeout is how long a connection that sent GOAWAY keeps reading
// (and discarding) before it closes: closing with unread bytes would send
// a TCP RST that can destroy the GOAWAY in flight (golang.org/issue/18701).
var goAwayTimeout = time.Second

// WithDefaults is c with every zero value replaced by its default, and
// the values bounded as the server bounds them.
func (c Config) WithDefaults() Config { return c.fill() }

func (c *Config) fill() Config {
	cfg := *c
	if cfg.MaxConcurrentStreams <= 0 {
		cfg.MaxConcurrentStreams = defaultMaxStreams
	}
	if cfg.MaxReadFrameSize <= 0 {
		cfg.MaxReadFrameSize = defaultMaxFrame
	}
	cfg.MaxReadFrameSize = min(max(cfg.MaxReadFrameSize, minMaxFrameSize), maxMaxFrameSize)
	if cfg.MaxDecoderHeaderTableSize <= 0 {
		cfg.MaxDecoderHeaderTableSize = defaultTableSize
	}
	if cfg.MaxEncoderHeaderTableSize <= 0 {
		cfg.MaxEncoderHeaderTableSize = defaultTableSize
	}
	if cfg.MaxReceiveBufferPerStream <= 0 {
		cfg.MaxReceiveBufferPerStream = defaultWindow
	}
	cfg.MaxReceiveBufferPerStream = min(cfg.MaxReceiveBufferPerStream, maxWindow)
	if cfg.MaxReceiveBufferPerConnection <= 0 {
		cfg.MaxReceiveBufferPerConnection = defaultWindow
	}
	// The connection's window starts at 65535 and is only ever raised.
	cfg.MaxReceiveBufferPerConnection = min(max(cfg.MaxReceiveBufferPerConnection, initialWindowSize), maxWindow)
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = http.DefaultMaxHeaderBytes
	}
	if cfg.PrefaceTimeout <= 0 {
		cfg.PrefaceTimeout = defaultPreface
	}
	return cfg
}

// Server serves HTTP/2 connections handed to ServeConn, and shuts them
// down together.
type Server struct {
	Config  Config
	Handler http.Handler

	mu       sync.Mutex
	conns    map[*conn]struct{}
	draining bool
	idle     chan struct{} // closed (and renewed) when conns empties
	workers  workers       // the streams' handlers run on these
}

// TLSNextProto returns the http.Server.TLSNextProto entries that hand the
// server's HTTP/2 connections to s: "h2" after a TLS handshake that chose
// it, and net/http's "unencrypted_http2" for h2c with prior knowledge
// (net/http has read the preface). The requests' context is the one
// net/http made for the connection (BaseContext, ConnContext), their
// handler the http.Server's.
func (s *Server) TLSNextProto() map[string]func(*http.Server, *tls.Conn, http.Handler) {
	serve := func(c net.Conn, h http.Handler, sawPreface bool) {
		ctx := context.Background()
		if bc, ok := h.(interface{ BaseContext() context.Context }); ok {
			ctx = bc.BaseContext()
		}
		s.ServeConnOptions(ctx, c, ConnOptions{Handler: h, SawClientPreface: sawPreface})
	}
	return map[string]func(*http.Server, *tls.Conn, http.Handler){
		"h2": func(_ *http.Server, c *tls.Conn, h http.Handler) { serve(c, h, false) },
		"unencrypted_http2": func(hs *http.Server, c *tls.Conn, h http.Handler) {
			u, ok := c.NetConn().(interface{ UnencryptedNetConn() net.Conn })
			if !ok {
				s.logf("h2server: unencrypted_http2 hand-off without its connection")
				c.Close()
				return
			}
			serve(u.UnencryptedNetConn(), h, true)
		},
	}
}

// ErrServerClosed is ServeConn's error for a connection handed over after
// Shutdown or Close began.
var ErrServerClosed = errors.New("h2server: server closed")

// ServeConn serves c, whose client is to send the HTTP/2 connection
// preface first (the bytes a protocol sniffer peeked included), until the
// connection ends; then it closes c. Requests' contexts derive from ctx
// (what http.Server's ConnContext would give), with http.ServerContextKey
// (this *Server, when ctx has none: a hand-off from net/http brings its
// own) and http.LocalAddrContextKey, as net/http's requests have them;
// handlers tell a server's request from one of their own by the first
// (httpproxy aborts a broken response with http.ErrAbortHandler only
// then). A *tls.Conn (or a conn with its ConnectionState method) gives
// https requests their Request.TLS.
func (s *Server) ServeConn(ctx context.Context, c net.Conn) error {
	return s.ServeConnOptions(ctx, c, ConnOptions{})
}

// ConnOptions are a connection's own options.
type ConnOptions struct {
	// Handler serves the connection's requests instead of Server.Handler.
	Handler http.Handler
	// SawClientPreface: the client's preface was read already (net/http's
	// "unencrypted_http2" hand-off peeks it).
	SawClientPreface bool
}

// ServeConnOptions is ServeConn with a connection's options.
func (s *Server) ServeConnOptions(ctx context.Context, c net.Conn, opts ConnOptions) error {
	if ctx.Value(http.ServerContextKey) == nil {
		ctx = context.WithValue(ctx, http.ServerContextKey, s)
	}
	if ctx.Value(http.LocalAddrContextKey) == nil {
		ctx = context.WithValue(ctx, http.LocalAddrContextKey, c.LocalAddr())
	}
	cc := newConn(s, c, ctx)
	cc.handler, cc.sawPreface = opts.Handler, opts.SawClientPreface
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		c.Close()
		return ErrServerClosed
	}
	if s.conns == nil {
		s.conns = map[*conn]struct{}{}
	}
	s.conns[cc] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, cc)
		last := len(s.conns) == 0
		if last && s.idle != nil {
			close(s.idle)
			s.idle = nil
		}
		s.mu.Unlock()
		if last {
			s.workers.stopIdle() // no stream to come for now
		}
	}()
	return cc.serve()
}

// Shutdown sends GOAWAY to every connection (the last stream each
// processes: those already open are served to their end) and waits until
// they have closed, or until ctx ends, when it closes what is left and
// returns ctx's error. Connections handed over afterwards are closed.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.startGracefulShutdown()
	}
	for {
		s.mu.Lock()
		if len(s.conns) == 0 {
			s.mu.Unlock()
			return nil
		}
		if s.idle == nil {
			s.idle = make(chan struct{})
		}
		idle := s.idle
		s.mu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
			s.Close()
			return ctx.Err()
		}
	}
}

// Close closes every connection at once, handlers' requests cancelled.
func (s *Server) Close() error {
	s.mu.Lock()
	s.draining = true
	for c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
	return nil
}

func (s *Server) logf(format string, args ...any) {
	if l := s.Config.ErrorLog; l != nil {
		l.Printf(format, args...)
	} else {
		log.Printf(format, args...)
	}
}
