package h2client

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/meridian-mesh/meridian/proxy/h2server"
)

const testTimeout = 10 * time.Second

// countingConn counts the writes the client makes (one per flush).
type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// testClient dials addr; writes counts the client's writes, dials its dials.
type testClient struct {
	*Client
	writes, dials atomic.Int64
}

func newTestClient(t testing.TB, addr string, o Options) *testClient {
	tc := &testClient{}
	o.Dial = func(ctx context.Context) (net.Conn, error) {
		tc.dials.Add(1)
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return countingConn{c, &tc.writes}, nil
	}
	tc.Client = New(o)
	t.Cleanup(tc.CloseIdleConnections)
	return tc
}

// serveH2 serves h with h2server on a loopback listener.
func serveH2(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &h2server.Server{Handler: h}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				srv.ServeConn(context.Background(), c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		srv.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// serveGo serves h with net/http's HTTP/2 server (h2c, prior knowledge).
func serveGo(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, Protocols: new(http.Protocols)}
	srv.Protocols.SetUnencryptedHTTP2(true)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// servers are the real HTTP/2 servers the client is tested against.
var servers = []struct {
	name  string
	serve func(testing.TB, http.Handler) string
}{
	{"h2server", serveH2},
	{"net/http", serveGo},
}

func newRequest(t testing.TB, method, url string, body []byte) *http.Request {
	t.Helper()
	var r *http.Request
	var err error
	if body == nil {
		r, err = http.NewRequest(method, url, nil)
	} else {
		r, err = http.NewRequest(method, url, bytes.NewReader(body))
	}
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// fakeServer is a raw HTTP/2 server: the test speaks frames.
type fakeServer struct {
	t     testing.TB
	ln    net.Listener
	conns chan *fakeConn
}

type fakeConn struct {
	t    testing.TB
	nc   net.Conn
	held *bytes.Buffer // frames written in batch, not yet sent
	fr   *http2.Framer
	hbuf bytes.Buffer
	henc *hpack.Encoder
}

func newFakeServer(t testing.TB) *fakeServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fs := &fakeServer{t: t, ln: ln, conns: make(chan *fakeConn, 10)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			fs.conns <- &fakeConn{t: t, nc: c}
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return fs
}

func (fs *fakeServer) addr() string { return fs.ln.Addr().String() }

// accept takes the next connection, reads the client's preface and
// SETTINGS, and sends settings (none: the defaults) and the ACK.
func (fs *fakeServer) accept(settings ...http2.Setting) *fakeConn {
	fs.t.Helper()
	var fc *fakeConn
	select {
	case fc = <-fs.conns:
	case <-time.After(testTimeout):
		fs.t.Fatal("no connection")
	}
	fc.nc.SetDeadline(time.Now().Add(testTimeout))
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := fullRead(fc.nc, preface); err != nil || string(preface) != http2.ClientPreface {
		fs.t.Fatalf("preface: %q %v", preface, err)
	}
	fc.fr = http2.NewFramer(fakeWriter{fc}, fc.nc)
	fc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fc.henc = hpack.NewEncoder(&fc.hbuf)
	f := fc.read()
	if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
		fs.t.Fatalf("first frame %v, want SETTINGS", f)
	}
	fc.fr.WriteSettings(settings...)
	fc.fr.WriteSettingsAck()
	return fc
}

func fullRead(c net.Conn, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := c.Read(p[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (fc *fakeConn) read() http2.Frame {
	fc.t.Helper()
	f, err := fc.fr.ReadFrame()
	if err != nil {
		fc.t.Fatalf("reading a frame: %v", err)
	}
	return f
}

// readUntil reads frames, skipping SETTINGS ACKs, WINDOW_UPDATEs and
// PINGs (acknowledged), until one for which keep is true.
func (fc *fakeConn) readUntil(keep func(http2.Frame) bool) http2.Frame {
	fc.t.Helper()
	for {
		f := fc.read()
		if keep(f) {
			return f
		}
	}
}

// readHeaders reads up to the next request HEADERS.
func (fc *fakeConn) readHeaders() *http2.MetaHeadersFrame {
	fc.t.Helper()
	return fc.readUntil(func(f http2.Frame) bool { _, ok := f.(*http2.MetaHeadersFrame); return ok }).(*http2.MetaHeadersFrame)
}

// headers writes a header block; fields alternate names and values.
func (fc *fakeConn) headers(id uint32, end bool, fields ...string) {
	fc.t.Helper()
	fc.hbuf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		fc.henc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	if err := fc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: fc.hbuf.Bytes(), EndStream: end, EndHeaders: true}); err != nil {
		fc.t.Fatal(err)
	}
}

type fakeWriter struct{ fc *fakeConn }

func (w fakeWriter) Write(p []byte) (int, error) {
	if w.fc.held != nil {
		return w.fc.held.Write(p)
	}
	return w.fc.nc.Write(p)
}

// batch sends the frames f writes in one write.
func (fc *fakeConn) batch(f func()) {
	fc.t.Helper()
	fc.held = new(bytes.Buffer)
	f()
	b := fc.held.Bytes()
	fc.held = nil
	if _, err := fc.nc.Write(b); err != nil {
		fc.t.Fatal(err)
	}
}

func newDecoder() *hpack.Decoder                { return hpack.NewDecoder(4096, nil) }
func newEncoder(w *bytes.Buffer) *hpack.Encoder { return hpack.NewEncoder(w) }

// sync returns once the client has processed every frame sent before it
// (a PING's answer comes after them).
func (fc *fakeConn) sync() {
	fc.t.Helper()
	fc.fr.WritePing(false, [8]byte{'s', 'y', 'n', 'c'})
	fc.readUntil(func(f http2.Frame) bool {
		p, ok := f.(*http2.PingFrame)
		return ok && p.IsAck() && p.Data == [8]byte{'s', 'y', 'n', 'c'}
	})
}
