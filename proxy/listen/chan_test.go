package listen

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"
)

// An http.Server serves the connections pushed to a Chan; after Close,
// Accept ends the server and Push refuses.
func TestChan(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := NewChan(ln.Addr())
	if ch.Addr() != ln.Addr() {
		t.Fatalf("Addr %v, want %v", ch.Addr(), ln.Addr())
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) })}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ch) }()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !ch.Push(c) {
				c.Close()
			}
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("response %v, %v", resp, err)
	}
	ch.Close()
	ch.Close() // idempotent
	select {
	case err := <-served:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Serve returned %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after Close")
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if ch.Push(a) {
		t.Fatal("Push after Close accepted a connection")
	}
}
