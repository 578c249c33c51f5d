package origdst

import (
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/proxy/internal/netnstest"
)

// wrapped hides a connection the way the proxy's metering wrapper does.
type wrapped struct{ net.Conn }

func (w wrapped) Unwrap() net.Conn { return w.Conn }

// redirectedConn listens on loopback ip, redirects connections for another
// port to it with iptables, dials that port, and returns the accepted
// connection and the address the client dialled.
func redirectedConn(t *testing.T, ip string) (net.Conn, netip.AddrPort) {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// A port nothing listens on: bound a moment ago, then released.
	spare, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	from := spare.Addr().(*net.TCPAddr).Port
	spare.Close()
	netnstest.Redirect(t, ip, from, ln.Addr().(*net.TCPAddr).Port)

	dialed := netip.AddrPortFrom(netip.MustParseAddr(ip), uint16(from))
	c, err := net.DialTimeout("tcp", dialed.String(), 10*time.Second)
	if err != nil {
		t.Fatalf("dial %s (redirected to %s): %v", dialed, ln.Addr(), err)
	}
	t.Cleanup(func() { c.Close() })
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a, dialed
}

// SO_ORIGINAL_DST on a connection that iptables really redirected, in a
// network namespace the test creates.
func TestLookupRedirected(t *testing.T) {
	if !netnstest.Enter(t) {
		return
	}
	t.Run("ipv4", func(t *testing.T) {
		a, dialed := redirectedConn(t, "127.0.0.1")
		for _, c := range []net.Conn{a, wrapped{a}, wrapped{wrapped{a}}} {
			got, err := Lookup(c)
			if err != nil || got != dialed {
				t.Errorf("Lookup(%T) = %v, %v; want %v", c, got, err, dialed)
			}
		}
	})
	t.Run("ipv6", func(t *testing.T) {
		if _, err := exec.LookPath("ip6tables"); err != nil {
			t.Skip("skipping: ip6tables is not installed")
		}
		if ln, err := net.Listen("tcp", "[::1]:0"); err != nil {
			t.Skipf("skipping: no IPv6 loopback: %v", err)
		} else {
			ln.Close()
		}
		a, dialed := redirectedConn(t, "::1")
		if got, err := Lookup(a); err != nil || got != dialed {
			t.Errorf("Lookup = %v, %v; want %v", got, err, dialed)
		}
	})
	t.Run("direct", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		a, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		if got, err := Lookup(a); !errors.Is(err, ErrNotRedirected) {
			t.Errorf("Lookup of a connection that was not redirected = %v, %v; want ErrNotRedirected", got, err)
		}
	})
}

// Connections that are not TCP, or not redirected, are reported as such
// without a namespace.
func TestLookupNotRedirected(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, err := Lookup(wrapped{a}); !errors.Is(err, ErrNotRedirected) {
		t.Errorf("Lookup(pipe) error %v, want ErrNotRedirected", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, err := Lookup(s); !errors.Is(err, ErrNotRedirected) {
		t.Errorf("Lookup(direct loopback connection) = %v, %v; want ErrNotRedirected", got, err)
	}
}
