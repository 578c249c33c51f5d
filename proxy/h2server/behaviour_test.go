package h2server

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/meridian-mesh/meridian/proxy/internal/ctxwatch"
	"github.com/meridian-mesh/meridian/proxy/internal/h2test"
)

// The handler-level behaviour both HTTP/2 servers share is
// proxy/internal/h2suite's, run by suite_behaviour_test.go; what is here
// is h2server's own.

// ErrHandlerComplete is for the external test package's h2suite.Target
// (an internal test file's exports are visible to it).
var ErrHandlerComplete = errHandlerComplete

// TestStreamContextWatch: h1client's watch of a request's context
// (ctxwatch) is taken on a stream's context, not on one derived from it,
// and runs at the handler's end, at the client's RST_STREAM while the
// handler runs, and at the end of the connection's context.
func TestStreamContextWatch(t *testing.T) {
	watched := make(chan string, 4)
	started, ended := make(chan struct{}, 4), make(chan struct{}, 4)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		if _, _, ok := ctxwatch.Watch(ctx, func() { watched <- r.URL.Path }); !ok {
			t.Errorf("%s: the request's context has no free watch", r.URL.Path)
		}
		derived, cancel := context.WithCancel(ctx)
		defer cancel()
		if _, _, ok := ctxwatch.Watch(derived, func() {}); ok {
			t.Errorf("%s: a derived context took the watch", r.URL.Path)
		}
		if r.URL.Path == "/done" {
			return
		}
		defer func() { ended <- struct{}{} }()
		started <- struct{}{}
		<-derived.Done() // linked to the stream's without a goroutine
		select {
		case p := <-watched:
			if p != r.URL.Path {
				t.Errorf("watch of %s ran for %s", p, r.URL.Path)
			}
		case <-time.After(testTimeout):
			t.Errorf("%s: the context ended, its watch did not run", r.URL.Path)
		}
	})
	wait := func(what string) {
		t.Helper()
		select {
		case p := <-watched:
			if p != what {
				t.Fatalf("watch of %s ran, want %s", p, what)
			}
		case <-time.After(testTimeout):
			t.Fatalf("the watch of %s did not run", what)
		}
	}

	ts := startServer(t, Config{}, h)
	rc := h2test.Dial(t, ts.addr)
	rc.Handshake()
	rc.Headers(1, true, ":method", "GET", ":scheme", "http", ":authority", "a", ":path", "/done")
	if r := rc.Response(1); r.Status != "200" {
		t.Fatal(r.Status)
	}
	wait("/done")
	rc.Headers(3, true, ":method", "GET", ":scheme", "http", ":authority", "a", ":path", "/reset")
	<-started
	rc.Fr.WriteRSTStream(3, http2.ErrCodeCancel)
	<-ended

	// The connection's context ends: its streams' watches run.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := &Server{Handler: h}
	defer srv.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			srv.ServeConn(ctx, c)
		}
	}()
	rc2 := h2test.Dial(t, ln.Addr().String())
	rc2.Handshake()
	rc2.Headers(1, true, ":method", "GET", ":scheme", "http", ":authority", "a", ":path", "/conn")
	<-started
	cancel()
	<-ended
}
