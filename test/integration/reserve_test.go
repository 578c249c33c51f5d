package integration

import (
	"net"
	"strconv"
	"syscall"
	"testing"
)

// reserveAddr returns a loopback address on which nothing listens (a
// connection there is refused, as to a controller that is down) and that no
// other test can take meanwhile: the port is held by a bound socket that
// never listens. release frees it just before the controller listens there;
// closing a listener obtained on port 0 instead left the port free for
// anything else running alongside for the whole outage.
func reserveAddr(t *testing.T) (addr string, release func()) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	port := sa.(*syscall.SockaddrInet4).Port
	closed := false
	release = func() {
		if !closed {
			closed = true
			syscall.Close(fd)
		}
	}
	t.Cleanup(release)
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), release
}

// A connection to a reserved address is refused: nothing listens there.
func TestReserveAddrRefuses(t *testing.T) {
	addr, _ := reserveAddr(t)
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatalf("%s accepted a connection", addr)
	}
	if ln, err := net.Listen("tcp", addr); err == nil {
		ln.Close()
		t.Fatalf("%s could be taken while reserved", addr)
	}
}
