//go:build !linux

package rawconn

import "net"

// Wrap returns c: the raw path is Linux's.
func Wrap(c net.Conn) net.Conn { return c }
