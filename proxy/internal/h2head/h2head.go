// Package h2head reads HTTP/2 frames with their header blocks decoded, as
// x/net/http2's Framer does with ReadMetaHeaders set, without its
// allocations per block (the MetaHeadersFrame, the closure and the
// variables it captures, the Fields slice grown by append): the proxy's
// HTTP/2 server and client read every request's and response's header
// block through it.
package h2head

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/meridian-mesh/meridian/proxy/internal/fieldname"
)

// Reader is a connection's frame reader. Its ReadFrame is the Framer's
// with ReadMetaHeaders set: HEADERS and the CONTINUATION frames after them
// come back as one *http2.MetaHeadersFrame, decoded and checked as x/net
// does (field names and values, pseudo-fields first, known and not
// repeated, the Framer's MaxHeaderListSize with its truncation, HPACK
// errors a COMPRESSION_ERROR), the errors x/net returns with the same
// codes and messages. Unlike x/net's, the MetaHeadersFrame and its Fields
// are the Reader's own, valid until the next ReadFrame, as other frames
// are with SetReuseFrames.
type Reader struct {
	fr  *http2.Framer
	r   io.Reader // fr's
	dec *hpack.Decoder
	mh  http2.MetaHeadersFrame
	buf []byte // the payload of the frame read (HEADERS, CONTINUATION, PING, WINDOW_UPDATE)

	// The frames the Reader parses itself, reused as the Framer reuses
	// its DataFrame with SetReuseFrames.
	headers http2.HeadersFrame
	ping    http2.PingFrame
	wu      http2.WindowUpdateFrame

	// The block being decoded (the emit function's state).
	invalid                       error
	sawRegular                    bool
	headersRemain, trailersRemain uint32
}

// NewReader reads frames from fr, which reads from rd, decoding header
// blocks with dec (fr's ReadMetaHeaders must be nil). The header list is
// bounded by fr.MaxHeaderListSize (16 MiB when 0, as x/net).
func NewReader(fr *http2.Framer, rd io.Reader, dec *hpack.Decoder) *Reader {
	if fr.ReadMetaHeaders != nil {
		panic("h2head: Framer.ReadMetaHeaders is set")
	}
	r := &Reader{fr: fr, r: rd, dec: dec}
	dec.SetEmitFunc(r.emit) // once: x/net makes a closure per block
	return r
}

// Framer is the Reader's Framer.
func (r *Reader) Framer() *http2.Framer { return r.fr }

func (r *Reader) maxHeaderListSize() uint32 {
	if r.fr.MaxHeaderListSize == 0 {
		return 16 << 20
	}
	return r.fr.MaxHeaderListSize
}

// ReadFrame reads the next frame (see Reader). The Framer reads every
// frame's header (its size and order checks) and the payloads of frames
// other than HEADERS, PING and WINDOW_UPDATE, which the Reader parses
// itself, with x/net's checks and errors, into frames of its own: x/net
// allocates each.
func (r *Reader) ReadFrame() (http2.Frame, error) {
	fh, err := r.fr.ReadFrameHeader()
	if err != nil {
		return nil, err
	}
	switch fh.Type {
	case http2.FrameHeaders:
		p, err := r.payload(fh)
		if err != nil {
			return nil, err
		}
		return r.readHeaders(fh, p)
	case http2.FramePing:
		p, err := r.payload(fh)
		if err != nil {
			return nil, err
		}
		if len(p) != 8 {
			return nil, http2.ConnectionError(http2.ErrCodeFrameSize)
		}
		if fh.StreamID != 0 {
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		r.ping = http2.PingFrame{FrameHeader: fh}
		copy(r.ping.Data[:], p)
		return &r.ping, nil
	case http2.FrameWindowUpdate:
		p, err := r.payload(fh)
		if err != nil {
			return nil, err
		}
		if len(p) != 4 {
			return nil, http2.ConnectionError(http2.ErrCodeFrameSize)
		}
		inc := binary.BigEndian.Uint32(p) & 0x7fffffff
		if inc == 0 { // RFC 9113 6.9
			if fh.StreamID == 0 {
				return nil, http2.ConnectionError(http2.ErrCodeProtocol)
			}
			return nil, http2.StreamError{StreamID: fh.StreamID, Code: http2.ErrCodeProtocol}
		}
		r.wu = http2.WindowUpdateFrame{FrameHeader: fh, Increment: inc}
		return &r.wu, nil
	}
	return r.fr.ReadFrameForHeader(fh)
}

// payload reads fh's payload into r.buf, which keeps at most 16 KiB
// between frames.
func (r *Reader) payload(fh http2.FrameHeader) ([]byte, error) {
	n := int(fh.Length)
	if cap(r.buf) < n || cap(r.buf) > 16<<10 {
		r.buf = make([]byte, max(n, 1<<10))
	}
	p := r.buf[:n]
	if _, err := io.ReadFull(r.r, p); err != nil {
		return nil, err
	}
	return p, nil
}

// readHeaders is x/net's parseHeadersFrame, then readMetaFrame.
func (r *Reader) readHeaders(fh http2.FrameHeader, p []byte) (http2.Frame, error) {
	if fh.StreamID == 0 {
		return nil, http2.ConnectionError(http2.ErrCodeProtocol)
	}
	r.headers = http2.HeadersFrame{FrameHeader: fh}
	hf := &r.headers
	var padLength uint8
	if fh.Flags.Has(http2.FlagHeadersPadded) {
		if len(p) < 1 {
			return nil, io.ErrUnexpectedEOF
		}
		padLength, p = p[0], p[1:]
	}
	if fh.Flags.Has(http2.FlagHeadersPriority) {
		if len(p) < 5 {
			return nil, io.ErrUnexpectedEOF
		}
		v := binary.BigEndian.Uint32(p)
		hf.Priority.StreamDep = v & 0x7fffffff
		hf.Priority.Exclusive = v != hf.Priority.StreamDep // the high bit
		hf.Priority.Weight = p[4]
		p = p[5:]
	}
	if len(p) < int(padLength) {
		return nil, http2.StreamError{StreamID: fh.StreamID, Code: http2.ErrCodeProtocol}
	}
	return r.readMeta(hf, p[:len(p)-int(padLength)], fh.Flags.Has(http2.FlagHeadersEndHeaders))
}

// readMeta is x/net's Framer.readMetaFrame: frag is hf's fragment.
func (r *Reader) readMeta(hf *http2.HeadersFrame, frag []byte, ended bool) (http2.Frame, error) {
	mh := &r.mh
	clear(mh.Fields) // let go of the last block's strings
	mh.HeadersFrame, mh.Fields, mh.Truncated = hf, mh.Fields[:0], false
	r.headersRemain = r.maxHeaderListSize()
	r.trailersRemain = r.headersRemain
	r.sawRegular, r.invalid = false, nil
	r.dec.SetEmitEnabled(true)
	maxStr := int(r.maxHeaderListSize())
	if maxStr < 0 {
		maxStr = 0
	}
	r.dec.SetMaxStringLength(maxStr)

	for {
		// A block far beyond the list size (twice what is left), or any
		// CONTINUATION once it was reached: the connection ends rather
		// than decode what would be discarded (CVE-2023-45288).
		if int64(len(frag)) > 2*int64(r.headersRemain+r.trailersRemain) {
			return mh, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		// Sizes are no longer counted after an invalid field.
		if r.invalid != nil {
			return mh, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if _, err := r.dec.Write(frag); err != nil {
			return mh, http2.ConnectionError(http2.ErrCodeCompression)
		}
		if ended {
			break
		}
		// The Framer checks the order: a CONTINUATION of the stream.
		fh, err := r.fr.ReadFrameHeader()
		if err != nil {
			return nil, err
		}
		if frag, err = r.payload(fh); err != nil {
			return nil, err
		}
		if fh.StreamID == 0 {
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		ended = fh.Flags.Has(http2.FlagContinuationEndHeaders)
	}
	if err := r.dec.Close(); err != nil {
		return mh, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if r.invalid != nil {
		return nil, http2.StreamError{StreamID: mh.StreamID, Code: http2.ErrCodeProtocol, Cause: r.invalid}
	}
	if err := checkPseudos(mh.PseudoFields()); err != nil {
		return nil, http2.StreamError{StreamID: mh.StreamID, Code: http2.ErrCodeProtocol, Cause: err}
	}
	return mh, nil
}

// Header is the http.Header of a block's regular fields (names canonical):
// the values of each new name are a slice of one backing array, capacity
// one (an append reallocates, as net/textproto's reader does), instead of
// an allocation per name.
func Header(fields []hpack.HeaderField) http.Header {
	header := make(http.Header, len(fields))
	strs := make([]string, len(fields))
	for _, hf := range fields {
		k := fieldname.Canonical(hf.Name)
		if vv, ok := header[k]; ok {
			header[k] = append(vv, hf.Value)
			continue
		}
		vv := strs[:1:1]
		strs = strs[1:]
		vv[0] = hf.Value
		header[k] = vv
	}
	return header
}

// emit is x/net's emit function of readMetaFrame.
func (r *Reader) emit(hf hpack.HeaderField) {
	if !httpguts.ValidHeaderFieldValue(hf.Value) {
		r.invalid = headerFieldValueError(hf.Name) // the value may be sensitive
	}
	if strings.HasPrefix(hf.Name, ":") {
		if r.sawRegular {
			r.invalid = errPseudoAfterRegular
		}
	} else {
		r.sawRegular = true
		if !validWireHeaderFieldName(hf.Name) {
			r.invalid = headerFieldNameError(hf.Name)
		}
	}
	if r.invalid != nil {
		r.dec.SetEmitEnabled(false)
		return
	}
	remain := &r.headersRemain
	var size uint32
	if hf.Name == "trailer" {
		// x/net's count: each declared name as a field of its own.
		remain = &r.trailersRemain
		n := strings.Count(hf.Value, ",") + 1
		size = uint32(len(hf.Value)-n+1) + uint32(n)*hpack.HeaderField{}.Size()
	} else {
		size = hf.Size()
	}
	if size > *remain {
		r.dec.SetEmitEnabled(false)
		r.mh.Truncated = true
		r.headersRemain, r.trailersRemain = 0, 0
		return
	}
	*remain -= size
	r.mh.Fields = append(r.mh.Fields, hf)
}

func checkPseudos(pf []hpack.HeaderField) error {
	var isRequest, isResponse bool
	for i, hf := range pf {
		switch hf.Name {
		case ":method", ":path", ":scheme", ":authority", ":protocol":
			isRequest = true
		case ":status":
			isResponse = true
		default:
			return pseudoHeaderError(hf.Name)
		}
		for _, hf2 := range pf[:i] {
			if hf.Name == hf2.Name {
				return duplicatePseudoHeaderError(hf.Name)
			}
		}
	}
	if isRequest && isResponse {
		return errMixPseudoHeaderTypes
	}
	return nil
}

// validWireHeaderFieldName: a token in lower case (RFC 9113 8.2.1).
func validWireHeaderFieldName(v string) bool {
	if len(v) == 0 {
		return false
	}
	for _, r := range v {
		if !httpguts.IsTokenRune(r) || ('A' <= r && r <= 'Z') {
			return false
		}
	}
	return true
}

// x/net's errors (unexported there), with the same messages.
type (
	pseudoHeaderError          string
	duplicatePseudoHeaderError string
	headerFieldNameError       string
	headerFieldValueError      string
)

func (e pseudoHeaderError) Error() string { return fmt.Sprintf("invalid pseudo-header %q", string(e)) }
func (e duplicatePseudoHeaderError) Error() string {
	return fmt.Sprintf("duplicate pseudo-header %q", string(e))
}
func (e headerFieldNameError) Error() string {
	return fmt.Sprintf("invalid header field name %q", string(e))
}
func (e headerFieldValueError) Error() string {
	return fmt.Sprintf("invalid header field value for %q", string(e))
}

var (
	errMixPseudoHeaderTypes = errors.New("mix of request and response pseudo headers")
	errPseudoAfterRegular   = errors.New("pseudo header field after regular")
)
