package h1loop

// The loop's HTTP/2 connections to endpoints (relay_linux.go's streams):
// h2c with prior knowledge, or mTLS with ALPN h2 dialed by the endpoint's
// own dialer (its handshake on a goroutine, then the connection moved to
// the loop, as the HTTP/1.1 pools' mTLS connections are). One connection
// per endpoint carries the loop's streams to it; a second is dialed when
// the first takes no more (its peer's SETTINGS_MAX_CONCURRENT_STREAMS, a
// GOAWAY). The streams that find no connection ready wait for the one
// dialed for them, what comes of their bodies kept; a refused dial hands
// them, body and all, to the goroutine path, as do the next for a moment
// (longer, and longer each time, when the endpoint's ALPN refused h2).

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"time"

	"golang.org/x/sys/unix"

	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/h2loop"
	"github.com/meridian-mesh/meridian/proxy/internal/evloop"
	"github.com/meridian-mesh/meridian/proxy/metrics"
)

var errConnectClosed = errors.New("h1loop: the connection ended while connecting")

// h2IdleTimeout closes an HTTP/2 connection to an endpoint with no
// stream for that long, as the goroutine path's pools do theirs.
const h2IdleTimeout = 90 * time.Second

// h2RedialAfter is how long a pool whose dial failed sends its streams to
// the goroutine path before it dials again (which counts, backs off and
// answers the failures as it always does).
const h2RedialAfter = time.Second

// h2NotTakenMax bounds the wait after dials the endpoint answered but not
// in a shape the loop takes (mTLS whose ALPN did not settle h2: a peer
// that does not speak HTTP/2 there). Each such answer doubles the wait
// from h2RedialAfter: asking again every second would cost a handshake a
// second for nothing, while the goroutine path serves the streams.
const h2NotTakenMax = 5 * time.Minute

// h2pool is one endpoint's HTTP/2 connections on a loop, per direction
// and identity as the HTTP/1.1 pools.
type h2pool struct {
	conns      []*h2up // connected, taking streams or not
	dialing    bool
	dialFailed time.Time
	redial     time.Duration // after dialFailed, the streams go to the goroutine path for this long
	waiting    []*relay      // for the connection being dialed
}

func (lp *Loop) h2pool(key poolKey) *h2pool {
	p := lp.h2pools[key]
	if p == nil {
		p = &h2pool{}
		lp.h2pools[key] = p
	}
	return p
}

// ready is a connection that takes a stream now, or nil.
func (p *h2pool) ready() *h2up {
	for _, u := range p.conns {
		if u.cc.CanOpen() {
			return u
		}
	}
	return nil
}

// dial dials a connection with x's endpoint and labels unless one is
// dialed already.
func (p *h2pool) dial(lp *Loop, x *relay) {
	if !p.dialing {
		p.dialing = true
		lp.dialH2(x)
	}
}

func (p *h2pool) remove(u *h2up) {
	for i, c := range p.conns {
		if c == u {
			p.conns = append(p.conns[:i], p.conns[i+1:]...)
			return
		}
	}
}

// dialDone ends a dial: u connected, and the streams waiting for it opened
// on it; or err, which ep's balancer is told of (backed off and counted for
// failure accrual, as the goroutine path's failed connects are), and the
// streams waiting go to the goroutine path, which tries another endpoint.
// errNotTaken (the endpoint answered, not in HTTP/2) is no failure of the
// endpoint's: the pool waits longer each time before it asks again.
func (p *h2pool) dialDone(ep *balance.Endpoint[*httpproxy.Upstream], u *h2up, err error) {
	p.dialing = false
	switch {
	case errors.Is(err, errNotTaken):
		p.dialFailed = time.Now()
		p.redial = min(max(2*p.redial, h2RedialAfter), h2NotTakenMax)
		u = nil
	case err != nil:
		p.dialFailed, p.redial = time.Now(), h2RedialAfter
		if ep != nil {
			ep.Fail()
		}
		u = nil
	default:
		p.redial = 0
		p.conns = append(p.conns, u)
	}
	waiting := p.waiting
	p.waiting = nil
	for _, x := range waiting {
		x.dialed(u)
	}
	if u != nil && len(waiting) > 0 {
		u.cc.Flush()
	}
}

// h2up is an HTTP/2 connection to an endpoint.
type h2up struct {
	stream     // ts: mTLS
	lp         *Loop
	ep         *balance.Endpoint[*httpproxy.Upstream] // told of a failed connect
	key        poolKey
	cc         *h2loop.ClientConn
	connecting bool          // a plaintext connect in progress
	connect    *evloop.Timer // bounds it
	dialed     func(addr string, err error)
	idle       *evloop.Timer // closes it after h2IdleTimeout without a stream
	open       int           // its streams not let go yet
	touched    []*relay      // streams the read in progress wrote to
	pass       bool          // in its Readable or Written: flushClients comes at their end
	closed     bool
}

// clientConfig is the ClientConn's: the windows the goroutine path gives
// its endpoints; frames of the protocol's default size, as the proxies'
// servers read.
func clientConfig(s *Server, u *h2up) h2loop.ClientConfig {
	cfg := h2loop.ClientConfig{
		StreamWindow:     httpproxy.DefaultH2StreamWindow,
		ConnWindow:       httpproxy.DefaultH2ConnectionWindow,
		MaxReadFrameSize: 16 << 10,
		Unusable:         func(*h2loop.ClientConn) { u.lp.h2pool(u.key).remove(u) },
	}
	if s.HTTP2 != nil {
		cfg.Logf = s.HTTP2.Logf
	}
	return cfg
}

// dialH2 dials x's endpoint for the pool of x's key: in plaintext on the
// loop, or mTLS on a goroutine.
func (lp *Loop) dialH2(x *relay) {
	s, key := x.server(), x.key
	if key.serverID != "" {
		ep := x.ep
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
			nc, err := ep.Value().DialH2(ctx)
			cancel()
			lp.l.Post(func() { lp.dialedH2(s, ep, key, nc, err) })
		}()
		return
	}
	fd, connecting, err := connectFD(key.addr)
	if err != nil {
		if s.Dialed != nil {
			s.Dialed(key.addr, err)
		}
		lp.h2pool(key).dialDone(x.ep, nil, err)
		return
	}
	u := &h2up{lp: lp, ep: x.ep, key: key, dialed: s.Dialed, connecting: connecting}
	if u.c, err = lp.l.NewConn(fd, u); err != nil {
		unix.Close(fd)
		lp.h2pool(key).dialDone(nil, nil, err)
		return
	}
	u.mc = s.Metrics.Conn(noConn{}, metrics.ConnLabels{Direction: key.direction, Peer: metrics.PeerDst, Target: key.addr, TLS: x.connTLS})
	// The preface and SETTINGS wait in the socket's buffer until it is
	// connected; the connection takes streams once it is.
	u.cc = h2loop.NewClientConn(lp.l, h2transport{&u.stream, u}, clientConfig(s, u))
	if u.closed {
		return // its first write failed (refused at once): close told the pool
	}
	if !connecting {
		u.connected()
		return
	}
	u.connect = lp.l.After(s.connectTimeout(), u.connectTimedOut)
}

// dialedH2 is an mTLS dial's end, on the loop.
func (lp *Loop) dialedH2(s *Server, ep *balance.Endpoint[*httpproxy.Upstream], key poolKey, nc net.Conn, err error) {
	p := lp.h2pool(key)
	if err != nil {
		p.dialDone(ep, nil, err)
		return
	}
	tc, ok := nc.(*tls.Conn)
	if !ok || tc.ConnectionState().NegotiatedProtocol != "h2" {
		nc.Close() // not HTTP/2 after all: its streams stay the goroutine path's
		p.dialDone(nil, nil, errNotTaken)
		return
	}
	fd, ts, mc, _, ok := takeTLS(tc, lp, nil)
	if !ok {
		nc.Close()
		p.dialDone(nil, nil, errNotTaken)
		return
	}
	u := &h2up{lp: lp, key: key}
	u.mc, u.ts = mc, ts
	uc, err := lp.l.NewConn(fd, u)
	if err != nil {
		unix.Close(fd)
		mc.Close()
		p.dialDone(nil, nil, err)
		return
	}
	u.c, ts.side.c = uc, uc
	u.cc = h2loop.NewClientConn(lp.l, h2transport{&u.stream, u}, clientConfig(s, u))
	u.connected()
	// The handshake's last read may have taken the server's first frames
	// with it: no readiness would tell of those.
	u.Readable(uc)
}

// connected puts u in its pool: it takes streams from now on.
func (u *h2up) connected() {
	u.connecting = false
	if u.connect != nil {
		u.connect.Stop()
		u.connect = nil
	}
	if u.dialed != nil {
		u.dialed(u.key.addr, nil)
	}
	u.lp.h2pool(u.key).dialDone(nil, u, nil)
	u.idleFrom()
}

// connectFailed ends a connect that failed (refused, timed out).
func (u *h2up) connectFailed(err error) {
	u.connecting = false
	if u.dialed != nil {
		u.dialed(u.key.addr, err)
	}
	u.lp.h2pool(u.key).dialDone(u.ep, nil, err)
	u.cc.Close()
}

func (u *h2up) connectTimedOut() {
	u.connect = nil
	if u.connecting && !u.closed {
		u.connectFailed(errConnectTimeout)
	}
}

// Readable passes what the endpoint sent to the connection, then writes
// the heads its streams received and flushes the clients they wrote to.
func (u *h2up) Readable(*evloop.Conn) {
	u.pass = true
	defer u.endPass()
	if u.connecting {
		u.pull()
		if err := u.readErr(); err != nil {
			u.connectFailed(err)
			return
		}
		u.connected()
	}
	u.cc.Readable()
}

// endPass ends a Readable or Written: the clients its streams wrote to
// are flushed.
func (u *h2up) endPass() {
	u.pass = false
	u.flushClients()
}

// Written: the socket took what waited (a connect's end, first).
func (u *h2up) Written(*evloop.Conn) {
	u.pass = true
	defer u.endPass()
	if u.connecting {
		if err := u.c.Err(); err != nil {
			u.connectFailed(err)
			return
		}
		u.connected()
	}
	u.cc.Written()
}

// touch notes that x's client stream was written to in this callback.
func (u *h2up) touch(x *relay) {
	for _, t := range u.touched {
		if t == x {
			return
		}
	}
	u.touched = append(u.touched, x)
}

// flushClients writes the heads that came whole in this read (a head and
// its stream's end in one read leave in one frame), then flushes the
// clients' connections. An HTTP/1.1 client's flush may serve its next
// request, whose stream may be touched in turn: it is flushed too.
func (u *h2up) flushClients() {
	for i := 0; i < len(u.touched); i++ {
		x := u.touched[i]
		if x.headPending {
			x.writeHead(false)
			x.passResponse()
		}
		x.down.Flush()
		u.touched[i] = nil
	}
	u.touched = u.touched[:0]
}

// opened counts a stream on u.
func (u *h2up) opened() {
	u.open++
	if u.idle != nil {
		u.idle.Stop()
	}
}

// closed1 lets one of u's streams go.
func (u *h2up) closed1() {
	if u.open--; u.open == 0 {
		u.idleFrom()
	}
}

// idleFrom closes u after h2IdleTimeout unless a stream comes.
func (u *h2up) idleFrom() {
	if u.closed {
		return
	}
	if u.idle == nil {
		u.idle = u.lp.l.After(h2IdleTimeout, u.idleTimedOut)
		return
	}
	u.idle.Reset(h2IdleTimeout)
}

func (u *h2up) idleTimedOut() {
	if u.open == 0 && !u.closed {
		u.lp.h2pool(u.key).remove(u)
		u.cc.Close()
	}
}

func (u *h2up) close() {
	if u.closed {
		return
	}
	u.closed = true
	if u.connecting {
		// Ended before it connected (its first write failed): the dial
		// failed, for the streams waiting for it.
		u.connecting = false
		err := u.c.Err() // the socket's (ECONNREFUSED), if it said
		if err == nil {
			err = errConnectClosed
		}
		if u.dialed != nil {
			u.dialed(u.key.addr, err)
		}
		u.lp.h2pool(u.key).dialDone(u.ep, nil, err)
	}
	u.lp.h2pool(u.key).remove(u)
	if u.connect != nil {
		u.connect.Stop()
		u.connect = nil
	}
	if u.idle != nil {
		u.idle.Stop()
	}
	if u.ts != nil {
		u.ts.close()
	}
	u.c.Close()
	u.mc.Close()
	if !u.pass {
		// Ended outside its own callbacks (a timer's GOAWAY wait, the
		// idle timeout, a client's): what its streams' ends wrote leaves
		// now.
		u.flushClients()
	}
}

// closeH2 is the end h2loop gives the connection (h2transport's Close).
func (u *h2up) closeH2() { u.close() }
