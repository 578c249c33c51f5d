package evloop

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// start runs a new loop until the test ends: one that holds its
// processor while busy when the run asks (MERIDIAN_EVLOOP_HOLD, a
// duration: `make unit` runs the tests both ways).
func start(t *testing.T) *Loop {
	t.Helper()
	return startHold(t, envHold, 0)
}

var envHold, _ = time.ParseDuration(os.Getenv("MERIDIAN_EVLOOP_HOLD"))

func startHold(t *testing.T, hold time.Duration, rate int) *Loop {
	t.Helper()
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	l.Hold(hold, rate)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v, want context.Canceled", err)
		}
	})
	return l
}

// on runs f on the loop and waits for it.
func on(l *Loop, f func()) {
	done := make(chan struct{})
	l.Post(func() { f(); close(done) })
	<-done
}

// Functions posted from many goroutines at once all run, once each, on the
// loop, each goroutine's in the order it posted them.
func TestPostOrder(t *testing.T) {
	l := start(t)
	const posters, each = 8, 2000
	var seen [posters][]int // written on the loop only
	var wg sync.WaitGroup
	for p := range posters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				l.Post(func() { seen[p] = append(seen[p], i) })
			}
		}()
	}
	wg.Wait()
	on(l, func() {})
	for p := range posters {
		if len(seen[p]) != each {
			t.Fatalf("poster %d: %d functions ran, want %d", p, len(seen[p]), each)
		}
		for i, v := range seen[p] {
			if v != i {
				t.Fatalf("poster %d: function %d ran in place %d", p, v, i)
			}
		}
	}
}

// Timers run in the order of their times, not before them, a stopped one
// never, a reset one at its new time; an idle loop wakes for them.
func TestTimers(t *testing.T) {
	l := start(t)
	type fired struct {
		name string
		at   time.Time
	}
	var got []fired
	done := make(chan struct{})
	var base time.Time
	on(l, func() {
		base = l.Now()
		rec := func(name string) func() {
			return func() { got = append(got, fired{name, time.Now()}) }
		}
		l.After(30*time.Millisecond, rec("30ms"))
		l.After(10*time.Millisecond, rec("10ms"))
		stopped := l.After(15*time.Millisecond, rec("stopped"))
		reset := l.After(5*time.Millisecond, rec("reset to 40ms"))
		l.After(20*time.Millisecond, rec("20ms"))
		if !stopped.Stop() {
			t.Error("Stop of a pending timer returned false")
		}
		if stopped.Stop() {
			t.Error("a second Stop returned true")
		}
		reset.Reset(40 * time.Millisecond)
		l.After(50*time.Millisecond, func() { close(done) })
	})
	<-done
	want := []struct {
		name string
		d    time.Duration
	}{{"10ms", 10 * time.Millisecond}, {"20ms", 20 * time.Millisecond}, {"30ms", 30 * time.Millisecond}, {"reset to 40ms", 40 * time.Millisecond}}
	on(l, func() {
		if len(got) != len(want) {
			t.Fatalf("timers ran: %v, want %v", got, want)
		}
		for i, w := range want {
			if got[i].name != w.name {
				t.Errorf("timer %d: %s, want %s", i, got[i].name, w.name)
			}
			if early := got[i].at.Sub(base); early < w.d {
				t.Errorf("timer %s ran after %v, before its time", w.name, early)
			}
		}
	})
}

// A timer that schedules another, and one scheduled in the past, run.
func TestTimerChain(t *testing.T) {
	l := start(t)
	done := make(chan int)
	on(l, func() {
		n := 0
		var tick func()
		tick = func() {
			n++
			if n == 5 {
				done <- n
				return
			}
			l.After(time.Millisecond, tick)
		}
		l.After(-time.Second, tick)
	})
	if n := <-done; n != 5 {
		t.Fatalf("%d ticks", n)
	}
}

// echo writes back what it reads and closes at EOF (once all is written).
type echo struct{ readable int }

func (e *echo) Readable(c *Conn) {
	e.readable++
	if b := c.Buffered(); len(b) > 0 {
		if err := c.Write(b); err != nil {
			c.Close()
			return
		}
		c.Consume(len(b))
	}
	if c.Err() != nil {
		c.Close()
		return
	}
	if c.EOF() {
		c.CloseWrite()
	}
}

func (e *echo) Written(*Conn) {}

// listen serves a loopback listener's connections with h().
func listen(t *testing.T, l *Loop, h func() ConnHandler) net.Addr {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var lerr error
	on(l, func() {
		_, lerr = l.Listen(ln, func(fd int, _ unix.Sockaddr) {
			if _, err := l.NewConn(fd, h()); err != nil {
				t.Error(err)
				unix.Close(fd)
			}
		})
	})
	if lerr != nil {
		t.Fatal(lerr)
	}
	return ln.Addr()
}

// Bytes come back as they went, in small writes and in 8 MiB at once
// (more than the socket buffers hold: the loop's writes wait for the
// socket, its reads for the buffer to be consumed), and the write side
// ends after the read side did.
func TestEcho(t *testing.T) {
	l := start(t)
	addr := listen(t, l, func() ConnHandler { return &echo{} })
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr.String())
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			small := []byte("hello, loop")
			for range 100 {
				if _, err := c.Write(small); err != nil {
					t.Error(err)
					return
				}
				got := make([]byte, len(small))
				if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, small) {
					t.Errorf("echo %q, %v", got, err)
					return
				}
			}
			big := make([]byte, 8<<20)
			rand.Read(big)
			werr := make(chan error, 1)
			go func() {
				_, err := c.Write(big)
				if err == nil {
					err = c.(*net.TCPConn).CloseWrite()
				}
				werr <- err
			}()
			got, err := io.ReadAll(c)
			if err != nil {
				t.Error(err)
			}
			if err := <-werr; err != nil {
				t.Error(err)
			}
			if !bytes.Equal(got, big) {
				t.Errorf("8 MiB echoed as %d bytes, different", len(got))
			}
		}()
	}
	wg.Wait()
}

// holder keeps what it reads until told to consume.
type holder struct {
	readable  int
	maxBuffer int
}

func (h *holder) Readable(c *Conn) {
	h.readable++
	h.maxBuffer = max(h.maxBuffer, len(c.Buffered()))
}

func (h *holder) Written(*Conn) {}

// A handler that does not consume stops the reading at the buffer's
// bound (the sender is held by TCP's flow control); consuming starts it
// again.
func TestBackpressure(t *testing.T) {
	l := start(t)
	h := &holder{}
	conns := make(chan *Conn, 1)
	addr := listen(t, l, func() ConnHandler { return h })
	on(l, func() {}) // listening
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sent := make(chan error, 1)
	const total = 64 << 20 // more than the kernel's socket buffers hold
	go func() {
		_, err := c.Write(make([]byte, total))
		sent <- err
	}()
	// Wait until the loop's buffer is full and the sender is blocked.
	for {
		var full bool
		on(l, func() {
			for _, w := range l.watched {
				if cc, ok := w.h.(*Conn); ok && cc.h == h {
					full = len(cc.Buffered()) == BufferSize
					if full {
						select {
						case conns <- cc:
						default:
						}
					}
				}
			}
		})
		if full {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cc := <-conns
	select {
	case err := <-sent:
		t.Fatalf("the sender finished (%v) while the loop read nothing", err)
	default:
	}
	var calls int
	var got atomic.Int64 // read once the handler consumes
	on(l, func() { calls = h.readable })
	time.Sleep(20 * time.Millisecond)
	on(l, func() {
		if h.readable != calls {
			t.Errorf("%d more Readable calls with a full buffer", h.readable-calls)
		}
		if h.maxBuffer > BufferSize {
			t.Errorf("buffered %d bytes, past the bound %d", h.maxBuffer, BufferSize)
		}
		// From here on the handler consumes what comes.
		got.Store(int64(len(cc.Buffered())))
		cc.SetHandler(counter{&got})
		cc.Consume(len(cc.Buffered()))
	})
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	for {
		var eof bool
		on(l, func() { eof = cc.EOF() })
		if eof {
			if n := got.Load(); n != total {
				t.Fatalf("read %d bytes, want %d", n, total)
			}
			break
		}
		time.Sleep(time.Millisecond)
	}
}

// A connection handed off mid-stream goes on as a net.Conn with the bytes
// the loop had read and not consumed first.
func TestHandoff(t *testing.T) {
	l := start(t)
	handed := make(chan net.Conn, 1)
	addr := listen(t, l, func() ConnHandler {
		return readableFunc(func(c *Conn) {
			b := c.Buffered()
			if i := bytes.IndexByte(b, '\n'); i >= 0 {
				c.Write(append([]byte("loop: "), b[:i+1]...))
				c.Consume(i + 1)
				nc, err := c.Handoff()
				if err != nil {
					t.Error(err)
					c.Close()
					return
				}
				handed <- nc
			}
		})
	})
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Both lines in one write: the second is in the loop's buffer when it
	// hands the connection off.
	if _, err := c.Write([]byte("one\ntwo\n")); err != nil {
		t.Fatal(err)
	}
	nc := <-handed
	defer nc.Close()
	go func() {
		got := make([]byte, 4)
		if _, err := io.ReadFull(nc, got); err != nil {
			t.Error(err)
			return
		}
		nc.Write(append([]byte("goroutine: "), got...))
		if cw, ok := nc.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if want := "loop: one\ngoroutine: two\n"; string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

type readableFunc func(c *Conn)

func (f readableFunc) Readable(c *Conn) { f(c) }
func (readableFunc) Written(*Conn)      {}

// A reset connection that its handler keeps open is not reported again
// and again (an error and a hang-up are reported at every poll).
func TestResetNotReportedForever(t *testing.T) {
	l := start(t)
	calls := 0
	var kept *Conn
	failed := make(chan struct{})
	addr := listen(t, l, func() ConnHandler {
		return readableFunc(func(c *Conn) {
			calls++
			kept = c
			if c.Err() != nil || c.EOF() {
				select {
				case <-failed:
				default:
					close(failed)
				}
			}
		})
	})
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("x"))
	c.(*net.TCPConn).SetLinger(0)
	c.Close() // a reset
	<-failed
	var before int
	on(l, func() { before = calls })
	for range 50 {
		on(l, func() {}) // loop iterations
	}
	on(l, func() {
		if calls != before {
			t.Errorf("Readable called %d more times on a dead connection", calls-before)
		}
		if kept.Write([]byte("y")) == nil {
			t.Error("Write on a reset connection succeeded")
		}
		kept.Close()
	})
}

// A loop with nothing to do leaves the processor to other goroutines:
// with one, they still run.
func TestIdleLoopYields(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	l := start(t)
	on(l, func() {})
	ping, pong := make(chan int), make(chan int)
	go func() {
		for v := range ping {
			time.Sleep(time.Millisecond)
			pong <- v
		}
	}()
	for i := range 20 {
		ping <- i
		if v := <-pong; v != i {
			t.Fatalf("pong %d, want %d", v, i)
		}
	}
	close(ping)
	on(l, func() {}) // and the loop still answers
}

// Events of a descriptor closed in the same batch are not given to the
// next owner of its number.
func TestStaleEventsDropped(t *testing.T) {
	l := start(t)
	pair := func() (int, int) {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		return fds[0], fds[1]
	}
	aLoop, aPeer := pair()
	bLoop, bPeer := pair()
	defer unix.Close(aPeer)
	defer unix.Close(bPeer)
	stale, staleAfterBatch := 0, -1
	done := make(chan struct{})
	on(l, func() {
		var b *Conn
		_, err := l.NewConn(aLoop, readableFunc(func(a *Conn) {
			if a.EOF() || a.Err() != nil { // the test's end
				a.Close()
				return
			}
			if b.closed {
				t.Errorf("a's handler ran twice: %q eof %v err %v", a.Buffered(), a.EOF(), a.Err())
				return
			}
			// b's event is in this batch, after a's. Its descriptor is
			// closed, and its number taken by a socket with nothing to read.
			num := b.Fd()
			b.Close()
			n1, n2 := pair()
			if n2 == num { // a lower number was free too: the other end is num
				n1, n2 = n2, n1
			}
			if n1 != num { // the lowest free number is usually num itself
				if err := unix.Dup3(n1, num, unix.O_CLOEXEC); err != nil {
					t.Error(err)
				}
				unix.Close(n1)
			}
			if _, err := l.NewConn(num, readableFunc(func(*Conn) { stale++ })); err != nil {
				t.Error(err)
			}
			a.Consume(len(a.Buffered()))
			// After this batch (n2 is open and silent: the new socket is not
			// ready), the new owner must not have been told anything.
			l.Post(func() { staleAfterBatch = stale; unix.Close(n2); close(done) })
		}))
		if err != nil {
			t.Fatal(err)
		}
		if b, err = l.NewConn(bLoop, readableFunc(func(*Conn) { t.Error("b's handler ran") })); err != nil {
			t.Fatal(err)
		}
		// Both ready before the next poll, a first.
		unix.Write(aPeer, []byte("a"))
		unix.Write(bPeer, []byte("b"))
	})
	<-done
	if staleAfterBatch != 0 {
		t.Errorf("the descriptor's new owner was told %d times of its old owner's event", staleAfterBatch)
	}
}

// Closing the loop closes its connections and listeners; Run returns nil.
func TestClose(t *testing.T) {
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- l.Run(context.Background()) }()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{})
	on(l, func() {
		if _, err := l.Listen(ln, func(fd int, _ unix.Sockaddr) {
			l.NewConn(fd, &echo{})
			close(accepted)
		}); err != nil {
			t.Fatal(err)
		}
	})
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-accepted
	l.Close()
	if err := <-errc; err != nil {
		t.Fatalf("Run after Close: %v", err)
	}
	<-l.Done()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the client read %d bytes, %v; want EOF: the loop's connection is closed", n, err)
	}
	if err := l.Run(context.Background()); err == nil {
		t.Error("a second Run returned nil")
	}
}

// tcpPair is a loopback connection's two ends, the client's with a
// deadline, both closed when the test ends.
func tcpPair(t *testing.T) (client net.Conn, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	client.SetDeadline(time.Now().Add(10 * time.Second))
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.Close() })
	return client, sc.(*net.TCPConn)
}

// A connection served by a goroutine first (a greeting read the blocking
// way) goes on serving on the loop once taken: the client's bytes that
// came after the greeting are echoed, the runtime's copy is closed (its
// reads fail), and the client sees the end when the loop closes.
func TestTake(t *testing.T) {
	l := start(t)
	client, sc := tcpPair(t)
	io.WriteString(client, "hello")
	greeting := make([]byte, 5)
	if _, err := io.ReadFull(sc, greeting); err != nil || string(greeting) != "hello" {
		t.Fatalf("greeting: %q, %v", greeting, err)
	}
	fd, err := Take(sc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sc.Read(greeting); !errors.Is(err, net.ErrClosed) {
		t.Errorf("the taken net.Conn reads: %v, want net.ErrClosed", err)
	}
	on(l, func() {
		if _, err := l.NewConn(fd, &echo{}); err != nil {
			t.Error(err)
			unix.Close(fd)
		}
	})
	msg := bytes.Repeat([]byte("0123456789"), 10000)
	go func() {
		client.Write(msg)
		client.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(client)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echoed %d bytes (%v), want %d", len(got), err, len(msg))
	}
}

// Bytes a goroutine read before the loop took the socket, unread, come
// before what the socket brings next; more than the buffer holds is
// refused.
func TestUnread(t *testing.T) {
	l := start(t)
	client, sc := tcpPair(t)
	io.WriteString(client, "hel")
	early := make([]byte, 3)
	if _, err := io.ReadFull(sc, early); err != nil {
		t.Fatal(err)
	}
	fd, err := Take(sc)
	if err != nil {
		t.Fatal(err)
	}
	on(l, func() {
		c, err := l.NewConn(fd, &echo{})
		if err != nil {
			t.Error(err)
			unix.Close(fd)
			return
		}
		if err := c.Unread(make([]byte, BufferSize+1)); err == nil {
			t.Error("Unread of more than the buffer: no error")
		}
		if err := c.Unread(early); err != nil {
			t.Error(err)
		}
	})
	io.WriteString(client, "lo")
	got := make([]byte, 5)
	if _, err := io.ReadFull(client, got); err != nil || string(got) != "hello" {
		t.Fatalf("echoed %q (%v), want \"hello\"", got, err)
	}
}

// idle neither reads nor writes: what comes stays buffered.
type idle struct{}

func (idle) Readable(*Conn) {}
func (idle) Written(*Conn)  {}

// Silent is true for an open connection with nothing to read, and false
// once a byte came (buffered by the loop or not yet) or the peer closed.
func TestSilent(t *testing.T) {
	l := start(t)
	for _, end := range []string{"a byte", "a close"} {
		peer, sc := tcpPair(t)
		fd, err := Take(sc)
		if err != nil {
			t.Fatal(err)
		}
		var c *Conn
		on(l, func() {
			if c, err = l.NewConn(fd, idle{}); err != nil {
				unix.Close(fd)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		silent := func() (s bool) {
			on(l, func() { s = c.Silent() })
			return s
		}
		if !silent() {
			t.Errorf("before %s: not silent", end)
		}
		if end == "a byte" {
			peer.Write([]byte("x"))
		} else {
			peer.Close()
		}
		// Not silent at once (the byte or the end is in the socket,
		// or already taken by the loop), nor after.
		for range 5 {
			if silent() {
				t.Errorf("after %s: silent", end)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		peer.Close()
		on(l, func() { c.Close() })
	}
}

// What a descriptor still has when its callback returns is served with no
// new arrival to wake the loop: bytes left in the socket by reads that
// filled the buffer, connections left in the backlog by an accept batch.
// The loop is held while they pile up, so that one wake-up finds them all
// (the poll before each wait is what sees them: park). The test watches
// from outside, without posting to the loop (a post wakes it).
func TestLeftoversServedWithoutNewArrivals(t *testing.T) {
	l := start(t)
	var accepted, read atomic.Int64
	addr := listen(t, l, func() ConnHandler { accepted.Add(1); return counter{&read} })
	on(l, func() {}) // listening

	hold := func(f func()) {
		held, release := make(chan struct{}), make(chan struct{})
		l.Post(func() { close(held); <-release })
		<-held
		f()
		close(release)
	}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	const n = 3*acceptBatch + 1
	hold(func() {
		for range n {
			c, err := net.Dial("tcp", addr.String())
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
	})
	waitFor(t, "every connection of the backlog accepted", func() bool { return accepted.Load() == n })

	// 4 buffers' worth on one connection, all in the socket before the
	// loop reads any of it; nothing follows.
	total := int64(4 * BufferSize)
	hold(func() {
		if _, err := conns[0].Write(make([]byte, total)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond) // the bytes reach the socket
	})
	waitFor(t, "every byte in the socket read", func() bool { return read.Load() == total })
}

type counter struct{ n *atomic.Int64 }

func (c counter) Readable(cn *Conn) {
	c.n.Add(int64(len(cn.Buffered())))
	cn.Consume(len(cn.Buffered()))
}

func (counter) Written(*Conn) {}

// waitFor polls cond until it holds, for 5 s at most.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within 5 s: %s", what)
		}
	}
}

// A loop that holds (Hold) serves on a processor of its own, added to
// GOMAXPROCS, lets the collector stop the world and Close end it at once
// though its wait is long, and, idle for the hold, gives the processor
// back and waits through the runtime's poller again.
func TestHold(t *testing.T) {
	// The runtime's own setting (which the last processor given back
	// restores), whatever -cpu set.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	runtime.SetDefaultGOMAXPROCS()
	base := runtime.GOMAXPROCS(0)
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	l.Hold(time.Hour, 0)
	errc := make(chan error, 1)
	go func() { errc <- l.Run(context.Background()) }()
	roundTrip := echoer(t, l)
	for range 50 {
		roundTrip()
	}
	var registered bool
	var procs int
	on(l, func() { registered, procs = l.file != nil, runtime.GOMAXPROCS(0) })
	if registered {
		t.Error("a busy loop waits through the runtime's poller")
	}
	if procs != base+1 {
		t.Errorf("GOMAXPROCS %d while the loop holds, want %d (one added for it)", procs, base+1)
	}
	// It waits in epoll_pwait for up to an hour: the collector's
	// stop-the-world interrupts it, as does Close.
	t0 := time.Now()
	runtime.GC()
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("a collection took %v with the loop holding its processor", d)
	}
	t0 = time.Now()
	l.Close()
	if err := <-errc; err != nil {
		t.Errorf("Run: %v", err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("Close took %v with the loop holding its processor", d)
	}
	if got := runtime.GOMAXPROCS(0); got != base {
		t.Errorf("GOMAXPROCS %d after Close, want %d (the loop's processor given back)", got, base)
	}

	// Idle for its hold, a loop gives its processor back and waits
	// through the runtime's poller again; GOMAXPROCS is the runtime's own
	// again (which follows the CPU limit), even after a call set it, or,
	// when the environment set it, what it was.
	for _, env := range []string{"", "3"} {
		runtime.GOMAXPROCS(3)
		want := base
		if env != "" {
			t.Setenv("GOMAXPROCS", env)
			want = 3
		}
		l2, err := New()
		if err != nil {
			t.Fatal(err)
		}
		l2.Hold(10*time.Millisecond, 0)
		go l2.Run(context.Background())
		on(l2, func() {})
		time.Sleep(50 * time.Millisecond)
		on(l2, func() { registered, procs = l2.file != nil, runtime.GOMAXPROCS(0) })
		if !registered {
			t.Errorf("GOMAXPROCS=%q: a loop idle past its hold still waits on its own", env)
		}
		if procs != want {
			t.Errorf("GOMAXPROCS=%q: %d with the loop idle past its hold, want %d", env, procs, want)
		}
		// The check was an event: the loop holds again until closed.
		l2.Close()
		<-l2.Done()
	}
}

// With a rate (Hold's second argument), a loop takes a processor only once
// it wakes that often, and gives it back once it wakes less than half as
// often, long before it has been idle for its hold.
func TestHoldRate(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	runtime.SetDefaultGOMAXPROCS()
	base := runtime.GOMAXPROCS(0)
	const rate = 200 // wake-ups a second: 20 in a window to take, 10 over one to keep
	l := startHold(t, time.Hour, rate)
	roundTrip := echoer(t, l)
	state := func() (holding bool, procs int) {
		on(l, func() { holding, procs = l.holding, runtime.GOMAXPROCS(0) })
		return
	}
	// About 50 wake-ups a second (a round trip and the check's Post every
	// 40 ms) never take a processor.
	for range 10 {
		roundTrip()
		if holding, procs := state(); holding || procs != base {
			t.Fatalf("holding %v, GOMAXPROCS %d at about 50 wake-ups a second, want false, %d", holding, procs, base)
		}
		time.Sleep(40 * time.Millisecond)
	}
	// Round trips back to back take one, soon.
	deadline := time.Now().Add(10 * time.Second)
	for {
		for range 20 {
			roundTrip()
		}
		holding, procs := state()
		if holding {
			if procs != base+1 {
				t.Errorf("GOMAXPROCS %d while the loop holds, want %d", procs, base+1)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no processor taken after 10 s of round trips back to back")
		}
	}
	// Slow again, it gives the processor back within a window or two
	// though its hold is an hour.
	deadline = time.Now().Add(10 * time.Second)
	for {
		time.Sleep(40 * time.Millisecond)
		roundTrip()
		holding, procs := state()
		if !holding {
			if procs != base {
				t.Errorf("GOMAXPROCS %d after the loop gave its processor back, want %d", procs, base)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the processor still held after 10 s at about 50 wake-ups a second")
		}
	}
}

// echoer listens on l with echo handlers and returns a round trip over
// one connection to it: a wake-up of the loop each.
func echoer(t *testing.T, l *Loop) func() {
	t.Helper()
	addr := listen(t, l, func() ConnHandler { return &echo{} })
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	b := make([]byte, 5)
	return func() {
		t.Helper()
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, b); err != nil || string(b) != "hello" {
			t.Fatalf("echo: %q, %v", b, err)
		}
	}
}

// A Post (and the wake-up it writes) after the loop closed writes nothing
// into the descriptor its eventfd had, which the process may have reused
// for a socket (it did: a Bridge handler outliving a test's loop wrote 8
// bytes into the next test's client connection).
func TestPostAfterCloseWritesNothing(t *testing.T) {
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	old := l.wakeFd
	l.Close()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The eventfd's number now names one end of the pair (a, perhaps
	// already: the lowest free numbers are reused), b is the other.
	a, b := fds[0], fds[1]
	if b == old {
		a, b = b, a
	}
	if a != old {
		if err := unix.Dup3(a, old, unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		unix.Close(a)
	}
	defer unix.Close(old)
	defer unix.Close(b)
	ran := false
	l.Post(func() { ran = true })
	l.shutdown()
	l.wake()
	unix.SetNonblock(b, true)
	var buf [16]byte
	if n, err := unix.Read(b, buf[:]); n > 0 || err != unix.EAGAIN {
		t.Errorf("the closed loop wrote %q into the descriptor (%v)", buf[:max(n, 0)], err)
	}
	if ran {
		t.Error("a function posted to a closed loop ran")
	}
}
