package h2loop

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/meridian-mesh/meridian/proxy/h2server"
	"github.com/meridian-mesh/meridian/proxy/internal/evloop"
)

// clTimeout bounds every wait of the client's tests.
const clTimeout = 20 * time.Second

// clLoop runs a loop until the test ends.
func clLoop(t testing.TB) *evloop.Loop {
	t.Helper()
	lp, err := evloop.New()
	if err != nil {
		t.Fatal(err)
	}
	runLoop(t, lp, nil)
	return lp
}

// clDial connects a ClientConn on lp to addr.
func clDial(t testing.TB, lp *evloop.Loop, addr string, cfg ClientConfig) *ClientConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := evloop.Take(nc.(*net.TCPConn))
	if err != nil {
		t.Fatal(err)
	}
	var c *ClientConn
	confOn(t, lp, func() { c, err = NewClientConnFD(lp, fd, cfg) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lp.Post(c.Close) })
	return c
}

// clRecv records a stream's response, and sends its request's body (and
// trailers) as the windows allow. Its fields are the loop's until done is
// closed.
type clRecv struct {
	infos    []int
	status   int
	header   http.Header
	declared http.Header // s.Trailer at Response
	body     bytes.Buffer
	trailers http.Header
	err      error
	done     chan struct{}

	send       []byte      // the request body still to write
	sendTrl    http.Header // its trailers
	sending    bool
	on100      bool // send the body at 100 Continue only
	hold       bool // do not consume the response's DATA
	held       int
	full       chan struct{} // closed once fullAt bytes are held
	fullAt     int
	wasFull    bool
	onResponse func(s *ClientStream)
	onEnd      func(s *ClientStream)
}

func newClRecv() *clRecv { return &clRecv{done: make(chan struct{})} }

func (r *clRecv) Informational(s *ClientStream, status int, h http.Header) {
	r.infos = append(r.infos, status)
	if status == http.StatusContinue && r.on100 {
		r.on100 = false
		r.write(s)
	}
}

func (r *clRecv) Response(s *ClientStream, status int, h http.Header) {
	r.status, r.header, r.declared = status, h, s.Trailer
	if r.onResponse != nil {
		r.onResponse(s)
	}
}

func (r *clRecv) Data(s *ClientStream, p []byte) {
	r.body.Write(p)
	if r.hold {
		r.held += len(p)
		if r.full != nil && !r.wasFull && r.held >= r.fullAt {
			r.wasFull = true
			close(r.full)
		}
		return
	}
	s.Consumed(len(p))
}

func (r *clRecv) End(s *ClientStream, trailers http.Header, err error) {
	r.trailers, r.err = trailers, err
	if r.onEnd != nil {
		r.onEnd(s)
	}
	close(r.done)
}

func (r *clRecv) Writable(s *ClientStream) { r.write(s) }

// write sends what is left of the request body, then its trailers or its
// END_STREAM.
func (r *clRecv) write(s *ClientStream) {
	if !r.sending || r.on100 {
		return
	}
	n := s.Write(r.send, r.sendTrl == nil)
	r.send = r.send[n:]
	if len(r.send) > 0 {
		return // Writable comes back
	}
	if r.sendTrl != nil {
		s.WriteTrailers(r.sendTrl)
	}
	r.sending = false
}

// wait waits for the stream's End (bounded).
func (r *clRecv) wait(t testing.TB) {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(clTimeout):
		t.Fatal("the stream did not end")
	}
}

// clDo opens req on c with r, and sends body (nil: none) and trailers.
// The stream is returned once the HEADERS are flushed.
func clDo(t testing.TB, c *ClientConn, req *http.Request, body []byte, trailers http.Header, r *clRecv) *ClientStream {
	t.Helper()
	var st *ClientStream
	var err error
	confOn(t, c.lp, func() {
		st, err = c.Open(req, body == nil && trailers == nil, r)
		if err == nil && (body != nil || trailers != nil) {
			r.send, r.sendTrl, r.sending = body, trailers, true
			r.write(st)
		}
		c.Flush()
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return st
}

func clReq(method, url string, h http.Header) *http.Request {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		panic(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	return req
}

// clH2Server serves h with h2server over a loopback listener.
func clH2Server(t testing.TB, cfg h2server.Config, h http.Handler) (*h2server.Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &h2server.Server{Config: cfg, Handler: h}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				srv.ServeConn(context.Background(), nc)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		srv.Close()
		wg.Wait()
	})
	return srv, ln.Addr().String()
}

// clGoServer serves h with net/http's HTTP/2 server (h2c with prior
// knowledge) over a loopback listener.
func clGoServer(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h, Protocols: new(http.Protocols)}
	hs.Protocols.SetUnencryptedHTTP2(true)
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return ln.Addr().String()
}

// clEcho answers with the request's head in X- fields and its body (and
// trailers) echoed back, flushing as it goes.
func clEcho() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Method", r.Method)
		h.Set("X-Host", r.Host)
		h.Set("X-Path", r.URL.RequestURI())
		h.Set("X-Cookie", strings.Join(r.Header.Values("Cookie"), "|"))
		h.Set("X-Te", r.Header.Get("Te"))
		h.Set("X-Content-Length", fmt.Sprint(r.ContentLength))
		h.Set("X-Connection-Fields", fmt.Sprint(r.Header["Connection"], r.Header["Keep-Alive"], r.Header["Upgrade"]))
		h.Set("X-Big", fmt.Sprint(len(r.Header.Get("X-Big"))))
		for k := range r.Trailer {
			h.Add("Trailer", "X-Echo-"+k)
		}
		w.WriteHeader(200)
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				w.Write(buf[:n])
				w.(http.Flusher).Flush()
			}
			if err != nil {
				break
			}
		}
		for k, v := range r.Trailer {
			h["X-Echo-"+k] = v
		}
	})
}

func clRandom(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// TestClientH2ServerGet: a GET's request as Go's transport sends it, and
// its response.
func TestClientH2ServerGet(t *testing.T) {
	_, addr := clH2Server(t, h2server.Config{}, clEcho())
	lp := clLoop(t)
	c := clDial(t, lp, addr, ClientConfig{})
	r := newClRecv()
	req := clReq("GET", "http://example.com/a/b?c=d", http.Header{
		"Cookie":     {"a=1; b=2"},
		"Te":         {"gzip, trailers"},
		"Connection": {"keep-alive"},
		"Keep-Alive": {"timeout=5"},
	})
	clDo(t, c, req, nil, nil, r)
	r.wait(t)
	if r.err != nil {
		t.Fatal(r.err)
	}
	want := map[string]string{
		"X-Method": "GET", "X-Host": "example.com", "X-Path": "/a/b?c=d",
		"X-Cookie": "a=1; b=2", "X-Te": "trailers", "X-Content-Length": "0",
		"X-Connection-Fields": "[] [] []",
	}
	for k, v := range want {
		if got := r.header.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
	if r.status != 200 || r.body.Len() != 0 || r.trailers != nil {
		t.Errorf("status %d, body %q, trailers %v", r.status, r.body.String(), r.trailers)
	}
	// The connection is kept: a second request on it.
	r2 := newClRecv()
	clDo(t, c, clReq("GET", "http://example.com/again", nil), nil, nil, r2)
	r2.wait(t)
	if r2.err != nil || r2.header.Get("X-Path") != "/again" {
		t.Fatal(r2.err, r2.header)
	}
	var n int
	confOn(t, lp, func() { n = c.Streams() })
	if n != 0 {
		t.Errorf("%d streams open", n)
	}
}

// TestClientRequestRefusedBeforeWriting: what Go's transport refuses is
// refused before anything is written, and the connection goes on.
func TestClientRequestRefusedBeforeWriting(t *testing.T) {
	_, addr := clH2Server(t, h2server.Config{}, clEcho())
	lp := clLoop(t)
	c := clDial(t, lp, addr, ClientConfig{})
	for _, req := range []*http.Request{
		clReq("GET", "http://example.com/", http.Header{"Connection": {"upgrade"}}),
		clReq("GET", "http://example.com/", http.Header{"Bad\nName": {"x"}}),
		clReq("GET", "http://example.com/", http.Header{"X": {"bad\nvalue"}}),
		{Method: "GET", URL: nil},
		clReq("GET", "ftp://example.com/", nil),
	} {
		var err error
		confOn(t, lp, func() { _, err = c.Open(req, true, newClRecv()) })
		if err == nil || errors.Is(err, ErrRefused) {
			t.Errorf("%v: err %v", req.Header, err)
		}
	}
	r := newClRecv()
	clDo(t, c, clReq("GET", "http://example.com/ok", nil), nil, nil, r)
	r.wait(t)
	if r.err != nil || r.status != 200 {
		t.Fatal(r.err, r.status)
	}
	var id uint32
	confOn(t, lp, func() { id = c.nextID })
	if id != 3 {
		t.Errorf("next stream id %d: a refused request took one", id)
	}
}

// TestClientH2ServerFlowControl: a body larger than every window both
// ways, echoed back, with small windows on both sides; the receiver holds
// what it got for a while (the server stops at the windows), then
// consumes it.
func TestClientH2ServerFlowControl(t *testing.T) {
	_, addr := clH2Server(t, h2server.Config{MaxReceiveBufferPerStream: 64 << 10, MaxReceiveBufferPerConnection: 96 << 10}, clEcho())
	lp := clLoop(t)
	c := clDial(t, lp, addr, ClientConfig{StreamWindow: 32 << 10, ConnWindow: 48 << 10})
	body := clRandom(3<<20 + 123)
	r := newClRecv()
	req := clReq("POST", "http://example.com/echo", nil)
	req.ContentLength = int64(len(body))
	clDo(t, c, req, body, nil, r)
	r.wait(t)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.header.Get("X-Content-Length") != fmt.Sprint(len(body)) || !bytes.Equal(r.body.Bytes(), body) {
		t.Fatalf("echo of %d bytes: %d bytes, X-Content-Length %q", len(body), r.body.Len(), r.header.Get("X-Content-Length"))
	}

	// A receiver that holds what it got: the server stops at the
	// stream's window, and goes on once it is consumed.
	r2 := newClRecv()
	r2.hold = true
	full := make(chan struct{})
	r2.full, r2.fullAt = full, 32<<10
	req2 := clReq("POST", "http://example.com/echo", nil)
	req2.ContentLength = 1 << 20
	st := clDo(t, c, req2, clRandom(1<<20), nil, r2)
	select {
	case <-full: // more would have been a FLOW_CONTROL_ERROR
	case <-r2.done:
		t.Fatalf("End: %v", r2.err)
	case <-time.After(clTimeout):
		var h, sent int
		confOn(t, lp, func() { h, sent = r2.held, len(r2.send) })
		t.Fatalf("the stream's window was not filled: %d held, %d to send", h, sent)
	}
	confOn(t, lp, func() {
		r2.hold = false
		st.Consumed(r2.held)
		st.Flush()
	})
	r2.wait(t)
	if r2.err != nil || r2.body.Len() != 1<<20 {
		t.Fatal(r2.err, r2.body.Len())
	}
}

// TestClientH2ServerTrailers: trailers both ways, declared ones in
// s.Trailer.
func TestClientH2ServerTrailers(t *testing.T) {
	_, addr := clH2Server(t, h2server.Config{}, clEcho())
	lp := clLoop(t)
	c := clDial(t, lp, addr, ClientConfig{})
	r := newClRecv()
	req := clReq("POST", "http://example.com/", nil)
	req.Trailer = http.Header{"X-T": nil}
	clDo(t, c, req, []byte("body"), http.Header{"X-T": {"v"}}, r)
	r.wait(t)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.body.String() != "body" || r.trailers.Get("X-Echo-X-T") != "v" {
		t.Fatalf("body %q trailers %v", r.body.String(), r.trailers)
	}
	if _, ok := r.declared["X-Echo-X-T"]; !ok {
		t.Errorf("declared trailers %v", r.declared)
	}
	// Trailers without a body.
	r2 := newClRecv()
	req2 := clReq("POST", "http://example.com/", nil)
	req2.Trailer = http.Header{"X-T": nil}
	clDo(t, c, req2, nil, http.Header{"X-T": {"w"}}, r2)
	r2.wait(t)
	if r2.err != nil || r2.trailers.Get("X-Echo-X-T") != "w" {
		t.Fatal(r2.err, r2.trailers)
	}
}

// TestClientH2ServerInformational: 103 Early Hints, and 100 Continue
// before a body that waits for it.
func TestClientH2ServerInformational(t *testing.T) {
	_, addr := clH2Server(t, h2server.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hints" {
			w.Header().Set("Link", "</a.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.WriteHeader(200)
			return
		}
		b, _ := io.ReadAll(r.Body) // 100 Continue at the first read
		w.Write(b)
	}))
	lp := clLoop(t)
	c := clDial(t, lp, addr, ClientConfig{})
	r := newClRecv()
	clDo(t, c, clReq("GET", "http://example.com/hints", nil), nil, nil, r)
	r.wait(t)
	if r.err != nil || len(r.infos) != 1 || r.infos[0] != 103 || r.status != 200 {
		t.Fatal(r.err, r.infos, r.status)
	}

	r2 := newClRecv()
	r2.on100 = true
	req := clReq("POST", "http://example.com/continue", http.Header{"Expect": {"100-continue"}})
	req.ContentLength = 5
	clDo(t, c, req, []byte("hello"), nil, r2)
	r2.wait(t)
	if r2.err != nil || len(r2.infos) != 1 || r2.infos[0] != 100 || r2.body.String() != "hello" {
		t.Fatal(r2.err, r2.infos, r2.body.String())
	}
}

// clQueue sends n GETs on c, at most as many at once as CanOpen allows,
// the next one opened as one ends; it records the most open at once.
type clQueue struct {
	c       *ClientConn
	left    int
	open    int
	maxOpen int
	errs    []error
	ended   int
	done    chan struct{}
	n       int
}

func (q *clQueue) fill() {
	for q.left > 0 && q.c.CanOpen() {
		q.left--
		r := newClRecv()
		r.onEnd = func(s *ClientStream) {
			q.open--
			q.ended++
			if r.err != nil || r.status != 200 {
				q.errs = append(q.errs, fmt.Errorf("status %d err %v", r.status, r.err))
			}
			if q.ended == q.n {
				close(q.done)
				return
			}
			q.fill()
		}
		if _, err := q.c.Open(clReq("GET", "http://example.com/", nil), true, r); err != nil {
			q.errs = append(q.errs, err)
			return
		}
		q.open++
		q.maxOpen = max(q.maxOpen, q.open)
	}
	q.c.Flush()
}

// TestClientH2ServerConcurrency: more streams than the server's
// MAX_CONCURRENT_STREAMS, CanOpen false at its limit.
func TestClientH2ServerConcurrency(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	inHandler := 0
	arrived := make(chan struct{}, 100)
	_, addr := clH2Server(t, h2server.Config{MaxConcurrentStreams: 5}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			mu.Lock()
			inHandler++
			mu.Unlock()
			arrived <- struct{}{}
			<-release
		}
		w.Write([]byte("ok"))
	}))
	lp := clLoop(t)
	c := clDial(t, lp, addr, ClientConfig{})
	// One request first: the server's SETTINGS are in after it.
	r := newClRecv()
	clDo(t, c, clReq("GET", "http://example.com/", nil), nil, nil, r)
	r.wait(t)
	var blocked []*clRecv
	confOn(t, lp, func() {
		for c.CanOpen() {
			rb := newClRecv()
			if _, err := c.Open(clReq("GET", "http://example.com/block", nil), true, rb); err != nil {
				t.Error(err)
				break
			}
			blocked = append(blocked, rb)
		}
		c.Flush()
	})
	if len(blocked) != 5 {
		t.Fatalf("CanOpen allowed %d streams, want 5", len(blocked))
	}
	for range 5 {
		select {
		case <-arrived:
		case <-time.After(clTimeout):
			t.Fatal("the handlers did not start")
		}
	}
	var err error
	confOn(t, lp, func() { _, err = c.Open(clReq("GET", "http://example.com/", nil), true, newClRecv()) })
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("Open at the limit: %v", err)
	}
	close(release)
	for _, rb := range blocked {
		rb.wait(t)
		if rb.err != nil || rb.body.String() != "ok" {
			t.Fatal(rb.err, rb.body.String())
		}
	}
	q := &clQueue{c: c, left: 60, n: 60, done: make(chan struct{})}
	confOn(t, lp, q.fill)
	select {
	case <-q.done:
	case <-time.After(clTimeout):
		t.Fatal("the queue did not end")
	}
	confOn(t, lp, func() {
		if len(q.errs) > 0 || q.maxOpen != 5 {
			t.Errorf("errors %v, at most %d open at once", q.errs, q.maxOpen)
		}
	})
}

// TestClientH2ServerLargeHeaders: a request header and a response header
// larger than a frame go in CONTINUATION frames.
func TestClientH2ServerLargeHeaders(t *testing.T) {
	big := strings.Repeat("b", 100<<10)
	_, addr := clH2Server(t, h2server.Config{MaxReadFrameSize: 16 << 10}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Big", fmt.Sprint(len(r.Header.Get("X-Big"))))
		w.Header().Set("X-Large", big)
		w.Write([]byte("ok"))
	}))
	lp := clLoop(t)
	c := clDial(t, lp, addr, ClientConfig{MaxReadFrameSize: 16 << 10})
	// The first request waits for the server's SETTINGS (its MAX_FRAME_SIZE).
	r0 := newClRecv()
	clDo(t, c, clReq("GET", "http://example.com/", nil), nil, nil, r0)
	r0.wait(t)
	r := newClRecv()
	clDo(t, c, clReq("GET", "http://example.com/", http.Header{"X-Big": {big}}), nil, nil, r)
	r.wait(t)
	if r.err != nil || r.header.Get("X-Big") != fmt.Sprint(len(big)) || r.header.Get("X-Large") != big || r.body.String() != "ok" {
		t.Fatalf("err %v, X-Big %q, X-Large of %d", r.err, r.header.Get("X-Big"), len(r.header.Get("X-Large")))
	}
}

// TestClientH2ServerPanicReset: a handler's panic resets the stream
// (INTERNAL_ERROR); the connection goes on.
func TestClientH2ServerPanicReset(t *testing.T) {
	_, addr := clH2Server(t, h2server.Config{ErrorLog: discardLogger()}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/panic" {
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
			panic("boom")
		}
		w.Write([]byte("ok"))
	}))
	lp := clLoop(t)
	c := clDial(t, lp, addr, ClientConfig{})
	r := newClRecv()
	clDo(t, c, clReq("GET", "http://example.com/panic", nil), nil, nil, r)
	r.wait(t)
	var rst ServerResetError
	if !errors.As(r.err, &rst) || rst.Code != http2.ErrCodeInternal || !errors.Is(r.err, ErrStreamReset) || errors.Is(r.err, ErrRefused) {
		t.Fatalf("End: %v", r.err)
	}
	r2 := newClRecv()
	clDo(t, c, clReq("GET", "http://example.com/", nil), nil, nil, r2)
	r2.wait(t)
	if r2.err != nil || r2.body.String() != "ok" {
		t.Fatal(r2.err)
	}
}

// TestClientH2ServerShutdown: the server's GOAWAY lets the streams in
// flight finish, and the connection takes no new one, then closes.
func TestClientH2ServerShutdown(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 2)
	srv, addr := clH2Server(t, h2server.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		w.Write([]byte("done"))
	}))
	lp := clLoop(t)
	unusable := make(chan struct{})
	c := clDial(t, lp, addr, ClientConfig{Unusable: func(*ClientConn) { close(unusable) }})
	r1, r2 := newClRecv(), newClRecv()
	clDo(t, c, clReq("GET", "http://example.com/1", nil), nil, nil, r1)
	clDo(t, c, clReq("GET", "http://example.com/2", nil), nil, nil, r2)
	for range 2 {
		select {
		case <-arrived:
		case <-time.After(clTimeout):
			t.Fatal("the handlers did not start")
		}
	}
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), clTimeout)
		defer cancel()
		shut <- srv.Shutdown(ctx)
	}()
	select {
	case <-unusable: // the GOAWAY is in
	case <-time.After(clTimeout):
		t.Fatal("no GOAWAY")
	}
	var err error
	confOn(t, lp, func() { _, err = c.Open(clReq("GET", "http://example.com/3", nil), true, newClRecv()) })
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("Open after GOAWAY: %v", err)
	}
	close(release)
	for _, r := range []*clRecv{r1, r2} {
		r.wait(t)
		if r.err != nil || r.body.String() != "done" {
			t.Fatal(r.err, r.body.String())
		}
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(clTimeout):
		t.Fatal("Shutdown did not end")
	}
	var closed bool
	confOn(t, lp, func() { closed = c.Closed() })
	if !closed {
		t.Error("the connection is still open")
	}
}

// TestClientGoServer: Go's own HTTP/2 server.
func TestClientGoServer(t *testing.T) {
	addr := clGoServer(t, clEcho())
	lp := clLoop(t)
	c := clDial(t, lp, addr, ClientConfig{StreamWindow: 64 << 10, ConnWindow: 128 << 10})
	r := newClRecv()
	clDo(t, c, clReq("GET", "http://example.com/get?x=1", http.Header{"Cookie": {"a=1; b=2"}}), nil, nil, r)
	r.wait(t)
	if r.err != nil || r.status != 200 || r.header.Get("X-Path") != "/get?x=1" || r.header.Get("X-Cookie") != "a=1; b=2" {
		t.Fatal(r.err, r.status, r.header)
	}
	body := clRandom(2<<20 + 7)
	r2 := newClRecv()
	req := clReq("POST", "http://example.com/post", nil)
	req.ContentLength = int64(len(body))
	clDo(t, c, req, body, nil, r2)
	r2.wait(t)
	if r2.err != nil || !bytes.Equal(r2.body.Bytes(), body) {
		t.Fatalf("err %v, %d bytes back of %d", r2.err, r2.body.Len(), len(body))
	}
	r3 := newClRecv()
	req3 := clReq("POST", "http://example.com/trailers", nil)
	req3.Trailer = http.Header{"X-T": nil}
	clDo(t, c, req3, []byte("with trailers"), http.Header{"X-T": {"v"}}, r3)
	r3.wait(t)
	if r3.err != nil || r3.body.String() != "with trailers" || r3.trailers.Get("X-Echo-X-T") != "v" {
		t.Fatal(r3.err, r3.body.String(), r3.trailers)
	}
}

func discardLogger() *log.Logger { return log.New(io.Discard, "", 0) }
