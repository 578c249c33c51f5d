// Package origdst recovers the address a connection was meant for before
// iptables redirected it to the proxy (SO_ORIGINAL_DST).
package origdst

import (
	"errors"
	"net"
	"net/netip"
)

// ErrNotRedirected means the connection reached the proxy directly.
var ErrNotRedirected = errors.New("connection was not redirected")

// Lookup returns the original destination of an accepted connection. It
// unwraps connections that expose Unwrap() net.Conn.
func Lookup(c net.Conn) (netip.AddrPort, error) {
	for {
		u, ok := c.(interface{ Unwrap() net.Conn })
		if !ok {
			break
		}
		c = u.Unwrap()
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return netip.AddrPort{}, ErrNotRedirected
	}
	dst, err := lookup(tc)
	if err != nil {
		return netip.AddrPort{}, err
	}
	// Without NAT the kernel answers with the local address itself.
	if local, ok := c.LocalAddr().(*net.TCPAddr); ok && local.AddrPort() == dst {
		return netip.AddrPort{}, ErrNotRedirected
	}
	return dst, nil
}
