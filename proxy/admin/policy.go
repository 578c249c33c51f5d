package admin

import (
	"bufio"
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/meridian-mesh/meridian/internal/names"
	"github.com/meridian-mesh/meridian/proxy/authz"
)

// Open are the admin paths every client may read, whatever the policy: the
// kubelet probes them from the node, in plaintext.
var Open = []string{"/live", "/ready"}

// Protect makes the admin server follow the pod's inbound policy, as
// Linkerd's proxy does with its admin port: /metrics, /identity and every
// other path but Open and the policy's probe paths on the admin port are
// served only to the clients pol admits (whatever their address: loopback
// is no exception, kubectl port-forward arrives there). With tlsCfg (the proxy's mTLS server configuration, which
// requires a client certificate of the mesh), a client that opens with a
// TLS handshake is served over mutual TLS and judged by its identity, so a
// meshed scraper passes an authenticated policy. denied, when not nil, is
// told of each refusal (for the metrics). Call it before Serve.
//
// deny admits meshed clients on the admin port, as all-authenticated does:
// there are no per-port authorizations (Linkerd's AuthorizationPolicy on
// the admin Server) to let a scraper through otherwise, and a pod nobody
// may observe cannot be operated.
func (s *Server) Protect(pol authz.Config, tlsCfg *tls.Config, denied func(port uint16, clientID string)) {
	if pol.Default == authz.Deny {
		pol.Default = authz.AllAuthenticated
	}
	if tlsCfg != nil {
		c := tlsCfg.Clone()
		c.NextProtos = []string{"h2", "http/1.1"}
		s.tls = c
	}
	port := uint16(0)
	if _, p, err := net.SplitHostPort(s.ln.Addr().String()); err == nil {
		n, _ := strconv.Atoi(p)
		port = uint16(n)
	}
	next := s.srv.Handler
	s.srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := requestClient(r)
		if openPath(r.URL.Path) || pol.HTTP(c, port, r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		if denied != nil {
			denied(port, c.ID)
		}
		w.Header().Set(names.HeaderProxyError, "unauthorized")
		http.Error(w, "the admin port follows the pod's default inbound policy ("+pol.Name()+" here), which refuses this client; /live and /ready are open to all, the rest to meshed clients over mTLS", http.StatusForbidden)
	})
}

func openPath(p string) bool {
	for _, o := range Open {
		if p == o {
			return true
		}
	}
	return false
}

// requestClient is who sent r: its address, and its SPIFFE ID when it
// spoke mutual TLS.
func requestClient(r *http.Request) authz.Client {
	var c authz.Client
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		c.Addr = ap.Addr().Unmap()
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && len(r.TLS.PeerCertificates[0].URIs) > 0 {
		c.ID = r.TLS.PeerCertificates[0].URIs[0].String()
	}
	return c
}

// detectTimeout bounds how long a new connection may take to send its
// first byte before it is closed (the header timeout's share).
const detectTimeout = 10 * time.Second

// serveDetecting accepts connections and hands each to the HTTP server,
// wrapped in TLS when it opens with a handshake record. The first byte is
// read in the connection's own goroutine, so a silent client never holds
// up the accept loop.
func (s *Server) serveDetecting() error {
	cl := &connListener{addr: s.ln.Addr(), ch: make(chan net.Conn), closed: make(chan struct{})}
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(cl) }()
	defer cl.Close()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			cl.Close()
			if serr := <-errc; serr != nil && serr != http.ErrServerClosed {
				return serr
			}
			return err
		}
		go func() {
			c.SetReadDeadline(time.Now().Add(detectTimeout))
			br := bufio.NewReader(c)
			first, err := br.Peek(1)
			c.SetReadDeadline(time.Time{})
			if err != nil {
				c.Close()
				return
			}
			var conn net.Conn = &peekedConn{Conn: c, r: br}
			if first[0] == 0x16 { // a TLS handshake record
				conn = tls.Server(conn, s.tls)
			}
			if !cl.push(conn) {
				conn.Close()
			}
		}()
	}
}

// peekedConn is a connection whose first bytes were read into r.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// connListener hands detected connections to the http.Server.
type connListener struct {
	addr   net.Addr
	ch     chan net.Conn
	once   sync.Once
	closed chan struct{}
}

func (l *connListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }
