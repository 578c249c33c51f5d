//go:build !unix

package gateway

import (
	"net"
	"time"
)

// relayFunc returns a function that waits for one reply on up and relays
// it; without a raw socket to wait on, the session keeps a buffer of its
// own.
func (ss *udpSession) relayFunc(up *net.UDPConn) func() error {
	buf := make([]byte, maxDatagram)
	return func() error { return ss.relay(up, buf) }
}

func (ss *udpSession) relay(up *net.UDPConn, buf []byte) error {
	n, err := up.Read(buf)
	if err != nil {
		return err
	}
	ss.last.Store(time.Now().UnixNano())
	ss.sock.WriteToUDPAddrPort(buf[:n], ss.key.client)
	return nil
}
