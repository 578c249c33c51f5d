package sidecar

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/discover"
)

// vip is a service's virtual address (a ClusterIP). Connections are never
// made to it: the proxy is told, through Config.OrigDst, that the client
// was redirected from it, as iptables would.
const vip = "127.0.0.253:6379"

// opaqueChain is client → proxy A outbound (redirected from vip) → proxy B
// inbound → app, for an app speaking a protocol that is not HTTP.
func opaqueChain(t *testing.T, app string, cfg Config) *testProxy {
	t.Helper()
	bcfg := cfg
	bcfg.InboundForward = app
	b := startProxy(t, bcfg)
	acfg := cfg
	d := dst("kv.test:6379", b.in)
	d.Addresses = []string{vip}
	acfg.Resolver = staticResolver(t, d)
	acfg.OrigDst = fixedOrigDst(vip)
	return startProxy(t, acfg)
}

// readFrame and writeFrame are a length-prefixed binary protocol whose
// first byte (a zero) is not HTTP.
func writeFrame(w io.Writer, p []byte) error {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(p)))
	_, err := w.Write(append(b, p...))
	return err
}

func readFrame(r io.Reader) ([]byte, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	p := make([]byte, binary.BigEndian.Uint32(n[:]))
	_, err := io.ReadFull(r, p)
	return p, err
}

// A client-speaks-first binary protocol goes through the chain as bytes,
// including a half-close by the client: the server reads EOF and still
// answers.
func TestOpaqueClientFirstAndHalfClose(t *testing.T) {
	appGotEOF := make(chan int, 1)
	app := startTCP(t, func(c net.Conn) {
		frames := 0
		for {
			p, err := readFrame(c)
			if err == io.EOF {
				break
			}
			if err != nil {
				return
			}
			frames++
			if writeFrame(c, bytes.ToUpper(p)) != nil {
				return
			}
		}
		appGotEOF <- frames
		// The client is done sending; the reply still flows back.
		writeFrame(c, []byte("bye after "+strconv.Itoa(frames)))
	})
	a := opaqueChain(t, app.addr, Config{})

	c := dialTCP(t, a.out)
	for i := range 50 {
		msg := bytes.Repeat([]byte(fmt.Sprintf("frame-%d;", i)), i*20+1)
		if err := writeFrame(c, msg); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		got, err := readFrame(c)
		if err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if !bytes.Equal(got, bytes.ToUpper(msg)) {
			t.Fatalf("frame %d came back as %q", i, got)
		}
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n := <-appGotEOF; n != 50 {
		t.Fatalf("app read %d frames before EOF, want 50", n)
	}
	got, err := readFrame(c)
	if err != nil || string(got) != "bye after 50" {
		t.Fatalf("reply after half-close: %q, %v", got, err)
	}
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after the app closed: %v, want EOF", err)
	}
}

// The server half-closes first; the client reads EOF and can still send.
func TestOpaqueServerHalfClose(t *testing.T) {
	appGot := make(chan string, 1)
	app := startTCP(t, func(c net.Conn) {
		c.Write([]byte("greeting, then I stop talking\n"))
		c.(*net.TCPConn).CloseWrite()
		b, _ := io.ReadAll(c)
		appGot <- string(b)
	})
	a := opaqueChain(t, app.addr, Config{DetectTimeout: 100 * time.Millisecond})

	c := dialTCP(t, a.out)
	got, err := io.ReadAll(c) // until the server's half-close reaches us
	if err != nil || string(got) != "greeting, then I stop talking\n" {
		t.Fatalf("read %q, %v", got, err)
	}
	if _, err := c.Write([]byte("still here")); err != nil {
		t.Fatalf("writing after the server's half-close: %v", err)
	}
	c.CloseWrite()
	if s := <-appGot; s != "still here" {
		t.Fatalf("app received %q after its half-close, want %q", s, "still here")
	}
}

// A server-speaks-first protocol: the client sends nothing until it gets a
// banner, so detection must give up (DetectTimeout) and fall back to opaque.
func TestOpaqueServerSpeaksFirst(t *testing.T) {
	app := startTCP(t, func(c net.Conn) {
		fmt.Fprintf(c, "220 mail.test ESMTP ready\r\n")
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if line == "QUIT\r\n" {
				fmt.Fprintf(c, "221 bye\r\n")
				return
			}
			fmt.Fprintf(c, "250 ok %s", line)
		}
	})
	a := opaqueChain(t, app.addr, Config{DetectTimeout: 100 * time.Millisecond})

	c := dialTCP(t, a.out)
	r := bufio.NewReader(c)
	if banner, err := r.ReadString('\n'); err != nil || banner != "220 mail.test ESMTP ready\r\n" {
		t.Fatalf("banner %q, %v", banner, err)
	}
	fmt.Fprintf(c, "HELO client.test\r\n")
	if line, err := r.ReadString('\n'); err != nil || line != "250 ok HELO client.test\r\n" {
		t.Fatalf("reply %q, %v", line, err)
	}
	fmt.Fprintf(c, "QUIT\r\n")
	if line, err := r.ReadString('\n'); err != nil || line != "221 bye\r\n" {
		t.Fatalf("reply %q, %v", line, err)
	}
	if _, err := r.ReadByte(); err != io.EOF {
		t.Fatalf("after QUIT: %v, want EOF", err)
	}
}

// Opaque ports are never detected: bytes that look like HTTP are copied,
// not parsed, on both the outbound (original destination port) and the
// inbound (forward port) side.
func TestOpaquePorts(t *testing.T) {
	echo := startTCP(t, func(c net.Conn) { io.Copy(c, c) })
	_, fwdPort, _ := net.SplitHostPort(echo.addr)
	n, _ := strconv.Atoi(fwdPort)
	a := opaqueChain(t, echo.addr, Config{OpaquePorts: []uint16{6379, uint16(n)}})

	c := dialTCP(t, a.out)
	req := "GET / HTTP/1.1\r\nHost: kv.test\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != req {
		t.Fatalf("echo of an HTTP-looking request on an opaque port: %q, %v; want the bytes back", got, err)
	}
}

// An outbound connection redirected from a service's virtual address is
// balanced over that service's endpoints, connection by connection.
func TestOpaqueOutboundBalancesConnections(t *testing.T) {
	names := []string{"kv-0", "kv-1", "kv-2"}
	var eps []string
	for _, name := range names {
		eps = append(eps, startTCP(t, func(c net.Conn) {
			// Answer the client's first frame with the server's name.
			if _, err := readFrame(c); err == nil {
				writeFrame(c, []byte(name))
			}
		}).addr)
	}
	d := dst("kv.test:6379", eps...)
	d.Addresses = []string{vip}
	a := startProxy(t, Config{Resolver: staticResolver(t, d), OrigDst: fixedOrigDst(vip),
		Balancer: balance.RoundRobin})

	const total = 90
	var served tally
	for i := range total {
		c := dialTCP(t, a.out)
		if err := writeFrame(c, []byte("who")); err != nil {
			t.Fatal(err)
		}
		name, err := readFrame(c)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		c.Close()
		served.add(string(name))
	}
	assertEven(t, &served, total, names...)
}

// A redirected connection to an address no destination owns goes to that
// address itself.
func TestOpaqueOutboundPassthrough(t *testing.T) {
	echo := startTCP(t, func(c net.Conn) { io.Copy(c, c) })
	a := startProxy(t, Config{Resolver: staticResolver(t, discover.Destination{Authority: "other.test:80"}),
		OrigDst: fixedOrigDst(echo.addr)})
	c := dialTCP(t, a.out)
	writeFrame(c, []byte("passthrough"))
	if got, err := readFrame(c); err != nil || string(got) != "passthrough" {
		t.Fatalf("echo through the outbound passthrough: %q, %v", got, err)
	}
}
