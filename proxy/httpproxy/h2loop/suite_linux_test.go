package h2loop

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/meridian-mesh/meridian/proxy/h2server"
	"github.com/meridian-mesh/meridian/proxy/internal/evloop"
	"github.com/meridian-mesh/meridian/proxy/internal/h2suite"
)

// The suites proxy/h2server passes (proxy/internal/h2suite), against a
// Server serving a Bridge (h2server's rules for an http.Handler) on a
// loop.

func TestConformance(t *testing.T) { h2suite.RunConformance(t, bridgeTarget) }

func TestBridgeBehaviour(t *testing.T) { h2suite.RunBehaviour(t, bridgeTarget) }

func TestBridgeGRPC(t *testing.T) { h2suite.RunGRPC(t, bridgeTarget) }

// bridgeTarget is an h2suite.Start: a Server with cfg serving h through a
// Bridge on a loop of its own, accepting on loopback, until the test
// ends: then the listener is closed, and the loop (which closes its
// connections).
func bridgeTarget(t testing.TB, cfg h2server.Config, h http.Handler) *h2suite.Target {
	t.Helper()
	lp, err := evloop.New()
	if err != nil {
		t.Fatal(err)
	}
	logged := &bridgeLog{}
	// base is what the requests' contexts derive from (EndContext ends
	// it); life ends with the test, and with it a Shutdown still waiting.
	base, endBase := context.WithCancel(context.Background())
	life, endLife := context.WithCancel(context.Background())
	srv := &Server{
		Config:  cfg,
		Handler: &Bridge{Handler: h, BaseContext: func(*Stream) context.Context { return base }, Logf: logged.logf},
		Logf:    logged.logf,
	}
	addr := confLoop(t, lp, srv, nil)
	t.Cleanup(func() { // before the loop's end (cleanups run last first)
		endLife()
		endBase()
	})
	return &h2suite.Target{
		Addr: addr,
		// The Server's Shutdown only posts the GOAWAYs: h2server's returns
		// once every connection has closed, and so does this, by the
		// Server's own record of its connections.
		Shutdown: func() {
			srv.Shutdown()
			for {
				srv.mu.Lock()
				n := len(srv.conns)
				srv.mu.Unlock()
				if n == 0 {
					return
				}
				select {
				case <-life.Done():
					return
				case <-time.After(time.Millisecond):
				}
			}
		},
		Log:                logged.String,
		EndContext:         endBase,
		DialCounting:       func(t testing.TB) (net.Conn, func() int) { return bridgeServePacket(t, lp, srv) },
		ErrHandlerComplete: errHandlerComplete,
	}
}

// bridgeLog keeps what the server and the Bridge log (a handler's
// goroutine may log after the test).
type bridgeLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *bridgeLog) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(&l.b, format+"\n", args...)
}

func (l *bridgeLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// bridgeServePacket serves a connection over a SOCK_SEQPACKET socket
// pair and returns the client's end with the count of packets it has
// read: the loop's writes are its own system calls, not a net.Conn's to
// wrap, and each arrives as one packet.
func bridgeServePacket(t testing.TB, lp *evloop.Loop, srv *Server) (net.Conn, func() int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[1]), "client")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		unix.Close(fds[0])
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var serr error
	confOn(t, lp, func() { serr = srv.Serve(lp, fds[0], "client", nil) })
	if serr != nil {
		unix.Close(fds[0])
		t.Fatal(serr)
	}
	pc := &packetConn{Conn: c, buf: make([]byte, 1<<20)}
	return pc, pc.count
}

// packetConn is the client's end of a SOCK_SEQPACKET socket pair, which
// counts the packets it reads.
type packetConn struct {
	net.Conn
	mu      sync.Mutex
	packets int
	buf     []byte
	rest    []byte
}

func (c *packetConn) Read(p []byte) (int, error) {
	if len(c.rest) == 0 {
		n, err := c.Conn.Read(c.buf)
		if n == 0 {
			return 0, err
		}
		c.mu.Lock()
		c.packets++
		c.mu.Unlock()
		c.rest = c.buf[:n]
	}
	n := copy(p, c.rest)
	c.rest = c.rest[n:]
	return n, nil
}

func (c *packetConn) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.packets
}
