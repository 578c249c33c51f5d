package h2server

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

const testTimeout = 10 * time.Second

type testServer struct {
	srv  *Server
	addr string
	ln   net.Listener
	wg   sync.WaitGroup
	tls  *tls.Config
}

// startServer serves h on a loopback listener, every connection through
// ServeConn (after a TLS handshake when tlsCfg is set).
func startServer(t testing.TB, cfg Config, h http.Handler, tlsCfg ...*tls.Config) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{srv: &Server{Config: cfg, Handler: h}, addr: ln.Addr().String(), ln: ln}
	if len(tlsCfg) > 0 {
		ts.tls = tlsCfg[0]
	}
	ts.wg.Add(1)
	go func() {
		defer ts.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ts.wg.Add(1)
			go func() {
				defer ts.wg.Done()
				if ts.tls != nil {
					tc := tls.Server(c, ts.tls)
					if tc.Handshake() != nil {
						c.Close()
						return
					}
					c = tc
				}
				ts.srv.ServeConn(context.Background(), c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		ts.srv.Close()
		ts.wg.Wait()
	})
	return ts
}

// h2cClient is Go's HTTP/2 client, prior knowledge.
func h2cClient(t testing.TB) *http.Client {
	tr := &http.Transport{}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: testTimeout}
}
