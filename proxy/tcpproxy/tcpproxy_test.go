package tcpproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// pair returns both ends of a loopback TCP connection, with a deadline
// that bounds the test.
func pair(t *testing.T) (dialed, accepted *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	c.SetDeadline(deadline)
	s.SetDeadline(deadline)
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// spliced is client ⇄ [proxyIn | Splice | proxyOut] ⇄ server.
func spliced(t *testing.T, wrap func(net.Conn) net.Conn) (client, server *net.TCPConn, done <-chan error) {
	t.Helper()
	client, proxyIn := pair(t)
	proxyOut, server := pair(t)
	ch := make(chan error, 1)
	go func() { ch <- Splice(wrap(proxyIn), wrap(proxyOut)) }()
	return client, server, ch
}

func bare(c net.Conn) net.Conn { return c }

// opaqueConn hides CloseWrite, as a wrapper that embeds net.Conn would.
type opaqueConn struct{ net.Conn }

func hide(c net.Conn) net.Conn { return opaqueConn{c} }

func wait(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("Splice did not return")
		return nil
	}
}

// The client finishes sending first: the server sees EOF and can still
// answer, at length.
func TestSpliceClientHalfClose(t *testing.T) {
	client, server, done := spliced(t, bare)
	req := bytes.Repeat([]byte("request "), 100000)
	go func() {
		client.Write(req)
		client.CloseWrite()
	}()
	got, err := io.ReadAll(server)
	if err != nil || !bytes.Equal(got, req) {
		t.Fatalf("server read %d bytes (%v), want %d then EOF", len(got), err, len(req))
	}
	resp := bytes.Repeat([]byte("response "), 100000)
	if _, err := server.Write(resp); err != nil {
		t.Fatalf("server writing after the client's half-close: %v", err)
	}
	server.Close()
	got, err = io.ReadAll(client)
	if err != nil || !bytes.Equal(got, resp) {
		t.Fatalf("client read %d bytes (%v), want %d then EOF", len(got), err, len(resp))
	}
	if err := wait(t, done); err != nil {
		t.Errorf("Splice: %v", err)
	}
}

// The server finishes sending first: the client sees EOF and can still send.
func TestSpliceServerHalfClose(t *testing.T) {
	client, server, done := spliced(t, bare)
	server.Write([]byte("banner"))
	server.CloseWrite()
	got, err := io.ReadAll(client)
	if err != nil || string(got) != "banner" {
		t.Fatalf("client read %q, %v; want banner then EOF", got, err)
	}
	if _, err := client.Write([]byte("still talking")); err != nil {
		t.Fatalf("client writing after the server's half-close: %v", err)
	}
	client.CloseWrite()
	got, err = io.ReadAll(server)
	if err != nil || string(got) != "still talking" {
		t.Fatalf("server read %q, %v after its half-close", got, err)
	}
	server.Close()
	if err := wait(t, done); err != nil {
		t.Errorf("Splice: %v", err)
	}
}

// Without CloseWrite, a finished direction closes the connection: the
// peer still sees EOF, and Splice still returns.
func TestSpliceWithoutCloseWrite(t *testing.T) {
	client, server, done := spliced(t, hide)
	client.Write([]byte("ping"))
	client.CloseWrite()
	got, err := io.ReadAll(server)
	if err != nil || string(got) != "ping" {
		t.Fatalf("server read %q, %v", got, err)
	}
	server.Close()
	if _, err := io.ReadAll(client); err != nil {
		t.Fatalf("client: %v", err)
	}
	wait(t, done)
}

// A reset on one side ends the other and Splice, with the error.
func TestSpliceReset(t *testing.T) {
	client, server, done := spliced(t, bare)
	client.Write([]byte("x"))
	if _, err := io.ReadFull(server, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	server.SetLinger(0)
	server.Close() // RST
	if err := wait(t, done); err == nil {
		t.Error("Splice returned no error after a reset")
	}
	// The client's connection is closed too; it does not hang.
	_, err := io.ReadAll(client)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the client's side was left open after the server's reset")
	}
}

// A stream with no byte either way for the idle timeout is closed on both
// sides, and SpliceIdle says why.
func TestSpliceIdleCloses(t *testing.T) {
	client, proxyIn := pair(t)
	proxyOut, server := pair(t)
	done := make(chan error, 1)
	go func() { done <- SpliceIdle(proxyIn, proxyOut, 100*time.Millisecond) }()
	if err := wait(t, done); !errors.Is(err, ErrIdle) {
		t.Fatalf("SpliceIdle = %v, want ErrIdle", err)
	}
	for name, c := range map[string]net.Conn{"client": client, "server": server} {
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("%s read %v, want EOF", name, err)
		}
	}
}

// Traffic in one direction only keeps the stream alive.
func TestSpliceIdleOneWayTrafficIsActive(t *testing.T) {
	client, proxyIn := pair(t)
	proxyOut, server := pair(t)
	done := make(chan error, 1)
	go func() { done <- SpliceIdle(proxyIn, proxyOut, 500*time.Millisecond) }()
	// The server sends for well past the idle timeout; the client only reads.
	go func() {
		for range 40 {
			if _, err := server.Write([]byte("tick")); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond) // pacing below the idle timeout, not synchronisation
		}
		server.CloseWrite()
	}()
	got, err := io.ReadAll(client)
	if err != nil || string(got) != string(bytes.Repeat([]byte("tick"), 40)) {
		t.Fatalf("client read %q, %v", got, err)
	}
	client.CloseWrite()
	if err := wait(t, done); err != nil {
		t.Fatalf("SpliceIdle = %v, want a clean end", err)
	}
}
