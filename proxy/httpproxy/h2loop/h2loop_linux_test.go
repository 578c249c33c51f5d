package h2loop

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/proxy/h2server"
	"github.com/meridian-mesh/meridian/proxy/internal/evloop"
)

// loopServer runs srv on a loop of its own over a loopback listener until
// the test ends.
func loopServer(t testing.TB, srv *Server) (*evloop.Loop, string) {
	t.Helper()
	lp, err := evloop.New()
	if err != nil {
		t.Fatal(err)
	}
	return lp, confLoop(t, lp, srv, nil)
}

// goClient is Go's HTTP/2 client with prior knowledge.
func goClient(t testing.TB) *http.Client {
	tr := &http.Transport{}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// echoHandler answers by path: /sync at once, /later from a timer,
// anything else echoes the request body (and trailers) back as it comes,
// with the windows: what the response cannot take yet is not consumed.
type echoHandler struct{}

func (h echoHandler) ServeStream(s *Stream) Receiver {
	switch s.Request.URL.Path {
	case "/sync":
		s.WriteHeader(200, http.Header{"Content-Type": {"text/plain"}}, false)
		s.Write([]byte("hello"), true)
		return nil
	case "/later":
		s.c.lp.After(time.Millisecond, func() {
			s.WriteHeader(200, http.Header{"X-Later": {"yes"}}, false)
			s.Write([]byte("later"), true)
			s.Flush()
		})
		return &laterRecv{}
	}
	e := &echo{}
	hdr := http.Header{"X-Method": {s.Request.Method}, "X-Length": {strconv.FormatInt(s.Request.ContentLength, 10)}}
	for k := range s.Request.Trailer {
		hdr.Add("Trailer", k)
	}
	s.WriteHeader(200, hdr, false)
	return e
}

type laterRecv struct{}

func (*laterRecv) Data(s *Stream, p []byte) { s.Consumed(len(p)) }
func (*laterRecv) End(s *Stream, err error) {}
func (*laterRecv) Writable(s *Stream)       {}

type echo struct {
	pending []byte
	ended   bool
}

func (e *echo) Data(s *Stream, p []byte) {
	if len(e.pending) > 0 {
		e.pending = append(e.pending, p...)
		return
	}
	n := s.Write(p, false)
	s.Consumed(n)
	e.pending = append(e.pending, p[n:]...)
}

func (e *echo) End(s *Stream, err error) {
	if err != nil {
		s.Done()
		return
	}
	e.ended = true
	e.finish(s)
}

func (e *echo) Writable(s *Stream) {
	n := s.Write(e.pending, false)
	s.Consumed(n)
	e.pending = e.pending[n:]
	e.finish(s)
}

func (e *echo) finish(s *Stream) {
	if e.ended && len(e.pending) == 0 {
		s.WriteTrailers(s.Trailer)
	}
}

// Go's client, many streams at once on one connection: answers written
// at once and from a timer, bodies up to 3 MiB echoed both ways (past
// every window: the client's and the server's), trailers both ways.
func TestGoClient(t *testing.T) {
	srv := &Server{Config: h2server.Config{MaxConcurrentStreams: 100}, Handler: echoHandler{}}
	_, addr := loopServer(t, srv)
	c := goClient(t)
	base := "http://" + addr

	get := func(path string) (string, http.Header, error) {
		resp, err := c.Get(base + path)
		if err != nil {
			return "", nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), resp.Header, err
	}
	if body, _, err := get("/sync"); err != nil || body != "hello" {
		t.Fatalf("/sync: %q, %v", body, err)
	}
	if body, h, err := get("/later"); err != nil || body != "later" || h.Get("X-Later") != "yes" {
		t.Fatalf("/later: %q %v, %v", body, h, err)
	}

	var wg sync.WaitGroup
	sizes := []int{0, 1, 100, 16 << 10, 64<<10 + 1, 1 << 20, 3 << 20}
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			size := sizes[i%len(sizes)]
			body := make([]byte, size)
			rand.Read(body)
			req, _ := http.NewRequest("POST", base+"/echo", io.NopCloser(bytes.NewReader(body)))
			req.ContentLength = -1
			req.Trailer = http.Header{"X-Sum": nil}
			req.Trailer.Set("X-Sum", fmt.Sprint(i))
			resp, err := c.Do(req)
			if err != nil {
				t.Errorf("POST %d bytes: %v", size, err)
				return
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			if err != nil || !bytes.Equal(got, body) {
				t.Errorf("POST %d bytes: echoed %d bytes (equal %v), %v", size, len(got), bytes.Equal(got, body), err)
				return
			}
			if resp.Trailer.Get("X-Sum") != fmt.Sprint(i) {
				t.Errorf("POST %d bytes: trailer %v", size, resp.Trailer)
			}
		}(i)
	}
	wg.Wait()
}

// A client that resets a stream: the handler hears End with an error and
// the connection serves on.
func TestClientReset(t *testing.T) {
	ended := make(chan error, 1)
	srv := &Server{Handler: handlerFunc(func(s *Stream) Receiver {
		if s.Request.URL.Path == "/hang" {
			return &recvFuncs{end: func(s *Stream, err error) {
				if err != nil { // not the request's own END_STREAM
					ended <- err
					s.Done()
				}
			}}
		}
		return echoHandler{}.ServeStream(s)
	})}
	_, addr := loopServer(t, srv)
	c := goClient(t)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/hang", nil)
	go func() {
		time.Sleep(50 * time.Millisecond)
		cancel()
	}()
	if _, err := c.Do(req); err == nil {
		t.Fatal("the canceled request succeeded")
	}
	select {
	case err := <-ended:
		if !errors.Is(err, ErrStreamReset) {
			t.Errorf("End: %v, want the client's reset", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler never heard of the reset")
	}
	resp, err := c.Get("http://" + addr + "/sync")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

type handlerFunc func(*Stream) Receiver

func (f handlerFunc) ServeStream(s *Stream) Receiver { return f(s) }

type recvFuncs struct {
	data     func(*Stream, []byte)
	end      func(*Stream, error)
	writable func(*Stream)
}

func (r *recvFuncs) Data(s *Stream, p []byte) {
	if r.data != nil {
		r.data(s, p)
	} else {
		s.Consumed(len(p))
	}
}

func (r *recvFuncs) End(s *Stream, err error) {
	if r.end != nil {
		r.end(s, err)
	}
}

func (r *recvFuncs) Writable(s *Stream) {
	if r.writable != nil {
		r.writable(s)
	}
}

// The Bridge serves an http.Handler: bodies both ways past the windows,
// trailers both ways, HEAD, an interim response, a handler's panic.
func TestBridgeGoClient(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		w.Header().Set("X-Method", r.Method)
		n, err := io.Copy(w, r.Body)
		if err != nil {
			t.Errorf("handler: body read after %d bytes: %v", n, err)
		}
		w.Header().Set("X-Sum", r.Trailer.Get("X-Sum"))
	})
	mux.HandleFunc("/early", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Write([]byte("after hints"))
	})
	mux.HandleFunc("/panic", func(w http.ResponseWriter, r *http.Request) {
		panic(http.ErrAbortHandler)
	})
	srv := &Server{Handler: &Bridge{Handler: mux}}
	_, addr := loopServer(t, srv)
	c := goClient(t)
	base := "http://" + addr

	var wg sync.WaitGroup
	sizes := []int{0, 1, 5000, 64<<10 + 1, 3 << 20}
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			size := sizes[i%len(sizes)]
			body := make([]byte, size)
			rand.Read(body)
			req, _ := http.NewRequest("POST", base+"/echo", io.NopCloser(bytes.NewReader(body)))
			req.ContentLength = -1
			req.Trailer = http.Header{"X-Sum": {fmt.Sprint(i)}}
			resp, err := c.Do(req)
			if err != nil {
				t.Errorf("POST %d bytes: %v", size, err)
				return
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			if err != nil || !bytes.Equal(got, body) {
				t.Errorf("POST %d bytes: echoed %d, %v", size, len(got), err)
				return
			}
			if resp.Trailer.Get("X-Sum") != fmt.Sprint(i) || resp.Header.Get("X-Method") != "POST" {
				t.Errorf("POST %d bytes: header %v trailer %v", size, resp.Header, resp.Trailer)
			}
		}(i)
	}
	wg.Wait()

	resp, err := c.Head(base + "/echo")
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("X-Method") != "HEAD" {
		t.Fatalf("HEAD: %v %v", resp, err)
	}
	resp.Body.Close()
	resp, err = c.Get(base + "/early")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "after hints" || resp.Header.Get("Content-Length") != "11" {
		t.Errorf("/early: %d %q %v", resp.StatusCode, b, resp.Header)
	}
	if _, err := c.Get(base + "/panic"); err == nil {
		t.Error("a handler's panic did not reset its stream")
	}
	if resp, err := c.Get(base + "/missing"); err != nil || resp.StatusCode != 404 {
		t.Errorf("after the panic: %v, %v", resp, err)
	}
}
