package h2server

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

const testTimeout = 10 * time.Second

type testServer struct {
	srv  *Server
	addr string
	ln   net.Listener
	wg   sync.WaitGroup
	tls  *tls.Config
}

// startServer serves h on a loopback listener, every connection through
// ServeConn (after a TLS handshake when tlsCfg is set).
func startServer(t testing.TB, cfg Config, h http.Handler, tlsCfg ...*tls.Config) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{srv: &Server{Config: cfg, Handler: h}, addr: ln.Addr().String(), ln: ln}
	if len(tlsCfg) > 0 {
		ts.tls = tlsCfg[0]
	}
	ts.wg.Add(1)
	go func() {
		defer ts.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ts.wg.Add(1)
			go func() {
				defer ts.wg.Done()
				if ts.tls != nil {
					tc := tls.Server(c, ts.tls)
					if tc.Handshake() != nil {
						c.Close()
						return
					}
					c = tc
				}
				ts.srv.ServeConn(context.Background(), c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		ts.srv.Close()
		ts.wg.Wait()
	})
	return ts
}

// h2cClient is Go's HTTP/2 client, prior knowledge.
func h2cClient(t testing.TB) *http.Client {
	tr := &http.Transport{}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: testTimeout}
}

// rawClient speaks frames to the server.
type rawClient struct {
	t    testing.TB
	c    net.Conn
	fr   *http2.Framer
	enc  *hpack.Encoder
	hbuf bytes.Buffer
	// the server's settings
	settings map[http2.SettingID]uint32
}

func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(testTimeout))
	rc := &rawClient{t: t, c: c, fr: http2.NewFramer(c, c), settings: map[http2.SettingID]uint32{}}
	rc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	rc.fr.AllowIllegalWrites = true
	rc.enc = hpack.NewEncoder(&rc.hbuf)
	return rc
}

// handshake sends the preface and SETTINGS (with extra settings), reads
// the server's SETTINGS and acknowledges them, and skips the server's
// connection WINDOW_UPDATE and SETTINGS ACK.
func (rc *rawClient) handshake(s ...http2.Setting) {
	rc.t.Helper()
	if _, err := io.WriteString(rc.c, http2.ClientPreface); err != nil {
		rc.t.Fatal(err)
	}
	if err := rc.fr.WriteSettings(s...); err != nil {
		rc.t.Fatal(err)
	}
	f := rc.read()
	sf, ok := f.(*http2.SettingsFrame)
	if !ok || sf.IsAck() {
		rc.t.Fatalf("first frame %v, want SETTINGS", f)
	}
	sf.ForeachSetting(func(s http2.Setting) error { rc.settings[s.ID] = s.Val; return nil })
	if err := rc.fr.WriteSettingsAck(); err != nil {
		rc.t.Fatal(err)
	}
	for gotAck := false; !gotAck; {
		switch f := rc.read().(type) {
		case *http2.SettingsFrame:
			gotAck = f.IsAck()
		case *http2.WindowUpdateFrame:
			if f.StreamID != 0 {
				rc.t.Fatalf("stream WINDOW_UPDATE before any stream: %v", f)
			}
		default:
			rc.t.Fatalf("unexpected %v during the handshake", f)
		}
	}
}

func (rc *rawClient) read() http2.Frame {
	rc.t.Helper()
	f, err := rc.fr.ReadFrame()
	if err != nil {
		rc.t.Fatalf("read frame: %v", err)
	}
	return f
}

func (rc *rawClient) block(fields ...string) []byte {
	rc.hbuf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		rc.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return bytes.Clone(rc.hbuf.Bytes())
}

var getFields = []string{":method", "GET", ":scheme", "http", ":authority", "example.test", ":path", "/"}

func (rc *rawClient) headers(id uint32, endStream bool, fields ...string) {
	rc.t.Helper()
	if len(fields) == 0 {
		fields = getFields
	}
	if err := rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: rc.block(fields...), EndStream: endStream, EndHeaders: true}); err != nil {
		rc.t.Fatal(err)
	}
}

// expectGoAway reads until a GOAWAY and checks its code.
func (rc *rawClient) expectGoAway(code http2.ErrCode) *http2.GoAwayFrame {
	rc.t.Helper()
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			rc.t.Fatalf("want GOAWAY %v, read: %v", code, err)
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			if g.ErrCode != code {
				rc.t.Fatalf("GOAWAY %v, want %v", g.ErrCode, code)
			}
			return g
		}
	}
}

// expectRST reads until RST_STREAM on id and checks its code (a GOAWAY
// first fails).
func (rc *rawClient) expectRST(id uint32, code http2.ErrCode) {
	rc.t.Helper()
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			rc.t.Fatalf("want RST_STREAM %d %v, read: %v", id, code, err)
		}
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				if f.ErrCode != code {
					rc.t.Fatalf("RST_STREAM %d %v, want %v", id, f.ErrCode, code)
				}
				return
			}
		case *http2.GoAwayFrame:
			rc.t.Fatalf("GOAWAY %v (%q), want RST_STREAM %d %v", f.ErrCode, f.DebugData(), id, code)
		}
	}
}

// response reads stream id's response: status, header, body, trailers.
type rawResponse struct {
	status   string
	header   map[string][]string
	body     []byte
	trailers map[string][]string
	frames   []http2.Frame
}

func (rc *rawClient) response(id uint32) *rawResponse {
	rc.t.Helper()
	r := &rawResponse{header: map[string][]string{}}
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			rc.t.Fatalf("response %d: %v", id, err)
		}
		if f.Header().StreamID != id {
			if g, ok := f.(*http2.GoAwayFrame); ok {
				rc.t.Fatalf("GOAWAY %v while reading %d", g.ErrCode, id)
			}
			continue
		}
		r.frames = append(r.frames, f)
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if r.status == "" || (len(r.status) == 3 && r.status[0] == '1' && f.PseudoValue("status") != "") {
				r.status = f.PseudoValue("status")
				for _, hf := range f.RegularFields() {
					r.header[hf.Name] = append(r.header[hf.Name], hf.Value)
				}
			} else {
				r.trailers = map[string][]string{}
				for _, hf := range f.RegularFields() {
					r.trailers[hf.Name] = append(r.trailers[hf.Name], hf.Value)
				}
			}
			if f.StreamEnded() {
				return r
			}
		case *http2.DataFrame:
			r.body = append(r.body, f.Data()...)
			if f.StreamEnded() {
				return r
			}
		case *http2.RSTStreamFrame:
			rc.t.Fatalf("stream %d reset: %v", id, f.ErrCode)
		}
	}
}
