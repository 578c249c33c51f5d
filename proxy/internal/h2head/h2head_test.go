package h2head

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// frames builds a connection's frames from fuzz input: block1 is split
// into HEADERS and up to two CONTINUATION frames at a and b (a PING is
// put between them when ping is set), block2 follows whole on stream 3,
// then a PING.
func frames(block1, block2 []byte, a, b uint16, flags uint8) []byte {
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	fr.AllowIllegalWrites = true
	i, j := min(int(a), len(block1)), min(int(b), len(block1))
	if j < i {
		i, j = j, i
	}
	parts := [][]byte{block1[:i], block1[i:j], block1[j:]}
	if flags&1 == 0 { // one frame
		parts = [][]byte{block1}
	}
	if flags&64 != 0 { // PING and WINDOW_UPDATE, maybe malformed
		fr.WriteRawFrame(http2.FramePing, http2.Flags(a), uint32(b%2), make([]byte, a%10))
		inc := []byte{byte(b >> 8), 0, 0, byte(b)}
		fr.WriteRawFrame(http2.FrameWindowUpdate, 0, uint32(a%3), inc[:4-int(b>>8)%2])
	}
	for k, p := range parts {
		last := k == len(parts)-1
		if k == 0 {
			param := http2.HeadersFrameParam{StreamID: 1, BlockFragment: p, EndHeaders: last, EndStream: flags&2 != 0}
			if flags&16 != 0 {
				param.PadLength = uint8(a)
			}
			if flags&32 != 0 {
				param.Priority = http2.PriorityParam{StreamDep: uint32(b), Exclusive: b%2 == 0, Weight: uint8(a)}
			}
			if flags&128 != 0 { // malformed: padding or priority beyond the payload
				var raw []byte
				fl := http2.FlagHeadersPadded
				if b%2 == 0 {
					fl = http2.FlagHeadersPriority
				}
				if last {
					fl |= http2.FlagHeadersEndHeaders
				}
				raw = append(raw, byte(a))
				raw = append(raw, p[:min(len(p), int(b%4))]...)
				fr.WriteRawFrame(http2.FrameHeaders, fl, uint32(a%2), raw)
			} else {
				fr.WriteHeaders(param)
			}
		} else {
			fr.WriteContinuation(1, last, p)
		}
		if k == 0 && flags&4 != 0 {
			fr.WritePing(false, [8]byte{1})
		}
	}
	if flags&8 != 0 { // a CONTINUATION on its own
		fr.WriteContinuation(3, true, nil)
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block2, EndHeaders: true})
	fr.WritePing(false, [8]byte{2})
	return buf.Bytes()
}

// describe is what a test compares of a frame read or an error.
func describe(f http2.Frame, err error) string {
	if err != nil {
		var se http2.StreamError
		if errors.As(err, &se) {
			return fmt.Sprintf("stream error %d %v %v", se.StreamID, se.Code, se.Cause)
		}
		return fmt.Sprintf("error %T %v", err, err)
	}
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return fmt.Sprintf("headers %d end=%v prio=%v %+v trunc=%v fields=%q", f.StreamID, f.StreamEnded(), f.HasPriority(), f.Priority, f.Truncated, f.Fields)
	case *http2.PingFrame:
		return fmt.Sprintf("ping %v %v", f.Header(), f.Data)
	case *http2.WindowUpdateFrame:
		return fmt.Sprintf("window update %v %d", f.Header(), f.Increment)
	}
	return fmt.Sprintf("%T %v", f, f.Header())
}

func compare(t *testing.T, wire []byte, maxList uint32) {
	t.Helper()
	want := http2.NewFramer(nil, bytes.NewReader(wire))
	want.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	want.MaxHeaderListSize = maxList
	rd := bytes.NewReader(wire)
	gotFr := http2.NewFramer(nil, rd)
	gotFr.MaxHeaderListSize = maxList
	got := NewReader(gotFr, rd, hpack.NewDecoder(4096, nil))
	for n := 0; ; n++ {
		wf, werr := want.ReadFrame()
		gf, gerr := got.ReadFrame()
		w, g := describe(wf, werr), describe(gf, gerr)
		if w != g {
			t.Fatalf("frame %d:\n x/net: %s\n h2head: %s", n, w, g)
		}
		if werr != nil {
			if _, ok := werr.(http2.StreamError); !ok {
				return
			}
		}
	}
}

func enc(fields ...string) []byte {
	var buf bytes.Buffer
	e := hpack.NewEncoder(&buf)
	for i := 0; i+1 < len(fields); i += 2 {
		e.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1], Sensitive: strings.HasSuffix(fields[i], "-s")})
	}
	return buf.Bytes()
}

var seeds = [][]byte{
	enc(":method", "GET", ":scheme", "http", ":path", "/", ":authority", "a.example", "user-agent", "x", "te", "trailers", "content-type", "application/grpc"),
	enc(":status", "200", "content-type", "application/grpc", "grpc-encoding", "gzip"),
	enc("grpc-status", "0", "grpc-message", ""),
	enc("Upper", "x"),
	enc("x", "bad\x00value"),
	enc("x", "y", ":path", "/"),
	enc(":method", "GET", ":method", "POST"),
	enc(":unknown", "x"),
	enc(":status", "200", ":path", "/"),
	enc("trailer", "a, b, c", "trailer", strings.Repeat("x,", 40)),
	enc("big", strings.Repeat("v", 300), "next", "x"),
	enc("secret-s", "v", "", "empty name"),
	{0x3f, 0xe1, 0x1f},       // table size update above the limit
	{0x82, 0x86, 0x84, 0xff}, // truncated integer
	{0x40, 0x81},             // truncated literal
}

func TestSeeds(t *testing.T) {
	for _, b1 := range seeds {
		for _, b2 := range seeds {
			for flags := range 256 {
				for _, maxList := range []uint32{0, 40, 100, 200, 1000} {
					compare(t, frames(b1, b2, 3, 9, uint8(flags)), maxList)
					compare(t, frames(b1, b2, 0, 256, uint8(flags)), maxList)
				}
			}
		}
	}
}

func FuzzReader(f *testing.F) {
	for i, s := range seeds {
		f.Add(s, seeds[(i+1)%len(seeds)], uint16(2), uint16(len(s)/2), uint8(i), uint16(100*i))
	}
	f.Fuzz(func(t *testing.T, block1, block2 []byte, a, b uint16, flags uint8, maxList uint16) {
		compare(t, frames(block1, block2, a, b, flags), uint32(maxList))
	})
}

// TestNoAllocs: a block of fields in the static table or in the dynamic
// table costs no allocation once the Reader's slice has grown.
func TestNoAllocs(t *testing.T) {
	var buf bytes.Buffer
	e := hpack.NewEncoder(&buf)
	var wire bytes.Buffer
	fr := http2.NewFramer(&wire, nil)
	for range 200 {
		buf.Reset()
		for _, f := range []hpack.HeaderField{{Name: ":status", Value: "200"}, {Name: "content-type", Value: "application/grpc"}, {Name: "grpc-status", Value: "0"}} {
			e.WriteField(f)
		}
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: buf.Bytes(), EndHeaders: true})
	}
	rd := bytes.NewReader(wire.Bytes())
	r := NewReader(http2.NewFramer(nil, rd), rd, hpack.NewDecoder(4096, nil))
	r.ReadFrame()
	r.ReadFrame()
	allocs := testing.AllocsPerRun(100, func() {
		f, err := r.ReadFrame()
		if err != nil || len(f.(*http2.MetaHeadersFrame).Fields) != 3 {
			t.Fatal(f, err)
		}
	})
	if allocs > 0 {
		t.Errorf("%v allocations per block", allocs)
	}
}

func TestHeader(t *testing.T) {
	fields := []hpack.HeaderField{{Name: "grpc-status", Value: "0"}, {Name: "x-a", Value: "1"}, {Name: "x-a", Value: "2"}, {Name: "te", Value: "trailers"}, {Name: "grpc-message", Value: ""}}
	h := Header(fields)
	want := http.Header{}
	for _, hf := range fields {
		want.Add(hf.Name, hf.Value)
	}
	if !reflect.DeepEqual(h, want) {
		t.Fatalf("Header = %v, want %v", h, want)
	}
	// A value appended to one name must not show in another's.
	h["Te"] = append(h["Te"], "x")
	h["Grpc-Status"] = append(h["Grpc-Status"], "y")
	if h.Get("X-A") != "1" || len(h["Grpc-Message"]) != 1 || h["Grpc-Message"][0] != "" || h["Te"][0] != "trailers" {
		t.Fatalf("values share storage: %v", h)
	}
}
