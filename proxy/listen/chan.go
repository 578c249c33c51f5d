package listen

import (
	"net"
	"sync"
)

// Chan is a net.Listener fed by hand: a proxy that accepts and sorts
// connections itself (detection, SNI) hands the ones for HTTP to an
// http.Server through it, and the server then owns HTTP/1 keep-alive and
// HTTP/2 framing.
type Chan struct {
	addr   net.Addr
	ch     chan net.Conn
	once   sync.Once
	closed chan struct{}
}

// NewChan returns a listener whose Addr is addr.
func NewChan(addr net.Addr) *Chan {
	return &Chan{addr: addr, ch: make(chan net.Conn), closed: make(chan struct{})}
}

// Push gives c to the server, waiting until it accepts; false once the
// listener is closed (c is then the caller's to close).
func (l *Chan) Push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.closed:
		return false
	}
}

// Accept returns the next pushed connection, or net.ErrClosed once closed.
func (l *Chan) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close makes Accept and Push return; it is idempotent.
func (l *Chan) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

// Addr is the address given to NewChan.
func (l *Chan) Addr() net.Addr { return l.addr }
