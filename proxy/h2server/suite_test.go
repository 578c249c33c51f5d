// The suites both HTTP/2 servers pass (proxy/internal/h2suite), against
// h2server. An external test package: h2suite imports h2server, so
// h2server's own test package could not import h2suite.
package h2server_test

import (
	"context"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/meridian-mesh/meridian/proxy/h2server"
	"github.com/meridian-mesh/meridian/proxy/internal/h2suite"
	"github.com/meridian-mesh/meridian/proxy/internal/h2test"
)

func TestConformance(t *testing.T) { h2suite.RunConformance(t, suiteTarget) }

func TestBehaviour(t *testing.T) { h2suite.RunBehaviour(t, suiteTarget) }

func TestGRPC(t *testing.T) { h2suite.RunGRPC(t, suiteTarget) }

// suiteTarget is an h2suite.Start: a Server with cfg serving h on a
// loopback listener, each connection through ServeConn.
func suiteTarget(t testing.TB, cfg h2server.Config, h http.Handler) *h2suite.Target {
	t.Helper()
	logged := &syncBuilder{}
	if cfg.ErrorLog == nil {
		cfg.ErrorLog = log.New(logged, "", 0)
	}
	srv := &h2server.Server{Config: cfg, Handler: h}
	// base is ServeConn's context, which EndContext ends; life ends with
	// the test, and with it a Shutdown still waiting.
	base, endBase := context.WithCancel(context.Background())
	life, endLife := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	serve := func(c net.Conn) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv.ServeConn(base, c)
		}()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			serve(c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		endLife()
		endBase()
		srv.Close()
		wg.Wait()
	})
	return &h2suite.Target{
		Addr: ln.Addr().String(),
		// Its error is life's, ended with the test: the suite's own
		// wait for it has failed by then.
		Shutdown:   func() { srv.Shutdown(life) },
		Log:        logged.String,
		EndContext: endBase,
		DialCounting: func(t testing.TB) (net.Conn, func() int) {
			t.Helper()
			cc, sc := tcpPair(t)
			counted := &countingConn{Conn: sc}
			serve(counted)
			return cc, func() int { return int(counted.writes.Load()) }
		},
		ErrHandlerComplete: h2server.ErrHandlerComplete,
	}
}

// tcpPair is a loopback TCP connection's two ends, the client's closed
// when the test ends (the server's is the server's to close).
func tcpPair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.DialTimeout("tcp", ln.Addr().String(), h2test.Timeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	if server, err = ln.Accept(); err != nil {
		t.Fatal(err)
	}
	return client, server
}

// countingConn counts the server's writes on it.
type countingConn struct {
	net.Conn
	writes atomic.Int32
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// syncBuilder is a strings.Builder for a logger's writes from the
// server's goroutines.
type syncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuilder) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuilder) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
