package h2server

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// ResponseHead is a response's header as its handler builds it, with the
// rules Go's HTTP/2 server applies to it (README.md, "Responses"): the
// part of an http.ResponseWriter that does not write. The server's
// ResponseWriter and proxy/httpproxy/h2loop's Bridge embed it, so that a
// handler sees the same answer from both.
type ResponseHead struct {
	handlerHeader http.Header
	snapHeader    http.Header // the header at WriteHeader (snap's map)
	snap          *headerSnap
	status        int
	wroteHeader   bool
	done          bool      // the handler returned
	trailers      []string  // declared trailer names (canonical)
	trailersBuf   [2]string // trailers' first array: gRPC declares grpc-status and grpc-message
	declLen       int64
	wrote         int64
}

// Header is http.ResponseWriter's.
func (w *ResponseHead) Header() http.Header {
	if w.handlerHeader == nil {
		w.handlerHeader = make(http.Header)
	}
	return w.handlerHeader
}

// Status is the final status WriteHeader took (0 before).
func (w *ResponseHead) Status() int { return w.status }

// WroteHeader reports whether the final status is set.
func (w *ResponseHead) WroteHeader() bool { return w.wroteHeader }

// Done reports whether the handler returned.
func (w *ResponseHead) Done() bool { return w.done }

// SetDone records the handler's return: writes fail from now on.
func (w *ResponseHead) SetDone() { w.done = true }

// BodyAllowedForStatus reports whether a response with status may carry
// a body (RFC 9110 6.4.1).
func BodyAllowedForStatus(status int) bool {
	switch {
	case status >= 100 && status <= 199, status == 204, status == 304:
		return false
	}
	return true
}

// SetStatus is http.ResponseWriter's WriteHeader without the writing: for
// a 1xx it returns the header the informational response carries (the
// header so far, RFC 8297, without Content-Length and Transfer-Encoding)
// and true, for the caller to send; a final status is taken, with the
// header as it is now. Once done or after a final status it does
// nothing; an invalid code panics, as Go's server.
func (w *ResponseHead) SetStatus(code int) (informational http.Header, ok bool) {
	if w.done || w.wroteHeader {
		return nil, false
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code <= 199 {
		h := w.handlerHeader
		_, cl := h["Content-Length"]
		_, te := h["Transfer-Encoding"]
		if cl || te {
			h = h.Clone()
			h.Del("Content-Length")
			h.Del("Transfer-Encoding")
		}
		return h, true
	}
	w.wroteHeader = true
	w.status = code
	w.declLen = -1
	if len(w.handlerHeader) > 0 {
		w.snap = snapshot(w.handlerHeader)
		w.snapHeader = w.snap.h
		if cl := w.snapHeader.Get("Content-Length"); cl != "" {
			if n, err := strconv.ParseUint(cl, 10, 63); err == nil {
				w.declLen = int64(n)
			}
		}
	}
	return nil, false
}

// CheckWrite counts n more body bytes from the handler, or says why they
// cannot go: the handler returned, the status has no body, or they pass
// the declared Content-Length. The final status must be set.
func (w *ResponseHead) CheckWrite(n int) error {
	if w.done {
		return errHandlerFinished
	}
	if !BodyAllowedForStatus(w.status) {
		return http.ErrBodyNotAllowed
	}
	if w.declLen >= 0 && w.wrote+int64(n) > w.declLen {
		w.wrote += int64(n)
		return errBodyOverDeclared
	}
	w.wrote += int64(n)
	return nil
}

// PromoteTrailers declares, at the handler's end, the trailers it named
// with http.TrailerPrefix, under their own names.
func (w *ResponseHead) PromoteTrailers() {
	for k, vv := range w.handlerHeader {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			tk := http.CanonicalHeaderKey(strings.TrimPrefix(k, http.TrailerPrefix))
			if w.declareTrailer(tk) {
				w.handlerHeader[tk] = vv
			}
		}
	}
}

func (w *ResponseHead) declareTrailer(k string) bool {
	if !httpguts.ValidTrailerHeader(k) {
		return false // RFC 9110 6.5.1
	}
	if !slices.Contains(w.trailers, k) {
		if w.trailers == nil {
			w.trailers = w.trailersBuf[:0]
		}
		w.trailers = append(w.trailers, k)
	}
	return true
}

// HasTrailers reports whether a declared trailer has a value.
func (w *ResponseHead) HasTrailers() bool {
	for _, k := range w.trailers {
		if len(w.handlerHeader[k]) > 0 {
			return true
		}
	}
	return false
}

// Trailers are the declared trailers with values, as a header (nil
// without any).
func (w *ResponseHead) Trailers() http.Header {
	var t http.Header
	for _, k := range w.trailers {
		if vv := w.handlerHeader[k]; len(vv) > 0 {
			if t == nil {
				t = http.Header{}
			}
			t[k] = vv
		}
	}
	return t
}

// FinalHead is what a final response's HEADERS carry beside the
// handler's header: the fields the server adds, and whether the
// connection is to be drained after it.
type FinalHead struct {
	Header        http.Header // the handler's at WriteHeader, without Content-Length (nil: none)
	ContentLength string      // "": none
	ContentType   string      // sniffed; "": none added
	Date          string      // "": the handler set one
	Close         bool        // the handler said "Connection: close": drain the connection
}

// Final makes the final HEADERS from the header at WriteHeader, with
// first the body's first bytes (for sniffing a Content-Type), total the
// body's length so far and end whether that is all of it; it declares
// the trailers the Trailer field names. Called once, before the HEADERS
// are encoded; Release once they are.
func (w *ResponseHead) Final(first []byte, total int, end, isHead bool) FinalHead {
	h := w.snapHeader
	f := FinalHead{Header: h}
	allowed := BodyAllowedForStatus(w.status)
	if v := h.Get("Content-Length"); v != "" {
		delete(h, "Content-Length")
		// None on a response without a body (204, 304): RFC 9113
		// allows it, Go's client fails the body that never comes, and
		// the proxy's HTTP/1.1 answers send none either.
		if _, err := strconv.ParseUint(v, 10, 63); err == nil && allowed {
			f.ContentLength = v
		}
	}
	if f.ContentLength == "" && end && allowed && (total > 0 || !isHead) {
		f.ContentLength = strconv.Itoa(total)
	}
	if _, ok := h["Content-Type"]; !ok && h.Get("Content-Encoding") == "" && allowed && total > 0 {
		f.ContentType = http.DetectContentType(first)
	}
	if _, ok := h["Date"]; !ok {
		f.Date = httpDate()
	}
	for _, v := range h["Trailer"] {
		for _, k := range strings.Split(v, ",") {
			if k = strings.TrimSpace(k); k != "" {
				w.declareTrailer(http.CanonicalHeaderKey(k))
			}
		}
	}
	if v, ok := h["Connection"]; ok && len(v) > 0 && strings.EqualFold(v[0], "close") {
		f.Close = true // as Go's server
	}
	return f
}

// DeclaredTrailers reports whether any trailer is declared.
func (w *ResponseHead) DeclaredTrailers() bool { return len(w.trailers) > 0 }

// Release gives the header at WriteHeader back once its HEADERS are
// encoded (Final's Header is not to be used after).
func (w *ResponseHead) Release() {
	if w.snap != nil {
		w.snap.release()
		w.snap, w.snapHeader = nil, nil
	}
}
