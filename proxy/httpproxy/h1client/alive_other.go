//go:build !unix

package h1client

import (
	"net"
	"syscall"
)

func rawConn(net.Conn) syscall.RawConn { return nil }

// idleAlive cannot tell without a socket: it assumes the connection is open.
func (pc *conn) idleAlive() bool { return true }
