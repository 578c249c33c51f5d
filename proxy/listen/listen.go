// Package listen binds the proxy's listeners: a comma-separated list of
// addresses, one socket per address, merged into one net.Listener.
//
// A pod may be IPv4-only, IPv6-only or dual-stack, and meridian-init
// redirects both families: IPv4 to 127.0.0.1:4140 and <pod IP>:4143, IPv6 to
// [::1]:4140 and [<pod IP>]:4143. So the proxy listens on
// "127.0.0.1:4140,[::1]:4140" and "0.0.0.0:4143,[::]:4143". Each address
// gets a socket of its own family (an IPv6 one is IPv6-only), so that the
// two never collide and SO_ORIGINAL_DST is asked in the socket's own family.
// An IPv6 address is skipped, with a log line, when the pod has no IPv6 at
// all; any other failure to bind is an error.
package listen

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"

	"github.com/meridian-mesh/meridian/proxy/internal/rawconn"
)

// Listen binds every address of addrs (comma-separated) and returns one
// listener accepting from all of them. Its Addr is the first bound address.
func Listen(addrs string, log *slog.Logger) (net.Listener, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	list, err := Split(addrs)
	if err != nil {
		return nil, err
	}
	var lns []net.Listener
	var skipped []string
	for _, a := range list {
		ln, err := net.Listen(network(a), a)
		if err != nil {
			if network(a) == "tcp6" && noIPv6(err) {
				skipped = append(skipped, a)
				continue
			}
			for _, l := range lns {
				l.Close()
			}
			return nil, err
		}
		// Its connections read and write without waking the runtime's
		// monitor thread (proxy/internal/rawconn).
		lns = append(lns, rawconn.Listener{Listener: ln})
	}
	if len(lns) == 0 {
		return nil, fmt.Errorf("listen %s: no IPv6 here, and no other address to listen on", addrs)
	}
	if len(skipped) > 0 {
		log.Info("no IPv6 in this network namespace: not listening on its addresses", "skipped", strings.Join(skipped, ","))
	}
	if len(lns) == 1 {
		return lns[0], nil
	}
	return merge(lns), nil
}

// Split parses a comma-separated list of host:port addresses.
func Split(addrs string) ([]string, error) {
	var list []string
	for _, a := range strings.Split(addrs, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("%q is not an address like 127.0.0.1:4140 or [::1]:4140: %w", a, err)
		}
		list = append(list, a)
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("%q: no address to listen on", addrs)
	}
	return list, nil
}

// network is tcp6 for an IPv6 literal, tcp4 for an IPv4 one: one socket
// per family. A name (localhost:4140) is left to the resolver.
func network(addr string) string {
	host, _, _ := net.SplitHostPort(addr)
	ip := net.ParseIP(host)
	switch {
	case ip == nil:
		return "tcp"
	case ip.To4() != nil:
		return "tcp4"
	}
	return "tcp6"
}

// noIPv6 reports a bind failure that says this network namespace has no
// IPv6: the kernel's IPv6 is off (EAFNOSUPPORT), or the address is not
// configured because IPv6 is disabled on the interfaces (EADDRNOTAVAIL).
func noIPv6(err error) bool {
	return errors.Is(err, syscall.EAFNOSUPPORT) || errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EPROTONOSUPPORT)
}

// multi accepts from several listeners. Accept errors other than closing
// are passed on (the caller backs off, as for any listener).
type multi struct {
	lns    []net.Listener
	conns  chan accepted
	closed chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
}

type accepted struct {
	c   net.Conn
	err error
}

func merge(lns []net.Listener) *multi {
	m := &multi{lns: lns, conns: make(chan accepted), closed: make(chan struct{})}
	for _, ln := range lns {
		m.wg.Add(1)
		go m.serve(ln)
	}
	return m
}

func (m *multi) serve(ln net.Listener) {
	defer m.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil && errors.Is(err, net.ErrClosed) {
			return
		}
		select {
		case m.conns <- accepted{c, err}:
		case <-m.closed:
			if c != nil {
				c.Close()
			}
			return
		}
	}
}

func (m *multi) Accept() (net.Conn, error) {
	select {
	case a := <-m.conns:
		return a.c, a.err
	case <-m.closed:
		return nil, net.ErrClosed
	}
}

// Close closes every listener; connections accepted but not yet taken by
// Accept are closed too.
func (m *multi) Close() error {
	var err error
	m.once.Do(func() {
		close(m.closed)
		for _, ln := range m.lns {
			err = errors.Join(err, ln.Close())
		}
		m.wg.Wait()
	})
	return err
}

func (m *multi) Addr() net.Addr { return m.lns[0].Addr() }

// Addrs returns the addresses ln listens on (one for a plain listener).
func Addrs(ln net.Listener) []net.Addr {
	if m, ok := ln.(*multi); ok {
		as := make([]net.Addr, len(m.lns))
		for i, l := range m.lns {
			as[i] = l.Addr()
		}
		return as
	}
	return []net.Addr{ln.Addr()}
}

// ListenUDP binds a UDP socket on every address of addrs (comma-separated),
// as Listen does for TCP: one socket per family (an IPv6 one IPv6-only), an
// IPv6 address skipped when the network namespace has none. Datagrams carry
// no connection to merge, so the caller reads each socket and answers a
// client from the socket it came in on.
func ListenUDP(addrs string, log *slog.Logger) ([]*net.UDPConn, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	list, err := Split(addrs)
	if err != nil {
		return nil, err
	}
	var conns []*net.UDPConn
	var skipped []string
	for _, a := range list {
		nw := "udp" + strings.TrimPrefix(network(a), "tcp")
		ua, err := net.ResolveUDPAddr(nw, a)
		if err == nil {
			var c *net.UDPConn
			if c, err = net.ListenUDP(nw, ua); err == nil {
				conns = append(conns, c)
				continue
			}
		}
		if nw == "udp6" && noIPv6(err) {
			skipped = append(skipped, a)
			continue
		}
		for _, c := range conns {
			c.Close()
		}
		return nil, err
	}
	if len(conns) == 0 {
		return nil, fmt.Errorf("listen %s: no IPv6 here, and no other address to listen on", addrs)
	}
	if len(skipped) > 0 {
		log.Info("no IPv6 in this network namespace: not listening on its addresses", "skipped", strings.Join(skipped, ","))
	}
	return conns, nil
}
