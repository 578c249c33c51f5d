package dstclient

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	pb "github.com/meridian-mesh/meridian/api/proto/destination"
)

// registry is a destination server that only serves Register, and reports
// each registration's start and end as the local-mode server does (the
// workload exists while its stream is open).
type registry struct {
	fakeAPI
	events chan string
}

func (r *registry) Register(w *pb.Workload, s grpc.ServerStreamingServer[pb.Registration]) error {
	r.events <- "registered " + w.GetName()
	defer func() { r.events <- "unregistered " + w.GetName() }()
	if err := s.Send(&pb.Registration{Token: "token-" + w.GetName()}); err != nil {
		return err
	}
	<-s.Context().Done()
	return nil
}

// readiness is a switchable Readiness.
type readiness struct {
	mu      sync.Mutex
	ready   bool
	changed chan struct{}
}

func (r *readiness) get() (bool, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ready, r.changed
}

func (r *readiness) set(v bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ready = v
	close(r.changed)
	r.changed = make(chan struct{})
}

func event(t *testing.T, ch <-chan string, want string) {
	t.Helper()
	select {
	case got := <-ch:
		if got != want {
			t.Fatalf("event %q, want %q", got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no event within 5s, want %q", want)
	}
}

// The registration is withdrawn while the application is not ready and made
// again when it is back; its token goes and comes with it.
func TestRegisterWithdrawnWhileNotReady(t *testing.T) {
	r := &registry{events: make(chan string, 16)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	pb.RegisterDestinationServer(s, r)
	go s.Serve(ln)
	defer s.Stop()
	addr := ln.Addr().String()

	c := client(t, addr)
	rd := &readiness{ready: true, changed: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.RegisterWhile(ctx, Workload{Name: "web-1", Namespace: "demo", Address: "127.0.0.1:4143"}, rd.get, nil)
	}()
	event(t, r.events, "registered web-1")
	waitToken(t, c, true)

	rd.set(false)
	event(t, r.events, "unregistered web-1")
	waitToken(t, c, false)
	rd.set(false) // still down: nothing happens
	rd.set(true)
	event(t, r.events, "registered web-1")
	waitToken(t, c, true)

	// A flap that ends ready keeps the registration.
	rd.set(true)
	select {
	case e := <-r.events:
		t.Fatalf("unexpected %q", e)
	case <-time.After(100 * time.Millisecond):
	}
	rd.set(false)
	event(t, r.events, "unregistered web-1")

	cancel()
	<-done
}

func waitToken(t *testing.T, c *Client, want bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := c.RegistrationToken()
		if (err == nil) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("token present = %v, want %v", err == nil, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
