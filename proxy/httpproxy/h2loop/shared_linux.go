package h2loop

import (
	"io"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/meridian-mesh/meridian/proxy/internal/h2head"
)

// What the server's and the client's connections share: frames read from
// the Transport's buffer as they come whole, receive windows given back in
// batches, header blocks written as HEADERS and CONTINUATION frames.

// frameIn reads a connection's frames from its Transport's buffer once
// each is whole. The loop's buffer is 16 KiB and a frame may be larger:
// the start of one not whole yet is copied out into acc until the rest is
// in.
type frameIn struct {
	ec           Transport
	acc          []byte // the start of a frame (or header block) not whole in ec's buffer
	rd           sliceReader
	fr           *http2.Framer
	hr           *h2head.Reader
	maxReadFrame int
}

// initReader sets the frame reader up: frames up to maxFrame, header
// lists up to maxList, decoded with a table of decoderTable bytes.
func (in *frameIn) initReader(maxFrame int, maxList uint32, decoderTable uint32) {
	in.maxReadFrame = maxFrame
	in.fr = http2.NewFramer(io.Discard, &in.rd)
	in.fr.MaxHeaderListSize = maxList
	in.fr.SetMaxReadFrameSize(uint32(maxFrame))
	in.fr.SetReuseFrames()
	in.hr = h2head.NewReader(in.fr, &in.rd, hpack.NewDecoder(decoderTable, nil))
}

// sliceReader reads one frame (or header block) found whole.
type sliceReader struct{ b []byte }

func (r *sliceReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.ErrUnexpectedEOF // a frame is only read whole: never
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// input is what is to be processed: the accumulated start of a frame and
// what came after it, or ec's buffer.
func (in *frameIn) input() []byte {
	if len(in.acc) > 0 {
		if b := in.ec.Buffered(); len(b) > 0 {
			in.acc = append(in.acc, b...)
			in.ec.Consume(len(b))
		}
		return in.acc
	}
	return in.ec.Buffered()
}

func (in *frameIn) consume(n int) {
	if len(in.acc) > 0 {
		m := copy(in.acc, in.acc[n:])
		in.acc = in.acc[:m]
		if m == 0 && cap(in.acc) > 64<<10 {
			in.acc = nil
		}
		return
	}
	in.ec.Consume(n)
}

// keep moves the start of a frame out of ec's buffer, which might not
// hold it whole (16 KiB; a frame may be larger), into acc; true if the
// Transport has more bytes already (a TLS layer decrypts a buffer's worth
// at a time, and what it read beyond that comes with no readiness).
func (in *frameIn) keep(b []byte) bool {
	if len(in.acc) == 0 && len(b) > 0 {
		in.acc = append(in.acc, b...)
		in.ec.Consume(len(b))
	}
	return len(in.ec.Buffered()) > 0
}

// frame reads the frame at the start of b (input's) if it is whole, and
// consumes it: n is 0 if it is not whole yet (keep it, and wait), err the
// Framer's or h2head's (a stream's or the connection's error), or a
// header block going on far too long.
func (in *frameIn) frame(b []byte) (f http2.Frame, n int, err error) {
	n, err = in.whole(b)
	if err != nil || n == 0 {
		return nil, n, err
	}
	in.rd.b = b[:n]
	f, err = in.hr.ReadFrame() // copies what it keeps: b may go
	in.rd.b = nil
	in.consume(n)
	return f, n, err
}

// whole is the length of the frame at b's start if it is all there (0 if
// not yet): for a HEADERS frame without END_HEADERS, through the frame that
// ends its block (or breaks its sequence: the Framer says how).
func (in *frameIn) whole(b []byte) (int, error) {
	n := 0
	for {
		if len(b) < n+9 {
			return 0, nil
		}
		h := b[n : n+9]
		length := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
		if length > in.maxReadFrame {
			return n + 9, nil // the Framer reads the header and refuses it
		}
		typ, flags := http2.FrameType(h[3]), http2.Flags(h[4])
		first := n == 0
		n += 9 + length
		if n > in.blockBound() {
			// A header block going on far past the list size
			// (CVE-2023-45288): h2head would refuse what it decoded.
			return 0, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		switch {
		case first && typ != http2.FrameHeaders:
		case first && flags.Has(http2.FlagHeadersEndHeaders):
		case !first && (typ != http2.FrameContinuation || flags.Has(http2.FlagContinuationEndHeaders)):
		default:
			continue
		}
		if len(b) < n {
			return 0, nil
		}
		return n, nil
	}
}

func (in *frameIn) blockBound() int {
	return 4*int(in.fr.MaxHeaderListSize) + in.maxReadFrame + 9
}

// inflowAdd returns consumed bytes to a receive window, and how much to
// announce in a WINDOW_UPDATE (0: not yet, batched as Go's server and
// transport do).
func inflowAdd(avail, unsent *int32, n int32) int32 {
	u := *unsent + n
	if u < 4<<10 && u < *avail {
		*unsent = u
		return 0
	}
	*avail += u
	*unsent = 0
	return u
}

// writeHeaderBlock writes block as a HEADERS frame and the CONTINUATION
// frames it needs beyond maxFrame.
func writeHeaderBlock(wfr *http2.Framer, id uint32, block []byte, maxFrame uint32, end bool) {
	first := true
	for first || len(block) > 0 {
		frag := block[:min(len(block), int(maxFrame))]
		block = block[len(frag):]
		if first {
			wfr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: frag, EndStream: end, EndHeaders: len(block) == 0})
			first = false
		} else {
			wfr.WriteContinuation(id, len(block) == 0, frag)
		}
	}
}
