//go:build unix

package gateway

import (
	"net"
	"sync"
	"syscall"
	"time"
)

// datagramBufs hold a reply while it is relayed: a session waits for its
// endpoint without a buffer of its own, so that an idle session costs a
// goroutine, not 64 KiB (a flood of new client addresses is bounded by
// the session limit, not by memory).
var datagramBufs = sync.Pool{New: func() any { b := make([]byte, maxDatagram); return &b }}

// relayFunc returns a function that waits for one reply on up (until its
// read deadline) and relays it; the buffer is taken from datagramBufs
// only once the socket is readable, inside the poller's callback.
func (ss *udpSession) relayFunc(up *net.UDPConn) func() error {
	rc, err := up.SyscallConn()
	if err != nil {
		return func() error { return err }
	}
	var rerr error
	read := func(fd uintptr) bool {
		bp := datagramBufs.Get().(*[]byte)
		defer datagramBufs.Put(bp)
		buf := *bp
		n, err := syscall.Read(int(fd), buf)
		for err == syscall.EINTR {
			n, err = syscall.Read(int(fd), buf)
		}
		switch {
		case err == syscall.EAGAIN:
			return false // wait for the poller
		case err != nil:
			rerr = &net.OpError{Op: "read", Net: "udp", Addr: up.RemoteAddr(), Err: err}
			return true
		}
		ss.last.Store(time.Now().UnixNano())
		ss.sock.WriteToUDPAddrPort(buf[:n], ss.key.client)
		return true
	}
	return func() error {
		rerr = nil
		if err := rc.Read(read); err != nil {
			return err
		}
		return rerr
	}
}
