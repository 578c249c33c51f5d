package listen

import (
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/proxy/internal/netnstest"
)

// roundTrip dials addr, writes a line and reads what the server echoes.
func roundTrip(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 5)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "ping\n" {
		t.Fatalf("%s echoed %q, %v", addr, b, err)
	}
}

// echo serves ln until it is closed, echoing each connection.
func echo(ln net.Listener) <-chan error {
	done := make(chan error, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				done <- err
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return done
}

func TestDualStack(t *testing.T) {
	ln, err := Listen("127.0.0.1:0, [::1]:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	addrs := Addrs(ln)
	if len(addrs) != 2 || ln.Addr() != addrs[0] {
		t.Fatalf("addresses %v, Addr %v", addrs, ln.Addr())
	}
	if ip := addrs[0].(*net.TCPAddr).IP; ip.To4() == nil {
		t.Fatalf("first address %v is not IPv4", addrs[0])
	}
	if ip := addrs[1].(*net.TCPAddr).IP; ip.To4() != nil || !ip.IsLoopback() {
		t.Fatalf("second address %v is not IPv6 loopback", addrs[1])
	}
	done := echo(ln)
	for i := 0; i < 3; i++ {
		for _, a := range addrs {
			roundTrip(t, a.String())
		}
	}
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept did not return after Close")
	}
	for _, a := range addrs {
		if c, err := net.DialTimeout("tcp", a.String(), time.Second); err == nil {
			c.Close()
			t.Fatalf("%s still accepts after Close", a)
		}
	}
}

// The IPv4 and IPv6 wildcards on one port: two sockets, no conflict.
func TestWildcardsShareAPort(t *testing.T) {
	probe, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := probe.Addr().(*net.TCPAddr).Port
	probe.Close()
	ln, err := Listen(net.JoinHostPort("0.0.0.0", itoa(port))+","+net.JoinHostPort("::", itoa(port)), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	echo(ln)
	roundTrip(t, net.JoinHostPort("127.0.0.1", itoa(port)))
	roundTrip(t, net.JoinHostPort("::1", itoa(port)))
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestErrors(t *testing.T) {
	for _, c := range []struct{ addrs, want string }{
		{"", `"": no address to listen on`},
		{" , ", `no address to listen on`},
		{"127.0.0.1:0,nope", `"nope" is not an address like 127.0.0.1:4140 or [::1]:4140`},
	} {
		if _, err := Listen(c.addrs, nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Listen(%q): %v, want %q", c.addrs, err, c.want)
		}
	}
	// A port in use is an error, whatever the family, and nothing stays bound.
	busy, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	free, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freeAddr := free.Addr().String()
	free.Close()
	if _, err := Listen(freeAddr+","+busy.Addr().String(), nil); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("a busy IPv6 port: %v, want address already in use", err)
	}
	again, err := net.Listen("tcp4", freeAddr)
	if err != nil {
		t.Fatalf("the IPv4 address bound before the failure was not released: %v", err)
	}
	again.Close()
}

// In a network namespace without IPv6 (as in a pod of an IPv4-only
// cluster whose nodes turn IPv6 off), the IPv6 addresses are skipped; with
// none left, the error says so.
func TestNoIPv6(t *testing.T) {
	if !netnstest.Enter(t) {
		return
	}
	for _, f := range []string{"/proc/sys/net/ipv6/conf/all/disable_ipv6", "/proc/sys/net/ipv6/conf/lo/disable_ipv6"} {
		if err := os.WriteFile(f, []byte("1"), 0o644); err != nil {
			t.Skipf("cannot turn IPv6 off in this namespace: %v", err)
		}
	}
	ln, err := Listen("127.0.0.1:0,[::1]:0", nil)
	if err != nil {
		t.Fatalf("with IPv6 off: %v", err)
	}
	defer ln.Close()
	if as := Addrs(ln); len(as) != 1 || as[0].(*net.TCPAddr).IP.To4() == nil {
		t.Fatalf("listening on %v, want the IPv4 address only", as)
	}
	echo(ln)
	roundTrip(t, ln.Addr().String())
	if _, err := Listen("[::1]:0", nil); err == nil || !strings.Contains(err.Error(), "no IPv6 here") {
		t.Fatalf("IPv6 only, with IPv6 off: %v", err)
	}
}
