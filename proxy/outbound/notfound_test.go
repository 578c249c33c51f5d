package outbound

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/proxy/discover"
)

// A resolver that cannot say when an unknown authority appears (static
// destinations) has its "not found" kept for NotFoundTTL: a thousand Gets
// cost one lookup, and after the TTL the authority is resolved again.
func TestNotFoundKept(t *testing.T) {
	r := newResolver(t)
	c := New(Options{Resolver: r, NotFoundTTL: 200 * time.Millisecond})
	defer c.Close()
	for range 1000 {
		if _, err := c.Get(context.Background(), "nope.ns.svc:80"); !errors.Is(err, discover.ErrNotFound) {
			t.Fatalf("Get(unknown) = %v, want ErrNotFound", err)
		}
	}
	if n := r.resolves.Load(); n != 1 {
		t.Fatalf("%d lookups for 1000 Gets within the TTL, want 1", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.resolves.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the kept answer never expired: the authority was not resolved again")
		}
		time.Sleep(50 * time.Millisecond)
		c.Get(context.Background(), "nope.ns.svc:80")
	}
}

// watchingResolver answers every authority "not found" with a
// discover.NotFoundError whose watch the test ends by closing appeared;
// after that the authority resolves to no endpoints (it exists).
type watchingResolver struct {
	appeared chan struct{}
	resolves atomic.Int64
	stops    atomic.Int64
	asked    chan string
}

func (r *watchingResolver) Resolve(_ context.Context, authority string) (discover.Watch, error) {
	r.resolves.Add(1)
	select {
	case r.asked <- authority:
	default:
	}
	select {
	case <-r.appeared:
		return silentWatch(make(chan []discover.Endpoint)), nil
	default:
	}
	return nil, &discover.NotFoundError{Authority: authority, Appeared: r.appeared, Stop: func() { r.stops.Add(1) }}
}

func (r *watchingResolver) LookupAddr(netip.AddrPort) (string, bool) { return "", false }

// A NotFoundError is kept until its watch says the authority appeared
// (however long that is), then the authority is resolved again; evicting
// the destination stops the resolver's watch.
func TestNotFoundKeptUntilItAppears(t *testing.T) {
	r := &watchingResolver{appeared: make(chan struct{}), asked: make(chan string, 1)}
	c := New(Options{Resolver: r, NotFoundTTL: time.Millisecond})
	defer c.Close()
	for range 1000 {
		if _, err := c.Get(context.Background(), "web.ns.svc:80"); !errors.Is(err, discover.ErrNotFound) {
			t.Fatalf("Get(unknown) = %v, want ErrNotFound", err)
		}
	}
	time.Sleep(10 * time.Millisecond) // many NotFoundTTLs: the watch, not the TTL, decides
	c.Get(context.Background(), "web.ns.svc:80")
	if n := r.resolves.Load(); n != 1 {
		t.Fatalf("%d lookups while the resolver watches the unknown authority, want 1", n)
	}
	close(r.appeared)
	deadline := time.Now().Add(5 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		_, err := c.Get(ctx, "web.ns.svc:80")
		cancel()
		if !errors.Is(err, discover.ErrNotFound) {
			break // resolved again: it exists now (it has no endpoints, so the wait ends with ctx)
		}
		if time.Now().After(deadline) {
			t.Fatal("still not found after the resolver said it appeared")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := r.resolves.Load(); n != 2 {
		t.Errorf("%d lookups, want 2", n)
	}
	if n := r.stops.Load(); n != 1 {
		t.Errorf("the not-found watch was stopped %d times, want once", n)
	}
}

// Evicting a kept "not found" stops the resolver's watch of it.
func TestNotFoundEvicted(t *testing.T) {
	r := &watchingResolver{appeared: make(chan struct{}), asked: make(chan string, 1)}
	c := New(Options{Resolver: r})
	defer c.Close()
	if _, err := c.Get(context.Background(), "web.ns.svc:80"); !errors.Is(err, discover.ErrNotFound) {
		t.Fatalf("Get(unknown) = %v, want ErrNotFound", err)
	}
	c.evict(time.Now().Add(time.Hour))
	if n := r.stops.Load(); n != 1 {
		t.Errorf("the evicted not-found watch was stopped %d times, want once", n)
	}
}

// With the proxy's namespace known, a short name is looked up in it, as a
// pod's resolver would; other names, addresses and localhost are looked up
// as they are.
func TestShortNameQualified(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"web:80", "web.ns1.svc:80"},
		{"web.other:80", "web.other:80"},
		{"web.other.svc.cluster.local:8080", "web.other.svc.cluster.local:8080"},
		{"10.0.0.1:80", "10.0.0.1:80"},
		{"[fd00::1]:80", "[fd00::1]:80"},
		{"localhost:80", "localhost:80"},
	} {
		r := &watchingResolver{appeared: make(chan struct{}), asked: make(chan string, 1)}
		c := New(Options{Resolver: r, Namespace: "ns1"})
		c.Get(context.Background(), tc.in)
		if got := <-r.asked; got != tc.want {
			t.Errorf("Get(%q) looked up %q, want %q", tc.in, got, tc.want)
		}
		c.Close()
	}
	// Without a namespace nothing is qualified.
	r := &watchingResolver{appeared: make(chan struct{}), asked: make(chan string, 1)}
	c := New(Options{Resolver: r})
	defer c.Close()
	c.Get(context.Background(), "web:80")
	if got := <-r.asked; got != "web:80" {
		t.Errorf("without a namespace Get(web:80) looked up %q", got)
	}
}
