package gwclient

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

// server sends, on each Watch, the snapshots it is given, then breaks the
// stream when told.
type server struct {
	gatewaypb.UnimplementedGatewayServer
	mu       sync.Mutex
	streams  int
	requests []*gatewaypb.WatchRequest
	send     chan *gatewaypb.Snapshot
	breakNow chan struct{}
}

func (s *server) Watch(req *gatewaypb.WatchRequest, stream grpc.ServerStreamingServer[gatewaypb.Snapshot]) error {
	s.mu.Lock()
	s.streams++
	s.requests = append(s.requests, req)
	s.mu.Unlock()
	for {
		select {
		case snap := <-s.send:
			if err := stream.Send(snap); err != nil {
				return err
			}
		case <-s.breakNow:
			return fmt.Errorf("broken on purpose")
		case <-stream.Context().Done():
			return nil
		}
	}
}

// The client applies every snapshot in order, reconnects after a broken
// stream (and after the server went away and came back on the same
// address), and applies nothing meanwhile.
func TestWatchReconnects(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	srv := &server{send: make(chan *gatewaypb.Snapshot), breakNow: make(chan struct{})}
	gs := grpc.NewServer()
	gatewaypb.RegisterGatewayServer(gs, srv)
	go gs.Serve(ln)

	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	applied := make(chan string, 10)
	c := New(cc, Options{Namespace: "ns", Name: "gw", Token: "ns/gw-pod", BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		c.Run(ctx, func(s *gatewaypb.Snapshot) error { applied <- s.GetVersion(); return nil })
		close(done)
	}()
	defer func() { cancel(); <-done }()
	expect := func(v string) {
		t.Helper()
		select {
		case got := <-applied:
			if got != v {
				t.Fatalf("applied %q, want %q", got, v)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%q never applied", v)
		}
	}
	sendTimeout := func(s *gatewaypb.Snapshot) {
		t.Helper()
		select {
		case srv.send <- s:
		case <-time.After(10 * time.Second):
			t.Fatalf("no stream took %q", s.GetVersion())
		}
	}
	sendTimeout(&gatewaypb.Snapshot{Version: "v1"})
	expect("v1")
	sendTimeout(&gatewaypb.Snapshot{Version: "v2"})
	expect("v2")
	srv.breakNow <- struct{}{}
	sendTimeout(&gatewaypb.Snapshot{Version: "v3"}) // on the stream opened again
	expect("v3")

	// The server goes away: nothing is applied; it comes back: the stream too.
	gs.Stop()
	select {
	case v := <-applied:
		t.Fatalf("applied %q while disconnected", v)
	case <-time.After(100 * time.Millisecond):
	}
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("the address was taken meanwhile: %v", err)
	}
	gs2 := grpc.NewServer()
	gatewaypb.RegisterGatewayServer(gs2, srv)
	go gs2.Serve(ln2)
	defer gs2.Stop()
	sendTimeout(&gatewaypb.Snapshot{Version: "v4"})
	expect("v4")
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.streams < 3 {
		t.Errorf("%d streams, want at least 3", srv.streams)
	}
	if r := srv.requests[0]; r.GetNamespace() != "ns" || r.GetName() != "gw" || r.GetContextToken() != "ns/gw-pod" {
		t.Errorf("request %v", r)
	}
}
