package sidecar

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/proxy/authz"
	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/tlsid/tlsidtest"
)

// A client connection that stays silent past the detect timeout (a spare
// in an HTTP client's pool) and then carries requests is served as HTTP:
// each request balanced on its own, not all of them spliced to the one
// endpoint an opaque stream would have been given. Redirected from a
// service address (the destination is dialed in case the server speaks
// first, then dropped) or not (nothing to dial: the client is waited for).
func TestSilentConnectionThenHTTPIsBalanced(t *testing.T) {
	names := []string{"web-0", "web-1", "web-2"}
	var apps []string
	for _, n := range names {
		apps = append(apps, startHTTP(t, named(n)).addr)
	}
	eps := serverSidecars(t, apps...)
	for _, tc := range []struct {
		name       string
		redirected bool
		h2         bool
	}{
		{"http1 redirected", true, false},
		{"http1 not redirected", false, false},
		{"h2c redirected", true, true},
		{"h2c not redirected", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := dst("web.test:80", eps...)
			cfg := Config{Balancer: balance.RoundRobin, DetectTimeout: 50 * time.Millisecond}
			if tc.redirected {
				d.Addresses = []string{vip}
				cfg.OrigDst = fixedOrigDst(vip)
			}
			cfg.Resolver = staticResolver(t, d)
			a := startProxy(t, cfg)
			client, dialer := h1Client(t, a.out)
			if tc.h2 {
				client, dialer = h2cClient(t, a.out)
			}
			dialer.silence = 300 * time.Millisecond

			const total = 30
			var served tally
			for i := range total {
				resp, err := client.Get("http://web.test/")
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("request %d: %s", i, resp.Status)
				}
				served.add(resp.Header.Get("X-Server"))
			}
			if n := dialer.dials.Load(); n != 1 {
				t.Errorf("client opened %d connections, want 1", n)
			}
			assertEven(t, &served, total, names...)
		})
	}
}

// A silent client that then speaks first in a protocol that is not HTTP
// gets the connection that was dialed for it: one connection reaches the
// server, and no byte is lost either way.
func TestSilentConnectionThenOpaqueBytes(t *testing.T) {
	var accepted atomic.Int32
	app := startTCP(t, func(c net.Conn) {
		accepted.Add(1)
		for {
			p, err := readFrame(c)
			if err != nil {
				return
			}
			writeFrame(c, append([]byte("got "), p...))
		}
	})
	a := opaqueChain(t, app.addr, Config{DetectTimeout: 50 * time.Millisecond})
	c := dialTCP(t, a.out)
	time.Sleep(300 * time.Millisecond)
	for i := range 3 {
		msg := fmt.Sprintf("frame %d", i)
		if err := writeFrame(c, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		got, err := readFrame(c)
		if err != nil || string(got) != "got "+msg {
			t.Fatalf("reply %q, %v; want %q", got, err, "got "+msg)
		}
	}
	c.Close()
	if n := accepted.Load(); n != 1 {
		t.Errorf("the server accepted %d connections, want 1", n)
	}
}

// The inbound policy refuses opaque streams from a plaintext client, so
// nothing is dialed for its silent connection; a request it sends later
// is still answered, by the HTTP policy (403), and an opaque byte after
// the silence is refused and counted as before.
func TestSilentConnectionRefusedOpaque(t *testing.T) {
	svc := tlsidtest.Start(t, time.Hour)
	var accepted atomic.Int32
	app := startHTTP(t, named("app"))
	counting := startTCP(t, func(c net.Conn) {
		accepted.Add(1)
		up, err := net.Dial("tcp", app.addr)
		if err != nil {
			return
		}
		go io.Copy(up, c)
		io.Copy(c, up)
		up.Close()
	})
	server := startProxy(t, Config{InboundForward: counting.addr, DetectTimeout: 50 * time.Millisecond,
		Identity: svc.Identity(t, "emojivoto", "emoji"), Authz: authz.Config{Default: authz.AllAuthenticated}})
	meshedScraper(t, svc, server, "monitoring", "prometheus")

	c := dialTCP(t, server.in)
	time.Sleep(300 * time.Millisecond)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: web.test\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(testTimeout))
	got := make([]byte, 12)
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, []byte("HTTP/1.1 403")) {
		t.Fatalf("answer %q, %v; want HTTP/1.1 403", got, err)
	}
	c.Close()

	c = dialTCP(t, server.in)
	time.Sleep(300 * time.Millisecond)
	c.Write([]byte("\x00\x01binary"))
	c.SetReadDeadline(time.Now().Add(testTimeout))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("opaque bytes after silence: read %d, %v; want the connection closed", n, err)
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("the application accepted %d connections for refused clients, want 0", n)
	}
	expectMetric(t, server.admin, "inbound_authz_deny_total", labels("protocol", "tcp", "policy", "all-authenticated"), 1)
}
