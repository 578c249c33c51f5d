package h1client

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// gatedDialer dials addr once each dial is let through its gate, and
// counts the dials in progress at once.
type gatedDialer struct {
	addr        string
	gate        chan error // a dial waits for a value: nil dials, an error fails
	now, most   atomic.Int32
	dials       atomic.Int32
	gateDisable atomic.Bool // dial without waiting
}

func (g *gatedDialer) dial(ctx context.Context) (net.Conn, error) {
	g.dials.Add(1)
	n := g.now.Add(1)
	defer g.now.Add(-1)
	for {
		m := g.most.Load()
		if n <= m || g.most.CompareAndSwap(m, n) {
			break
		}
	}
	if !g.gateDisable.Load() {
		select {
		case err := <-g.gate:
			if err != nil {
				return nil, err
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", g.addr)
}

// waitingNow is how many requests wait for a connection or a dial.
func (c *Client) waitingNow() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiting)
}

func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting until %s", what)
}

func dialServer(t *testing.T, h http.HandlerFunc) string {
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

func get(ctx context.Context, c *Client, addr, path string) error {
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.RoundTrip(r)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return err
}

// Requests that find no idle connection start at most MaxDialing dials at
// once; the others wait, and all are served.
func TestDialBound(t *testing.T) {
	addr := dialServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	g := &gatedDialer{addr: addr, gate: make(chan error)}
	c := New(Options{Dial: g.dial, MaxDialing: 2})
	t.Cleanup(c.CloseIdleConnections)
	const n = 10
	errs := make(chan error, n)
	for range n {
		go func() { errs <- get(context.Background(), c, addr, "/") }()
	}
	until(t, "two dials and eight requests waiting", func() bool {
		return g.now.Load() == 2 && c.waitingNow() == n-2
	})
	g.gateDisable.Store(true)
	close(g.gate)
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if m := g.most.Load(); m != 2 {
		t.Errorf("%d dials in progress at once, want 2 (MaxDialing)", m)
	}
	if w := c.waitingNow(); w != 0 {
		t.Errorf("%d requests still waiting", w)
	}
}

// A request waiting for a dial takes the first connection given back,
// while the dial in progress goes on.
func TestDialWaiterTakesReturnedConn(t *testing.T) {
	release := make(chan struct{})
	addr := dialServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/wait" {
			<-release
		}
		io.WriteString(w, "ok")
	})
	var once sync.Once
	let := func() { once.Do(func() { close(release) }) }
	t.Cleanup(let) // before the server's Close, which waits for its handlers
	g := &gatedDialer{addr: addr, gate: make(chan error, 1)}
	c := New(Options{Dial: g.dial, MaxDialing: 1})
	t.Cleanup(c.CloseIdleConnections)

	// The first request holds its connection until release.
	g.gate <- nil
	first := make(chan error, 1)
	go func() { first <- get(context.Background(), c, addr, "/wait") }()
	until(t, "the first dial made", func() bool { return g.dials.Load() == 1 && g.now.Load() == 0 })
	// The second dials and is held at the gate; the third waits.
	second := make(chan error, 1)
	go func() { second <- get(context.Background(), c, addr, "/") }()
	until(t, "the second dial in progress", func() bool { return g.now.Load() == 1 })
	third := make(chan error, 1)
	go func() { third <- get(context.Background(), c, addr, "/") }()
	until(t, "the third request waiting", func() bool { return c.waitingNow() == 1 })

	let()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-third:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting request did not take the connection given back")
	}
	if d := g.dials.Load(); d != 2 {
		t.Errorf("%d dials, want 2 (the third request on the first's connection)", d)
	}
	g.gate <- nil
	if err := <-second; err != nil {
		t.Fatal(err)
	}
}

// When the last dial in progress fails, the requests waiting fail with its
// error; a request whose context ends while it waits leaves with its cause.
func TestDialFailureAndCancelWhileWaiting(t *testing.T) {
	addr := dialServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	g := &gatedDialer{addr: addr, gate: make(chan error)}
	c := New(Options{Dial: g.dial, MaxDialing: 1})
	t.Cleanup(c.CloseIdleConnections)

	dialer := make(chan error, 1)
	go func() { dialer <- get(context.Background(), c, addr, "/") }()
	until(t, "a dial in progress", func() bool { return g.now.Load() == 1 })

	cause := errors.New("client gone")
	ctx, cancel := context.WithCancelCause(context.Background())
	gone := make(chan error, 1)
	go func() { gone <- get(ctx, c, addr, "/") }()
	var wg sync.WaitGroup
	waiters := make(chan error, 3)
	for range 3 {
		wg.Add(1)
		go func() { defer wg.Done(); waiters <- get(context.Background(), c, addr, "/") }()
	}
	until(t, "four requests waiting", func() bool { return c.waitingNow() == 4 })
	cancel(cause)
	if err := <-gone; !errors.Is(err, cause) {
		t.Errorf("cancelled while waiting: %v, want its context's cause", err)
	}
	if w := c.waitingNow(); w != 3 {
		t.Errorf("%d waiting after one left, want 3", w)
	}

	boom := errors.New("connection refused (test)")
	g.gate <- boom
	if err := <-dialer; !errors.Is(err, boom) {
		t.Errorf("the dialing request: %v, want the dial's error", err)
	}
	wg.Wait()
	close(waiters)
	for err := range waiters {
		if !errors.Is(err, boom) {
			t.Errorf("a waiting request: %v, want the failed dial's error", err)
		}
	}
	if d := g.dials.Load(); d != 1 {
		t.Errorf("%d dials, want 1", d)
	}
	// The pool dials again for the next request.
	g.gateDisable.Store(true)
	if err := get(context.Background(), c, addr, "/"); err != nil {
		t.Errorf("after the failure: %v", err)
	}
}

// A failed dial fails every request waiting at once, though another dial
// is still in progress: against an endpoint that does not answer they
// would otherwise fail MaxDialing at a time, a connect timeout each. The
// dial still in progress serves its own request.
func TestDialFailureFailsAllWaiting(t *testing.T) {
	addr := dialServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	g := &gatedDialer{addr: addr, gate: make(chan error)}
	c := New(Options{Dial: g.dial, MaxDialing: 2})
	t.Cleanup(c.CloseIdleConnections)

	dialers := make(chan error, 2)
	for range 2 {
		go func() { dialers <- get(context.Background(), c, addr, "/") }()
	}
	until(t, "two dials in progress", func() bool { return g.now.Load() == 2 })
	waiters := make(chan error, 3)
	for range 3 {
		go func() { waiters <- get(context.Background(), c, addr, "/") }()
	}
	until(t, "three requests waiting", func() bool { return c.waitingNow() == 3 })

	boom := errors.New("connection timed out (test)")
	g.gate <- boom
	if err := <-dialers; !errors.Is(err, boom) {
		t.Errorf("the request whose dial failed: %v, want the dial's error", err)
	}
	for range 3 {
		select {
		case err := <-waiters:
			if !errors.Is(err, boom) {
				t.Errorf("a waiting request: %v, want the failed dial's error", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("the waiting requests did not fail with the dial (%d dials in progress)", g.now.Load())
		}
	}
	if n := g.now.Load(); n != 1 {
		t.Errorf("%d dials in progress, want the other one still", n)
	}
	g.gate <- nil
	if err := <-dialers; err != nil {
		t.Errorf("the request whose dial went through: %v", err)
	}
	if d := g.dials.Load(); d != 2 {
		t.Errorf("%d dials, want 2", d)
	}
}
