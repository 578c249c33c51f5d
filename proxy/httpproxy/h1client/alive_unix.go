//go:build unix

package h1client

import (
	"errors"
	"net"
	"syscall"
)

// rawConn finds the socket under nc: nc itself, or what its NetConn
// method (crypto/tls, metered connections) wraps.
func rawConn(nc net.Conn) syscall.RawConn {
	for range 4 {
		if sc, ok := nc.(syscall.Conn); ok {
			rc, err := sc.SyscallConn()
			if err != nil {
				return nil
			}
			return rc
		}
		u, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			return nil
		}
		nc = u.NetConn()
	}
	return nil
}

// idleAlive reports whether an idle connection is still open and silent:
// a non-blocking MSG_PEEK sees nothing to read. A close (EOF), a reset or
// any byte (an unsolicited 408, a TLS alert) says it must not carry a
// request. Without a socket to ask, it assumes so.
func (pc *conn) idleAlive() bool {
	if pc.raw == nil {
		return true
	}
	if pc.peekFn == nil {
		pc.peekFn = pc.peekIdle // once per connection: a method value allocates
	}
	err := pc.raw.Read(pc.peekFn)
	return err == nil && pc.peekAlive
}

func (pc *conn) peekIdle(fd uintptr) bool {
	_, _, err := syscall.Recvfrom(int(fd), pc.peek[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	pc.peekAlive = errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK)
	return true // never wait for readiness
}
