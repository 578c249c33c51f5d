package h2loop

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/meridian-mesh/meridian/proxy/h2server"
	"github.com/meridian-mesh/meridian/proxy/internal/h2test"
)

// What the loop handler (Handler, Receiver, Stream) hears and does around
// the RFC 9113 rules, as raw frames on a real socket, with the loop-side
// confHandler (harness_linux_test.go): End's errors, Data's batches,
// Consumed and the windows, trailers. The rules themselves, both servers'
// with an http.Handler, are proxy/internal/h2suite's: suite_linux_test.go
// runs them against a Bridge.

// confRaw starts a server and a client that did the handshake.
func confRaw(t *testing.T, cfg h2server.Config, s ...http2.Setting) (*confServer, *h2test.Client) {
	t.Helper()
	cs := confStart(t, cfg)
	rc := cs.dial(t)
	rc.Handshake(s...)
	return cs, rc
}

// A body shorter than its content-length is malformed (RFC 9113 8.1.1):
// the handler hears of it (End with PROTOCOL_ERROR), the client gets
// RST_STREAM PROTOCOL_ERROR. (The suite's ContentLengthShort cannot ask
// for the RST_STREAM: h2server, as Go's server, only fails the body's
// read and answers.)
func TestConfContentLengthShort(t *testing.T) {
	cs, rc := confRaw(t, h2server.Config{})
	rc.Headers(1, false, h2test.Req("POST", "/hang", "content-length", "10")...)
	rc.Fr.WriteData(1, true, []byte("abc"))
	e := cs.h.next(t, 1, "end")
	var se http2.StreamError
	if !errors.Is(e.err, ErrStreamReset) || !errors.As(e.err, &se) || se.Code != http2.ErrCodeProtocol {
		t.Fatalf("End(%v), want ErrStreamReset with a PROTOCOL_ERROR stream error", e.err)
	}
	rc.ExpectRST(1, http2.ErrCodeProtocol)
	cs.h.waitLetGo(t)
}

// The analogue of the suite's BodyEOFWithLastBytes (the body's last
// bytes and io.EOF together): DATA that came while the stream waited for a handler slot (a
// reset stream the handler has not let go of yet holds it) is given in one
// Data call once the stream starts, End(nil) right after.
func TestConfBodyWithEndWhenStarted(t *testing.T) {
	cs, rc := confRaw(t, h2server.Config{MaxConcurrentStreams: 1})
	// In one write, so that all is in before /slow lets go of stream 1.
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.Block(h2test.Req("GET", "/slow")...), EndStream: true, EndHeaders: true})
	fr.WriteRSTStream(1, http2.ErrCodeCancel)
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: rc.Block(h2test.Req("POST", "/hang", "content-type", "application/grpc")...), EndHeaders: true})
	fr.WriteData(3, false, []byte("hello"))
	fr.WriteData(3, true, []byte(" world"))
	if _, err := rc.C.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) == 0 || got[len(got)-1] != "end" {
		select {
		case e := <-cs.h.events:
			switch {
			case e.id == 1 && e.kind == "end" && len(got) > 0:
				t.Fatalf("stream 3 started before stream 1's End: %q", got)
			case e.id != 3:
			case e.kind == "end":
				if e.err != nil {
					t.Fatalf("End(%v)", e.err)
				}
				got = append(got, "end")
			case e.kind == "data":
				got = append(got, string(e.data))
			default:
				got = append(got, e.kind)
			}
		case <-time.After(confTimeout):
			t.Fatalf("stream 3: %q, no end", got)
		}
	}
	if g := strings.Join(got, "|"); g != "serve|hello world|end" {
		t.Fatalf("stream 3 heard %s", g)
	}
}

// Both ways at once: a body echoed as it comes, each direction bounded by
// its windows (the server's receive window given back only as the echo is
// written, so it follows the client's reading).
func TestConfEchoFlowControl(t *testing.T) {
	const size = 1 << 20
	_, rc := confRaw(t, h2server.Config{MaxReceiveBufferPerStream: 65535, MaxReceiveBufferPerConnection: 65535},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65535})
	rc.Headers(1, false, h2test.Req("POST", "/echo")...)
	in := make([]byte, size)
	for i := range in {
		in[i] = byte(i * 7)
	}
	errc := make(chan error, 1)
	winc := make(chan [2]int, 64) // WINDOW_UPDATEs read: stream 0, stream 1
	go func() {
		connWin, streamWin := 65535, 65535
		sent := 0
		for sent < size {
			n := min(16384, connWin, streamWin, size-sent)
			if n == 0 {
				select {
				case w := <-winc:
					connWin += w[0]
					streamWin += w[1]
				case <-time.After(confTimeout):
					errc <- errors.New("no WINDOW_UPDATE")
					return
				}
				continue
			}
			rc.WMu.Lock()
			err := rc.Fr.WriteData(1, sent+n == size, in[sent:sent+n])
			rc.WMu.Unlock()
			if err != nil {
				errc <- err
				return
			}
			sent += n
			connWin -= n
			streamWin -= n
		}
		errc <- nil
	}()
	var out []byte
	outWin := 65535 // the server's send window for stream 1 and the connection: given back as read
	for done := false; !done; {
		f := rc.Read()
		switch f := f.(type) {
		case *http2.WindowUpdateFrame:
			var w [2]int
			if f.StreamID == 0 {
				w[0] = int(f.Increment)
			} else {
				w[1] = int(f.Increment)
			}
			winc <- w
		case *http2.DataFrame:
			out = append(out, f.Data()...)
			if n := len(f.Data()); n > 0 {
				outWin -= n
				if outWin < 0 {
					t.Fatalf("the server sent %d bytes over its window", -outWin)
				}
				if outWin < 32<<10 {
					rc.WMu.Lock()
					rc.Fr.WriteWindowUpdate(0, uint32(65535-outWin))
					rc.Fr.WriteWindowUpdate(1, uint32(65535-outWin))
					rc.WMu.Unlock()
					outWin = 65535
				}
			}
			done = f.StreamEnded()
		case *http2.RSTStreamFrame, *http2.GoAwayFrame:
			t.Fatalf("%v", f)
		}
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(confTimeout):
		t.Fatal("the writer did not end")
	}
	if !bytes.Equal(out, in) {
		t.Fatalf("echoed %d bytes, not the %d sent", len(out), len(in))
	}
}

// Trailers both ways: the request's come with End(nil), the response's
// after its body.
func TestConfTrailers(t *testing.T) {
	cs, rc := confRaw(t, h2server.Config{})
	rc.Headers(1, false, h2test.Req("POST", "/hang", "trailer", "x-req")...)
	rc.Fr.WriteData(1, false, []byte("abc"))
	rc.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.Block("x-req", "1"), EndStream: true, EndHeaders: true})
	e := cs.h.next(t, 1, "end")
	if e.err != nil || e.trailer.Get("X-Req") != "1" {
		t.Fatalf("End(%v), trailers %v", e.err, e.trailer)
	}
	rc.Fr.WriteRSTStream(1, http2.ErrCodeCancel)
	rc.Headers(3, true, h2test.Req("GET", "/trailers")...)
	r := rc.Response(3)
	if r.Status != "200" || string(r.Body) != "body" || len(r.Trailers["x-t"]) != 1 || r.Trailers["x-t"][0] != "v" {
		t.Fatalf("%+v", r)
	}
}

// RST_STREAM from the client ends the handler's stream (End with the
// code).
func TestConfResetEndsHandler(t *testing.T) {
	cs, rc := confRaw(t, h2server.Config{})
	rc.Headers(1, true, h2test.Req("GET", "/hang")...)
	cs.h.next(t, 1, "serve")
	if e := cs.h.next(t, 1, "end"); e.err != nil { // the request's END_STREAM
		t.Fatalf("End(%v), want End(nil) first", e.err)
	}
	rc.Fr.WriteRSTStream(1, http2.ErrCodeCancel)
	e := cs.h.next(t, 1, "end")
	var se StreamResetError
	if !errors.Is(e.err, ErrStreamReset) || !errors.As(e.err, &se) || se.Code != http2.ErrCodeCancel {
		t.Fatalf("End(%v), want the client's CANCEL", e.err)
	}
	// frames on the reset stream are ignored or refused, the rest served
	rc.Fr.WriteWindowUpdate(1, 10)
	rc.Headers(3, true, h2test.Req("GET", "/next")...)
	if r := rc.Response(3); r.Status != "200" {
		t.Fatal(r.Status)
	}
	cs.h.waitLetGo(t)
}

// A client that ends its side in the middle of a frame with a stream
// open: the handler hears of it as ErrClientGone (the suite's
// EOFMidFrame has the connection's closing, also without a stream).
func TestConfEOFMidFrame(t *testing.T) {
	cs, rc := confRaw(t, h2server.Config{})
	rc.Headers(1, false, h2test.Req("POST", "/hang")...)
	cs.h.next(t, 1, "serve")
	rc.C.Write([]byte{0, 0, 8, byte(http2.FramePing), 0}) // 5 of a PING's 17 bytes
	rc.C.(*net.TCPConn).CloseWrite()
	rc.ExpectClosed()
	if e := cs.h.next(t, 1, "end"); !errors.Is(e.err, ErrClientGone) {
		t.Fatalf("End(%v) for a client gone mid-frame, want ErrClientGone", e.err)
	}
	cs.h.waitLetGo(t)
}

// DATA a handler never consumed is given back to the connection's window
// when the stream is reset: a full window's worth goes through on the
// next stream.
func TestConfResetGivesBackUnconsumed(t *testing.T) {
	cs, rc := confRaw(t, h2server.Config{MaxReceiveBufferPerConnection: 65535})
	rc.Headers(1, false, h2test.Req("POST", "/noread")...)
	rc.Fr.WriteData(1, false, make([]byte, 60000))
	for got := 0; got < 60000; {
		got += len(cs.h.next(t, 1, "data").data)
	}
	rc.Fr.WriteRSTStream(1, http2.ErrCodeCancel)
	rc.Headers(3, false)
	rc.Fr.WriteData(3, true, make([]byte, 60000))
	if r := rc.Response(3); string(r.Body) != "ok" {
		t.Fatalf("%q", r.Body)
	}
	cs.h.waitLetGo(t) // the /noread stream too, at its End
}

// Padding is flow-controlled but given back at once (RFC 9113 6.1): a
// client that respects the windows sends far more padding than they hold
// to a handler that consumes nothing.
func TestConfPaddingGivenBack(t *testing.T) {
	cs, rc := confRaw(t, h2server.Config{MaxReceiveBufferPerStream: 65535, MaxReceiveBufferPerConnection: 65535})
	rc.Headers(1, false, h2test.Req("POST", "/noread")...)
	connWin, streamWin := 65535, 65535
	data, pad := make([]byte, 100), make([]byte, 200)
	const frames = 300 // 90300 flow-controlled bytes, 30000 of them data
	for i := 0; i < frames; {
		if n := len(data) + len(pad) + 1; connWin < n || streamWin < n {
			switch f := rc.Read().(type) {
			case *http2.WindowUpdateFrame:
				if f.StreamID == 0 {
					connWin += int(f.Increment)
				} else {
					streamWin += int(f.Increment)
				}
			case *http2.RSTStreamFrame, *http2.GoAwayFrame:
				t.Fatalf("after %d frames: %v", i, f)
			}
			continue
		}
		rc.Fr.WriteDataPadded(1, false, data, pad)
		connWin -= len(data) + len(pad) + 1
		streamWin -= len(data) + len(pad) + 1
		i++
	}
	rc.Fr.WritePing(false, [8]byte{7})
	for {
		switch f := rc.Read().(type) {
		case *http2.PingFrame:
			got := 0
			for len(cs.h.events) > 0 {
				if e := <-cs.h.events; e.kind == "data" {
					got += len(e.data)
				}
			}
			if got != frames*len(data) {
				t.Fatalf("the handler got %d bytes, want %d", got, frames*len(data))
			}
			return
		case *http2.RSTStreamFrame, *http2.GoAwayFrame:
			t.Fatalf("%v", f)
		}
	}
}
