// Package h2test is what the proxy's HTTP/2 servers' tests share: a client
// that speaks raw frames on a real socket (x/net/http2's Framer), so that
// a test writes exactly the frames RFC 9113 has it write, legal or not,
// and reads exactly what the server answers. proxy/h2server and
// proxy/httpproxy/h2loop run the same tests through it. Only tests import
// it.
package h2test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Timeout bounds every wait of these tests (a socket's deadline, an event
// a handler must see). Nothing takes near that long when it works.
const Timeout = 10 * time.Second

// Client speaks frames to a server on one connection.
type Client struct {
	T  testing.TB
	C  net.Conn
	Fr *http2.Framer
	// WMu serializes the writes of a test that writes from two
	// goroutines (the Framer's writes share a buffer).
	WMu sync.Mutex
	// Settings are the server's, from its first SETTINGS (Handshake).
	Settings map[http2.SettingID]uint32

	enc  *hpack.Encoder
	hbuf bytes.Buffer
}

// Dial connects to addr; the connection is closed when the test ends.
func Dial(t testing.TB, addr string) *Client {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, Timeout)
	if err != nil {
		t.Fatal(err)
	}
	return Frames(t, c)
}

// Frames speaks frames on c, closed when the test ends.
func Frames(t testing.TB, c net.Conn) *Client {
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(Timeout))
	rc := &Client{T: t, C: c, Fr: http2.NewFramer(c, c), Settings: map[http2.SettingID]uint32{}}
	rc.Fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	rc.Fr.AllowIllegalWrites = true
	rc.Fr.SetMaxReadFrameSize(1 << 24)
	rc.enc = hpack.NewEncoder(&rc.hbuf)
	return rc
}

// Handshake sends the preface and SETTINGS (with extra settings), reads
// the server's SETTINGS and acknowledges them, and skips the server's
// connection WINDOW_UPDATE and SETTINGS ACK.
func (rc *Client) Handshake(s ...http2.Setting) {
	rc.T.Helper()
	if _, err := io.WriteString(rc.C, http2.ClientPreface); err != nil {
		rc.T.Fatal(err)
	}
	if err := rc.Fr.WriteSettings(s...); err != nil {
		rc.T.Fatal(err)
	}
	f := rc.Read()
	sf, ok := f.(*http2.SettingsFrame)
	if !ok || sf.IsAck() {
		rc.T.Fatalf("first frame %v, want SETTINGS", f)
	}
	sf.ForeachSetting(func(s http2.Setting) error { rc.Settings[s.ID] = s.Val; return nil })
	if err := rc.Fr.WriteSettingsAck(); err != nil {
		rc.T.Fatal(err)
	}
	for gotAck := false; !gotAck; {
		switch f := rc.Read().(type) {
		case *http2.SettingsFrame:
			gotAck = f.IsAck()
		case *http2.WindowUpdateFrame:
			if f.StreamID != 0 {
				rc.T.Fatalf("stream WINDOW_UPDATE before any stream: %v", f)
			}
		default:
			rc.T.Fatalf("unexpected %v during the handshake", f)
		}
	}
}

// Read reads a frame; an error fails the test.
func (rc *Client) Read() http2.Frame {
	rc.T.Helper()
	f, err := rc.Fr.ReadFrame()
	if err != nil {
		rc.T.Fatalf("read frame: %v", err)
	}
	return f
}

// Block encodes fields (name, value, name, value...) as a header block,
// with the connection's encoder (its dynamic table carries on).
func (rc *Client) Block(fields ...string) []byte {
	rc.hbuf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		rc.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return bytes.Clone(rc.hbuf.Bytes())
}

// Get is a GET of / for example.test.
var Get = []string{":method", "GET", ":scheme", "http", ":authority", "example.test", ":path", "/"}

// Req is a request's fields for method and path, extra fields after.
func Req(method, path string, extra ...string) []string {
	return append([]string{":method", method, ":scheme", "http", ":authority", "example.test", ":path", path}, extra...)
}

// Headers writes one HEADERS frame with the whole block (Get without
// fields).
func (rc *Client) Headers(id uint32, endStream bool, fields ...string) {
	rc.T.Helper()
	if len(fields) == 0 {
		fields = Get
	}
	if err := rc.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: rc.Block(fields...), EndStream: endStream, EndHeaders: true}); err != nil {
		rc.T.Fatal(err)
	}
}

// ExpectGoAway reads until a GOAWAY and checks its code.
func (rc *Client) ExpectGoAway(code http2.ErrCode) *http2.GoAwayFrame {
	rc.T.Helper()
	for {
		f, err := rc.Fr.ReadFrame()
		if err != nil {
			rc.T.Fatalf("want GOAWAY %v, read: %v", code, err)
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			if g.ErrCode != code {
				rc.T.Fatalf("GOAWAY %v, want %v", g.ErrCode, code)
			}
			return g
		}
	}
}

// ExpectClosed reads (discarding) until the server closes the
// connection, within 5 s.
func (rc *Client) ExpectClosed() {
	rc.T.Helper()
	rc.C.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, err := rc.Fr.ReadFrame(); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				rc.T.Fatal("connection not closed")
			}
			return
		}
	}
}

// ExpectRST reads until RST_STREAM on id and checks its code (a GOAWAY
// first fails).
func (rc *Client) ExpectRST(id uint32, code http2.ErrCode) {
	rc.T.Helper()
	for {
		f, err := rc.Fr.ReadFrame()
		if err != nil {
			rc.T.Fatalf("want RST_STREAM %d %v, read: %v", id, code, err)
		}
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				if f.ErrCode != code {
					rc.T.Fatalf("RST_STREAM %d %v, want %v", id, f.ErrCode, code)
				}
				return
			}
		case *http2.GoAwayFrame:
			rc.T.Fatalf("GOAWAY %v (%q), want RST_STREAM %d %v", f.ErrCode, f.DebugData(), id, code)
		}
	}
}

// Response is a stream's response as its frames had it.
type Response struct {
	Status   string
	Header   map[string][]string
	Body     []byte
	Trailers map[string][]string // nil without a trailer block
	Frames   []http2.Frame       // the stream's, in order
}

// Response reads stream id's response (other streams' frames skipped; a
// GOAWAY or the stream's RST_STREAM fails). Status is the final
// response's; Header gathers the 1xx's fields with the final one's.
func (rc *Client) Response(id uint32) *Response {
	rc.T.Helper()
	r := &Response{Header: map[string][]string{}}
	for {
		f, err := rc.Fr.ReadFrame()
		if err != nil {
			rc.T.Fatalf("response %d: %v", id, err)
		}
		if f.Header().StreamID != id {
			if g, ok := f.(*http2.GoAwayFrame); ok {
				rc.T.Fatalf("GOAWAY %v while reading %d", g.ErrCode, id)
			}
			continue
		}
		r.Frames = append(r.Frames, f)
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if r.Status == "" || (len(r.Status) == 3 && r.Status[0] == '1' && f.PseudoValue("status") != "") {
				r.Status = f.PseudoValue("status")
				for _, hf := range f.RegularFields() {
					r.Header[hf.Name] = append(r.Header[hf.Name], hf.Value)
				}
			} else {
				r.Trailers = map[string][]string{}
				for _, hf := range f.RegularFields() {
					r.Trailers[hf.Name] = append(r.Trailers[hf.Name], hf.Value)
				}
			}
			if f.StreamEnded() {
				return r
			}
		case *http2.DataFrame:
			r.Body = append(r.Body, bytes.Clone(f.Data())...)
			if f.StreamEnded() {
				return r
			}
		case *http2.RSTStreamFrame:
			rc.T.Fatalf("stream %d reset: %v", id, f.ErrCode)
		}
	}
}
