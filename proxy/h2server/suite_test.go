package h2server_test

import (
	"context"
	"net"
	"net/http"
	"sync"
	"testing"

	"github.com/meridian-mesh/meridian/proxy/h2server"
	"github.com/meridian-mesh/meridian/proxy/internal/h2suite"
)

// An external test package: h2suite imports h2server.

func TestConformance(t *testing.T) { h2suite.RunConformance(t, startTarget) }

// startTarget serves h with an h2server.Server on a loopback listener,
// every connection through ServeConn, until the test ends (as
// harness_test.go's startServer, which this package cannot reach).
func startTarget(t testing.TB, cfg h2server.Config, h http.Handler) *h2suite.Target {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &h2server.Server{Config: cfg, Handler: h}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { srv.ServeConn(context.Background(), c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		srv.Close()
		wg.Wait()
	})
	return &h2suite.Target{
		Addr: ln.Addr().String(),
		// Shutdown starts the drain and returns, as h2loop's does: a test
		// then sees the open streams run to their end. Close (at the
		// test's end) ends what is left of it.
		Shutdown: func() { wg.Go(func() { srv.Shutdown(context.Background()) }) },
	}
}
