package gateway

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-mesh/meridian/proxy/listen"
)

// maxDatagram is the largest UDP payload (IPv4's 65535 less its headers;
// IPv6 jumbograms are not carried).
const maxDatagram = 65507

// maxQueued bounds the datagrams a session holds while its backend's
// endpoint is being resolved; beyond it they are dropped, as a full
// socket buffer would.
const maxQueued = 64

// udpServer is an open UDP port: a socket per bind address, and a session
// per client address (source IP:port, per socket) created on its first
// datagram. A session's backend is picked by weight from the route of the
// table current at that moment and kept for its life, so a snapshot
// changes the route for new sessions only; its datagrams go from a
// connected socket of its own to one endpoint of the backend, and the
// endpoint's replies go back to the client from the port's socket. A
// session ends when it has been idle (neither way) for Config.UDPIdleTimeout,
// when its upstream socket fails (the client's next datagram starts a new
// one, maybe to another endpoint), or when the port closes.
type udpServer struct {
	g      *Gateway
	number uint32
	socks  []*net.UDPConn
	idle   time.Duration
	max    int // sessions at once (Config.MaxConnections); 0: no bound
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	sessions map[udpKey]*udpSession
	closed   bool
	wg       sync.WaitGroup // read loops and sessions
}

type udpKey struct {
	sock   int // index in socks: the one that answers
	client netip.AddrPort
}

type udpSession struct {
	s     *udpServer
	key   udpKey
	sock  *net.UDPConn
	last  atomic.Int64 // Unix ns of the last datagram either way
	mu    sync.Mutex
	up    *net.UDPConn // nil until connected
	queue [][]byte     // datagrams before up is connected
	dead  bool
}

// openUDP binds port n's UDP sockets on the addresses Config.Bind gives.
func (g *Gateway) openUDP(n uint32) (*udpServer, error) {
	socks, err := listen.ListenUDP(g.cfg.Bind(n), g.log.With("port", n))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(g.bg)
	return &udpServer{g: g, number: n, socks: socks, idle: g.cfg.UDPIdleTimeout, max: max(g.cfg.MaxConnections, 0),
		ctx: ctx, cancel: cancel, sessions: map[udpKey]*udpSession{}}, nil
}

func (s *udpServer) start() {
	for i, c := range s.socks {
		s.wg.Add(1)
		go s.serve(i, c)
	}
}

// serve reads the client datagrams of one socket until it is closed.
func (s *udpServer) serve(i int, c *net.UDPConn) {
	defer s.wg.Done()
	buf := make([]byte, maxDatagram)
	var delay time.Duration
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.g.log.Warn("udp read", "port", s.number, "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		s.datagram(i, c, from, buf[:n])
	}
}

// datagram hands b from client to its session, starting one when there is
// none.
func (s *udpServer) datagram(i int, sock *net.UDPConn, client netip.AddrPort, b []byte) {
	k := udpKey{i, client}
	s.mu.Lock()
	ss := s.sessions[k]
	if ss == nil {
		be := s.pick()
		switch {
		case s.closed:
			s.mu.Unlock()
			return
		case be == nil:
			s.mu.Unlock()
			s.drop("no_route", client, nil)
			return
		case s.max > 0 && len(s.sessions) >= s.max:
			s.mu.Unlock()
			s.drop("max_sessions", client, nil)
			return
		}
		ss = &udpSession{s: s, key: k, sock: sock}
		ss.last.Store(time.Now().UnixNano())
		s.sessions[k] = ss
		s.wg.Add(1)
		s.mu.Unlock()
		go ss.run(be, append([]byte(nil), b...))
		return
	}
	s.mu.Unlock()
	ss.send(b)
}

// drop counts a dropped client datagram (udp_datagrams_dropped_total).
func (s *udpServer) drop(reason string, client netip.AddrPort, err error) {
	s.g.metrics.UDPDropped(s.number, reason)
	s.g.log.Debug("UDP: datagram dropped", "port", s.number, "client", client, "reason", reason, "err", err)
}

// pick is a new session's backend: by weight, from the current table's
// route for the port; nil when there is none valid.
func (s *udpServer) pick() *backend {
	t := s.g.table.Load()
	if t == nil {
		return nil
	}
	p := t.udp[s.number]
	if p == nil || len(p.listeners) != 1 || len(p.listeners[0].routes) == 0 {
		return nil
	}
	r := p.listeners[0].routes[0]
	be := pickWeighted(r.backends, r.total)
	if be == nil || be.authority == "" {
		return nil
	}
	return be
}

// run connects the session to an endpoint of be, sends what the client
// sent so far, and relays the endpoint's replies until the session ends.
func (ss *udpSession) run(be *backend, first []byte) {
	s := ss.s
	defer s.wg.Done()
	defer ss.end()
	up, err := ss.connect(be)
	if err != nil {
		s.drop("no_endpoint", ss.key.client, err)
		return
	}
	ss.mu.Lock()
	if ss.dead {
		ss.mu.Unlock()
		up.Close()
		return
	}
	ss.up = up
	queue := ss.queue
	ss.queue = nil
	ss.mu.Unlock()
	for _, b := range append([][]byte{first}, queue...) {
		up.Write(b) // a datagram lost here is lost as on the wire
	}
	relay := ss.relayFunc(up)
	for {
		up.SetReadDeadline(time.Unix(0, ss.last.Load()).Add(s.idle))
		if err := relay(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && time.Since(time.Unix(0, ss.last.Load())) < s.idle {
				continue // the client sent since the deadline was set
			}
			return // idle, closed, or the endpoint refused (ICMP)
		}
	}
}

// connect resolves be through its cache (the destination's endpoints,
// without a TCP dial) and opens a connected UDP socket to one picked by
// the cache's balancer. Plain UDP: mTLS does not apply to datagrams.
func (ss *udpSession) connect(be *backend) (*net.UDPConn, error) {
	ctx, cancel := context.WithTimeout(ss.s.ctx, ss.s.g.cfg.ConnectTimeout)
	defer cancel()
	d, err := be.cache.Get(ctx, be.authority)
	if err != nil {
		return nil, err
	}
	ep, err := d.Target().Balancer.Pick()
	if err != nil {
		return nil, err
	}
	ap, err := netip.ParseAddrPort(ep.Addr())
	if err != nil {
		return nil, err
	}
	return net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(ap))
}

// send forwards a client datagram, or holds it while the session connects.
func (ss *udpSession) send(b []byte) {
	ss.last.Store(time.Now().UnixNano())
	ss.mu.Lock()
	up, dead := ss.up, ss.dead
	if !dead && up == nil {
		if len(ss.queue) < maxQueued {
			ss.queue = append(ss.queue, append([]byte(nil), b...))
		}
		ss.mu.Unlock()
		return
	}
	ss.mu.Unlock()
	if up != nil && !dead {
		up.Write(b)
	}
}

// end closes the session's socket and forgets it: the client's next
// datagram starts a new session.
func (ss *udpSession) end() {
	ss.mu.Lock()
	ss.dead = true
	up := ss.up
	ss.queue = nil
	ss.mu.Unlock()
	if up != nil {
		up.Close()
	}
	s := ss.s
	s.mu.Lock()
	if s.sessions[ss.key] == ss {
		delete(s.sessions, ss.key)
	}
	s.mu.Unlock()
}

// open is the sessions the port holds.
func (s *udpServer) open() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int64(len(s.sessions))
}

// drain closes the port: its sockets (no datagram is read or answered
// after), then every session; it returns once they have ended. A datagram
// session has no end to wait for, so there is nothing to drain gracefully:
// a client's next datagram goes wherever the port number now leads.
func (s *udpServer) drain() {
	s.mu.Lock()
	s.closed = true
	sessions := make([]*udpSession, 0, len(s.sessions))
	for _, ss := range s.sessions {
		sessions = append(sessions, ss)
	}
	s.mu.Unlock()
	for _, c := range s.socks {
		c.Close()
	}
	s.cancel() // sessions still resolving give up
	for _, ss := range sessions {
		ss.mu.Lock()
		ss.dead = true
		if ss.up != nil {
			ss.up.Close()
		}
		ss.mu.Unlock()
	}
	s.wg.Wait()
}

// addr is the port's first bound address.
func (s *udpServer) addr() *net.UDPAddr { return s.socks[0].LocalAddr().(*net.UDPAddr) }

// udpSessions is the sessions UDP port n holds (0 when it is not open).
func (g *Gateway) udpSessions(n uint32) int64 { return g.openSessions()[n] }
