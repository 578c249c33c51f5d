package h2loop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/meridian-mesh/meridian/proxy/h2server"
	"github.com/meridian-mesh/meridian/proxy/internal/evloop"
	"github.com/meridian-mesh/meridian/proxy/internal/h2test"
)

// The loop handler's tests' harness (conformance_linux_test.go): a Server
// on a loop of its own behind a loopback listener (confLoop, which
// suite_linux_test.go's Bridge target runs on too), a handler whose
// behaviour the request's path chooses, and h2test's raw-frame client.
// Names carry "conf" so that they stay apart from the package's other
// tests.

// confTimeout bounds every wait of these tests (a socket's deadline, an
// event the handler must see). Nothing here takes near that long when it
// works.
const confTimeout = 10 * time.Second

// confServer is a Server on a loop of its own, accepting on loopback.
type confServer struct {
	lp   *evloop.Loop
	srv  *Server
	h    *confHandler
	addr string

	mu      sync.Mutex
	clients []net.Conn // closed if the loop panics
}

// confStart serves cfg with a confHandler on a new loop until the test
// ends (confLoop).
func confStart(t testing.TB, cfg h2server.Config) *confServer {
	t.Helper()
	lp, err := evloop.New()
	if err != nil {
		t.Fatal(err)
	}
	h := newConfHandler(lp)
	cs := &confServer{lp: lp, h: h, srv: &Server{Config: cfg, Handler: h, Logf: t.Logf}}
	cs.addr = confLoop(t, lp, cs.srv, cs.closeClients)
	return cs
}

// runLoop runs lp until the test ends. A panic on the loop fails the test
// that caused it, not the whole run: onPanic (if set) runs first (it closes
// the clients' connections, so that their reads fail at once), and the
// cleanup reports it.
func runLoop(t testing.TB, lp *evloop.Loop, onPanic func()) {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				if onPanic != nil {
					onPanic()
				}
				errc <- fmt.Errorf("the loop panicked: %v\n%s", p, debug.Stack())
			}
		}()
		errc <- lp.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if !errors.Is(err, context.Canceled) {
				t.Error(err)
			}
		case <-time.After(confTimeout):
			t.Error("the loop did not end")
		}
	})
}

// confLoop runs lp with srv accepting on a loopback listener, whose
// address it returns, until the test ends: then the listener is closed,
// and the loop (which closes its connections; onPanic as runLoop's).
func confLoop(t testing.TB, lp *evloop.Loop, srv *Server, onPanic func()) string {
	t.Helper()
	runLoop(t, lp, onPanic)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var lis *evloop.Listener
	var lerr error
	confOn(t, lp, func() {
		lis, lerr = lp.Listen(ln, func(fd int, sa unix.Sockaddr) {
			if err := srv.Serve(lp, fd, sockaddrString(sa), nil); err != nil {
				t.Errorf("Serve: %v", err)
				unix.Close(fd)
			}
		})
	})
	if lerr != nil {
		ln.Close()
		t.Fatal(lerr)
	}
	t.Cleanup(func() {
		lp.Post(func() { lis.Close() })
		ln.Close()
	})
	return ln.Addr().String()
}

func (cs *confServer) addClient(c net.Conn) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.clients = append(cs.clients, c)
}

func (cs *confServer) closeClients() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, c := range cs.clients {
		c.Close()
	}
}

// dial is a client of cs.
func (cs *confServer) dial(t testing.TB) *h2test.Client {
	t.Helper()
	rc := h2test.Dial(t, cs.addr)
	cs.addClient(rc.C)
	return rc
}

// confOn runs f on lp and waits for it (bounded).
func confOn(t testing.TB, lp *evloop.Loop, f func()) {
	t.Helper()
	done := make(chan struct{})
	lp.Post(func() { f(); close(done) })
	select {
	case <-done:
	case <-time.After(confTimeout):
		t.Fatal("the loop did not run a posted function")
	}
}

func sockaddrString(sa unix.Sockaddr) string {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return net.JoinHostPort(net.IP(sa.Addr[:]).String(), strconv.Itoa(sa.Port))
	case *unix.SockaddrInet6:
		return net.JoinHostPort(net.IP(sa.Addr[:]).String(), strconv.Itoa(sa.Port))
	}
	return "?"
}

// confEvent is what the handler heard of a stream.
type confEvent struct {
	kind string // "serve", "data", "end"
	id   uint32
	path string
	data []byte // "data": the payload (a copy)
	err  error  // "end": End's error
	// "end" without error: the request's trailers
	trailer http.Header
}

// confHandler serves every stream on the loop, as its path says:
//
//	/           the body consumed; at its end (End(nil)) 200 "ok"
//	/noread     the body neither consumed nor answered (held until reset)
//	/hang       the body consumed, never answered
//	/echo       200 at once, each DATA written back as it comes (Consumed
//	            once written), the end at End(nil)
//	/trailers   200, "body", trailers x-t: v
//	/slow       held 50 ms (an evloop timer), answered 200 then if still
//	            open; an End with an error waits for that time too before
//	            Done (a handler slow to let go of a reset stream)
//
// Every End with an error is answered by Done (for /slow, at its time).
// Events (serve, data, end) go to events; held counts the streams the
// handler holds.
type confHandler struct {
	lp     *evloop.Loop
	events chan confEvent
	held   atomic.Int32
}

func newConfHandler(lp *evloop.Loop) *confHandler {
	return &confHandler{lp: lp, events: make(chan confEvent, 1<<14)}
}

func (h *confHandler) note(e confEvent) {
	select {
	case h.events <- e:
	default: // a flood's events are not all kept
	}
}

// confStream is the handler's side of one stream.
type confStream struct {
	h       *confHandler
	path    string
	pending []byte      // to write, after what was written
	trailer http.Header // to write after pending
	end     bool        // end the response once pending is written
	echo    bool        // Consumed as pending is written
	letGo   bool
}

func (h *confHandler) ServeStream(s *Stream) Receiver {
	h.held.Add(1)
	cs := &confStream{h: h, path: s.Request.URL.Path}
	h.note(confEvent{kind: "serve", id: s.ID(), path: cs.path})
	switch cs.path {
	case "/echo":
		cs.echo = true
		s.WriteHeader(http.StatusOK, nil, false)
	case "/trailers":
		s.WriteHeader(http.StatusOK, http.Header{"Trailer": {"X-T"}}, false)
		cs.send(s, []byte("body"), http.Header{"X-T": {"v"}}, true)
	case "/slow":
		h.lp.After(50*time.Millisecond, func() {
			if s.Open() {
				s.WriteHeader(http.StatusOK, nil, true)
				s.Flush()
			} else {
				s.Done()
			}
			cs.release()
		})
	}
	return cs
}

// release counts the handler's letting go of the stream (once).
func (cs *confStream) release() {
	if !cs.letGo {
		cs.letGo = true
		cs.h.held.Add(-1)
	}
}

// send writes p (copied if not taken at once), then trailer or the end.
func (cs *confStream) send(s *Stream, p []byte, trailer http.Header, end bool) {
	cs.pending = append(cs.pending, p...)
	if trailer != nil {
		cs.trailer = trailer
	}
	cs.end = cs.end || end
	cs.write(s)
}

func (cs *confStream) write(s *Stream) {
	if !s.Open() {
		return
	}
	if len(cs.pending) > 0 {
		n := s.Write(cs.pending, cs.end && cs.trailer == nil)
		cs.pending = cs.pending[n:]
		if cs.echo && n > 0 {
			s.Consumed(n)
		}
		if len(cs.pending) > 0 {
			return // Writable
		}
		cs.pending = nil
		if cs.end && cs.trailer == nil {
			cs.release() // Write with end ended the stream
			return
		}
	}
	if !cs.end {
		return
	}
	if cs.trailer != nil {
		s.WriteTrailers(cs.trailer)
	} else {
		s.Write(nil, true)
	}
	cs.release()
}

func (cs *confStream) Data(s *Stream, p []byte) {
	cs.h.note(confEvent{kind: "data", id: s.ID(), path: cs.path, data: bytes.Clone(p)})
	switch cs.path {
	case "/noread", "/slow":
	case "/echo":
		cs.send(s, p, nil, false)
	default:
		s.Consumed(len(p))
	}
}

func (cs *confStream) End(s *Stream, err error) {
	cs.h.note(confEvent{kind: "end", id: s.ID(), path: cs.path, err: err, trailer: s.Trailer})
	if err != nil {
		if cs.path == "/slow" {
			return // Done at its time
		}
		s.Done()
		cs.release()
		return
	}
	switch cs.path {
	case "/noread", "/hang", "/slow", "/trailers":
	case "/echo":
		cs.send(s, nil, nil, true)
	default:
		s.WriteHeader(http.StatusOK, nil, false)
		cs.send(s, []byte("ok"), nil, true)
	}
}

func (cs *confStream) Writable(s *Stream) { cs.write(s) }

// next is the next event of stream id of kind (the others skipped).
func (h *confHandler) next(t testing.TB, id uint32, kind string) confEvent {
	t.Helper()
	deadline := time.After(confTimeout)
	for {
		select {
		case e := <-h.events:
			if e.id == id && e.kind == kind {
				return e
			}
		case <-deadline:
			t.Fatalf("the handler heard no %s of stream %d", kind, id)
			return confEvent{}
		}
	}
}

// waitLetGo waits until the handler holds no stream.
func (h *confHandler) waitLetGo(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(confTimeout)
	for h.held.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the handler still holds %d streams", h.held.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
