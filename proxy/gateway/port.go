package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
	"github.com/meridian-mesh/meridian/proxy/h2server"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/h1server"
	"github.com/meridian-mesh/meridian/proxy/metrics"
	"github.com/meridian-mesh/meridian/proxy/outbound/connect"
	"github.com/meridian-mesh/meridian/proxy/tcpproxy"
)

// portServer is one open port: its sockets, the HTTP servers its HTTP and
// terminated HTTPS connections go to (h1 serves HTTP/1, h2 HTTP/2: h2 by
// ALPN and h2c with prior knowledge, both on the accepting goroutine), and
// its TLS streams (passthrough and terminate). What a new connection gets
// is decided by the table current when it arrives, so a port keeps its
// socket and its connections across snapshots.
type portServer struct {
	g      *Gateway
	number uint32
	ln     net.Listener
	ctx    context.Context // its connections' context: portKey
	h1     *h1server.Server
	h2     *h2server.Server
	h2c    h2Handler // h2c connections' handler (no TLS)

	// accepting is the accept loop: drain waits for it before it waits
	// for streams, so that no streams.Add races with that Wait.
	accepting sync.WaitGroup
	// streams counts connections from accept to close: being sorted,
	// served over HTTP/1 or HTTP/2, or TLS streams.
	streams sync.WaitGroup
	mu      sync.Mutex
	conns   map[net.Conn]struct{} // TLS streams, closed at the drain deadline
	cut     bool                  // the drain deadline has passed

	loop     loopServer   // its HTTP/1.1 on the event loops, nil without
	open     atomic.Int64 // accepted connections not yet closed
	maxConns int64        // Config.MaxConnections; 0: no bound
}

// counted is an accepted connection counted in its port's open
// connections until it is closed.
type counted struct {
	net.Conn
	ps   *portServer
	once sync.Once
}

func (c *counted) Close() error {
	c.once.Do(func() { c.ps.open.Add(-1) })
	return c.Conn.Close()
}

func (c *counted) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

// accepted labels the connections the gateway accepts (tcp_* metrics):
// clients from outside the mesh.
var accepted = metrics.ConnLabels{Direction: "inbound", Peer: metrics.PeerSrc, TLS: metrics.TLSNotProvidedByRemote}

type portKey struct{}

// portOf is the port number a request arrived on.
func portOf(ctx context.Context) uint32 {
	n, _ := ctx.Value(portKey{}).(uint32)
	return n
}

func (g *Gateway) openPort(n uint32) (*portServer, error) {
	ln, err := g.listenAddr(n)
	if err != nil {
		return nil, err
	}
	ps := &portServer{g: g, number: n, ln: ln, conns: map[net.Conn]struct{}{},
		ctx:      context.WithValue(context.Background(), portKey{}, n),
		maxConns: int64(max(g.cfg.MaxConnections, 0))}
	errorLog := slog.NewLogLogger(g.log.Handler(), slog.LevelDebug)
	ps.h1 = &h1server.Server{
		Handler:           g.handler,
		ReadHeaderTimeout: g.cfg.HeaderTimeout,
		IdleTimeout:       5 * time.Minute,
		// The snapshot's limit (431) is applied per request (route); this
		// is the most a snapshot may set.
		MaxHeaderBytes: maxHeaderCap,
		ConnContext: func(ctx context.Context, _ net.Conn) context.Context {
			return context.WithValue(ctx, portKey{}, n)
		},
		ErrorLog: errorLog,
		// h2c with prior knowledge: served here, on the accepting
		// goroutine, as net/http hands it over (deadlines cleared).
		H2C: func(c net.Conn) {
			c.SetDeadline(time.Time{})
			ps.h2.ServeConnOptions(ps.ctx, c, h2server.ConnOptions{Handler: ps.h2c})
		},
	}
	// HTTP/2 (TLS with ALPN h2, and h2c with prior knowledge) is served by
	// the proxy's own server, handed the connections directly: requests'
	// contexts carry portKey, and http.ServerContextKey (this h2server)
	// and http.LocalAddrContextKey, which h2server sets.
	ps.h2 = &h2server.Server{Config: h2server.Config{
		MaxConcurrentStreams:      1000,
		MaxReadFrameSize:          16 << 10,
		MaxDecoderHeaderTableSize: 4 << 10,
		MaxHeaderBytes:            maxHeaderCap,
		IdleTimeout:               5 * time.Minute,
		ErrorLog:                  errorLog,
	}}
	ps.h2c = h2Handler{h: g.handler}
	return ps, nil
}

// h2Handler serves a port's HTTP/2 requests as net/http's server did when
// it handed the connections over (serverHandler, initALPNRequest): "OPTIONS
// *" is answered, not routed, and a TLS connection's requests carry its
// state whatever their :scheme.
type h2Handler struct {
	h   http.Handler
	tls *tls.ConnectionState // nil: h2c
}

func (h h2Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.tls != nil && r.TLS == nil {
		r.TLS = h.tls
	}
	if r.RequestURI == "*" && r.Method == http.MethodOptions {
		optionsAsterisk(w, r)
		return
	}
	h.h.ServeHTTP(w, r)
}

// optionsAsterisk is net/http's globalOptionsHandler: an empty 200, after
// reading at most 4 KiB of body (more ends the stream).
func optionsAsterisk(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Length", "0")
	if r.ContentLength != 0 {
		io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, 4<<10))
	}
}

func (ps *portServer) start() {
	ps.accepting.Add(1)
	go func() { defer ps.accepting.Done(); ps.accept() }()
}

func (ps *portServer) accept() {
	var delay time.Duration
	for {
		c, err := ps.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			ps.g.log.Warn("accept", "port", ps.number, "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		if ps.maxConns > 0 && ps.open.Load() >= ps.maxConns {
			// Closed at once, before a byte is read (no request is ever
			// half served), rather than left in the backlog: the client
			// learns now, and the descriptors stay with the connections
			// served.
			ps.g.metrics.ConnRefused("inbound", "max_connections") // before the client can see the close
			c.Close()
			continue
		}
		ps.open.Add(1)
		c = &counted{Conn: c, ps: ps}
		ps.streams.Add(1)
		go func() { defer ps.streams.Done(); ps.handle(c) }()
	}
}

// handle sorts a new connection by the current table: HTTP ports hand it
// to the HTTP server; TLS ports read the ClientHello (without consuming
// it) and pick the listener by SNI: passthrough streams are spliced to a
// backend, TLS terminate streams decrypted and spliced to a backend, HTTPS
// connections terminated and handed to the HTTP server.
func (ps *portServer) handle(c net.Conn) {
	g := ps.g
	mc := g.metrics.Conn(c, accepted)
	t := g.table.Load()
	p := t.ports[ps.number]
	if p == nil {
		mc.Close() // the port is going away
		return
	}
	var conn net.Conn = mc
	if p.proxyProtocol {
		mc.SetReadDeadline(time.Now().Add(g.cfg.HeaderTimeout))
		br := bufio.NewReaderSize(mc, 5+maxRecord)
		client, err := readProxyHeader(br)
		mc.SetReadDeadline(time.Time{})
		if err != nil {
			g.log.Debug("PROXY protocol", "port", ps.number, "peer", c.RemoteAddr(), "err", err)
			mc.Close()
			return
		}
		if client == nil {
			client = c.RemoteAddr()
		}
		conn = &clientConn{replayConn: replayConn{Conn: mc, r: br}, client: client}
	}
	switch p.protocol {
	case gatewaypb.Port_HTTP:
		ps.h1.ServeConn(context.Background(), conn) // and h2c, through its H2C hook
		return
	case gatewaypb.Port_TCP:
		ps.stream(conn, p.listeners[0], "", false)
		return
	}
	mc.SetReadDeadline(time.Now().Add(g.cfg.HeaderTimeout))
	hello, rc, err := peekHello(conn)
	mc.SetReadDeadline(time.Time{})
	if err != nil {
		g.log.Debug("no TLS ClientHello", "port", ps.number, "client", c.RemoteAddr(), "err", err)
		mc.Close()
		return
	}
	sni := requestHost(hello.ServerName)
	l := p.listenerFor(sni, gatewaypb.Listener_HTTPS, gatewaypb.Listener_TLS_PASSTHROUGH, gatewaypb.Listener_TLS_TERMINATE)
	if l == nil {
		g.log.Debug("no listener for the server name", "port", ps.number, "sni", sni)
		mc.Close()
		return
	}
	switch l.mode {
	case gatewaypb.Listener_TLS_PASSTHROUGH:
		ps.stream(rc, l, sni, false)
		return
	case gatewaypb.Listener_TLS_TERMINATE:
		ps.stream(rc, l, sni, true)
		return
	}
	ps.serveHTTPS(tls.Server(rc, l.tls), l.tls)
}

// serveHTTPS completes an HTTPS connection's handshake, within the header
// timeout as net/http's server would, and serves it by the protocol ALPN
// settled: HTTP/1 on h1, h2 on h2 (both here, on the accepting goroutine).
// Its requests' contexts carry the client's certificate once verified
// against cfg's CAs (withClientCert). With the event loops on, an
// HTTP/1.1 connection may go to one instead (loopTLS).
func (ps *portServer) serveHTTPS(tc *tls.Conn, cfg *tls.Config) {
	g := ps.g
	tc.SetDeadline(time.Now().Add(g.cfg.HeaderTimeout))
	if err := tc.Handshake(); err != nil {
		g.log.Debug("http: TLS handshake error", "port", ps.number, "client", tc.RemoteAddr(), "err", err)
		tc.Close()
		return
	}
	tc.SetDeadline(time.Time{})
	st := tc.ConnectionState()
	switch st.NegotiatedProtocol {
	case "h2":
		if ps.loopTLS(tc, st) {
			return
		}
		ps.h2.ServeConnOptions(withClientCert(ps.ctx, st, cfg), tc, h2server.ConnOptions{Handler: h2Handler{h: g.handler, tls: &st}})
	case "", "http/1.1", "http/1.0":
		if st.NegotiatedProtocol != "http/1.0" && ps.loopTLS(tc, st) {
			return
		}
		ps.h1.ServeConn(withClientCert(context.Background(), st, cfg), tc)
	default:
		// Not one the listener offers; net/http's server closes it too.
		tc.Close()
	}
}

// stream serves a TLS or TCP listener's connection: the listener's first
// route whose hostnames match the SNI (a TCP listener's one route, sni "")
// picks a backend by weight, and the stream is spliced to it. TCP splices
// the client's bytes as they come. Passthrough splices the client's TLS as is;
// terminate first completes the handshake with the listener's certificate
// for the SNI, then splices the decrypted bytes (plaintext to the backend,
// or mTLS to a meshed one, or the BackendTLSPolicy's TLS: the backend's
// cache says). No route or backend: the connection is closed before a
// handshake, as the spec's "reject the connection".
func (ps *portServer) stream(c net.Conn, l *listener, sni string, terminate bool) {
	g := ps.g
	what := "TLS passthrough"
	switch {
	case terminate:
		what = "TLS terminate"
	case l.mode == gatewaypb.Listener_TCP:
		what = "TCP"
	}
	r := l.routeFor(sni)
	var be *backend
	if r != nil {
		be = pickWeighted(r.backends, r.total)
	}
	if be == nil || be.authority == "" {
		g.log.Debug(what+": no route backend for the connection", "listener", l.name, "sni", sni)
		c.Close()
		return
	}
	if !ps.track(c) {
		c.Close()
		return
	}
	defer ps.untrack(c)
	if terminate {
		tc := tls.Server(c, l.tls)
		// The handshake is bounded as the ClientHello was: a client that
		// stalls it holds no connection for long.
		ctx, cancel := context.WithTimeout(g.bg, g.cfg.HeaderTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			g.log.Debug("TLS terminate: handshake", "listener", l.name, "sni", sni, "err", err)
			c.Close()
			return
		}
		c = &terminated{tc}
	}
	ctx, cancel := context.WithTimeout(g.bg, 10*time.Second)
	d, err := be.cache.Get(ctx, be.authority)
	var up net.Conn
	if err == nil {
		up, err = d.Dial(ctx)
	}
	cancel()
	if err != nil {
		var ue *connect.UnavailableError
		if errors.As(err, &ue) {
			g.metrics.Unavailable(direction, be.authority, ue.Reason)
		}
		g.log.Debug(what+": no connection to the backend", "backend", be.label(), "err", err)
		c.Close()
		return
	}
	if !ps.track(up) {
		c.Close()
		up.Close()
		return
	}
	defer ps.untrack(up)
	tcpproxy.SpliceIdle(c, up, g.cfg.IdleTimeout)
}

// terminated is a terminated TLS stream whose half-close reaches the
// client both ways: close_notify, then the TCP FIN that tls.Conn's own
// CloseWrite leaves out.
type terminated struct{ *tls.Conn }

func (c *terminated) CloseWrite() error {
	err := c.Conn.CloseWrite()
	if cw, ok := c.NetConn().(interface{ CloseWrite() error }); ok {
		if e := cw.CloseWrite(); err == nil {
			err = e
		}
	}
	return err
}

func (ps *portServer) track(c net.Conn) bool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.conns[c] = struct{}{}
	return !ps.cut
}

func (ps *portServer) untrack(c net.Conn) {
	ps.mu.Lock()
	delete(ps.conns, c)
	ps.mu.Unlock()
}

// stopAccepting closes the port's sockets, the loops' duplicates too
// (waiting for them): once it returns, the number can be opened again,
// as a snapshot that moves a port away and back, or to UDP and back,
// does. Its connections are drain's; calling it again is harmless.
func (ps *portServer) stopAccepting() {
	ps.loopDrain()
	ps.ln.Close()
}

// drain stops accepting, lets requests and streams finish within timeout,
// then closes what is left.
func (ps *portServer) drain(timeout time.Duration) {
	ps.stopAccepting()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// A connection accepted just before the close is counted in streams
	// once the loop ends: only then is streams.Wait safe (and complete).
	ps.accepting.Wait()
	// HTTP/1 and HTTP/2 connections are served on their accepting
	// goroutines: streams counts them too.
	done := make(chan struct{})
	go func() { ps.streams.Wait(); close(done) }()
	// HTTP/2 connections get GOAWAY (their open streams finish), HTTP/1
	// ones close once idle.
	h1done := make(chan struct{})
	go func() { ps.h1.Shutdown(ctx); close(h1done) }()
	ps.h2.Shutdown(ctx)
	<-h1done
	select {
	case <-done:
	case <-ctx.Done():
		ps.mu.Lock()
		ps.cut = true
		for c := range ps.conns {
			c.Close()
		}
		ps.mu.Unlock()
		ps.loopCut()
		ps.h1.Close()
		ps.h2.Close() // done already by its Shutdown at ctx's end; cheap
		<-done
	}
	ps.h1.Close()
	ps.h2.Close()
	ps.loopStopWorkers()
}

// pickWeighted picks one of bs by weight; nil when every weight is 0.
func pickWeighted(bs []*backend, total uint64) *backend {
	if total == 0 {
		return nil
	}
	n := rand.Uint64N(total)
	for _, b := range bs {
		if n < uint64(b.weight) {
			return b
		}
		n -= uint64(b.weight)
	}
	return nil
}

// peekHello reads a TLS ClientHello from c without consuming it: the
// returned connection replays every byte read.
func peekHello(c net.Conn) (*tls.ClientHelloInfo, net.Conn, error) {
	br := bufio.NewReaderSize(c, 5+maxRecord)
	rc := &replayConn{Conn: c, r: br}
	head, err := br.Peek(5)
	if err != nil {
		return nil, rc, err
	}
	if head[0] != 0x16 || head[1] != 3 {
		return nil, rc, errors.New("not a TLS handshake record")
	}
	n := int(head[3])<<8 | int(head[4])
	if n > maxRecord {
		return nil, rc, errors.New("TLS record too long")
	}
	rec, err := br.Peek(5 + n)
	if err != nil {
		return nil, rc, err
	}
	var hello *tls.ClientHelloInfo
	// crypto/tls parses the hello; the handshake stops there.
	tls.Server(readOnly{bytes.NewReader(rec)}, &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			hello = &tls.ClientHelloInfo{ServerName: h.ServerName, SupportedProtos: h.SupportedProtos}
			return nil, errHelloRead
		},
	}).Handshake()
	if hello == nil {
		return nil, rc, errors.New("no ClientHello in the first TLS record")
	}
	return hello, rc, nil
}

// maxRecord is the longest TLS plaintext record (RFC 8446 §5.1).
const maxRecord = 16 << 10

var errHelloRead = errors.New("ClientHello read")

// replayConn reads what was peeked before the rest.
type replayConn struct {
	net.Conn
	r *bufio.Reader // nil once what it held has been read
}

// Read reads the peeked bytes, then the connection itself: the reader's
// buffer (16 KiB for a ClientHello) is let go rather than kept, and copied
// through, for the connection's life. Reads of a connection are not
// concurrent (crypto/tls, h1server and the splice each read from one
// goroutine at a time), so r needs no lock.
func (c *replayConn) Read(p []byte) (int, error) {
	if c.r != nil {
		if c.r.Buffered() > 0 {
			return c.r.Read(p)
		}
		c.r = nil
	}
	return c.Conn.Read(p)
}

func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// readOnly is a net.Conn that reads a buffer and writes nothing, for
// parsing a ClientHello.
type readOnly struct{ r io.Reader }

func (c readOnly) Read(p []byte) (int, error)     { return c.r.Read(p) }
func (readOnly) Write(p []byte) (int, error)      { return len(p), nil }
func (readOnly) Close() error                     { return nil }
func (readOnly) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (readOnly) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (readOnly) SetDeadline(time.Time) error      { return nil }
func (readOnly) SetReadDeadline(time.Time) error  { return nil }
func (readOnly) SetWriteDeadline(time.Time) error { return nil }
