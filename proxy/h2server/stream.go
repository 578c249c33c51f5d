package h2server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"

	"github.com/meridian-mesh/meridian/proxy/internal/ctxwatch"
	"github.com/meridian-mesh/meridian/proxy/internal/h2head"
)

// stream is one request and its response. Fields below the handler's
// are guarded by c.mu.
type stream struct {
	c         *conn
	id        uint32
	ctx       ctxwatch.Context // the request's: h1client's cancellation goes into its slot
	cancelCtx context.CancelFunc
	req       *http.Request
	rw        *responseWriter
	handler   http.Handler // nil: the server's

	state    streamState
	closeErr error // what writes fail with once closed
	sendWin  int64

	recvAvail, recvUnsent int32
	body                  []byte // received, unread
	bodyOff               int
	bodyErr               error // after body: io.EOF at END_STREAM, or why it ended
	bodyBroken            bool  // closed by the handler (or it returned): discarded
	brokenErr             error
	bodyCond              sync.Cond
	declLen, gotLen       int64
	gotTrailers           bool
	declTrailers          bool
	trailer               http.Header // received trailers, copied to req.Trailer at EOF
	needsContinue         bool
	readTimer, writeTimer *time.Timer

	rwMem responseWriter // rw's memory: one allocation for both
}

// cancel ends the request's context and runs its watch.
func (st *stream) cancel() {
	st.cancelCtx()
	st.ctx.Slot.Fire()
}

// RequestHead is a request's HEADERS block, validated as a server must
// (RFC 9113 8.3, as Go's server): ParseRequestHead's.
type RequestHead struct {
	Method, Scheme, Authority string
	URL                       *url.URL
	RequestURI                string
	Header                    http.Header // Host and Expect: 100-continue taken out, cookies joined
	Trailer                   http.Header // the declared trailers' names, or nil
	DeclLen                   int64       // content-length, -1 if none
	NeedsContinue             bool        // Expect: 100-continue
	// Invalid, when set, is answered 400 (connection-specific fields, a
	// TE other than trailers): the stream is well-formed but refused, as
	// Go's server refuses it.
	Invalid error
}

// ParseRequestHead validates a request's header block f; false says it is
// malformed: the stream's RST_STREAM PROTOCOL_ERROR (RFC 9113 8.1.1).
func ParseRequestHead(f *http2.MetaHeadersFrame) (RequestHead, bool) {
	var method, scheme, authority, path, protocol string
	for _, pf := range f.PseudoFields() {
		switch pf.Name {
		case ":method":
			method = pf.Value
		case ":scheme":
			scheme = pf.Value
		case ":authority":
			authority = pf.Value
		case ":path":
			path = pf.Value
		case ":protocol":
			protocol = pf.Value
		}
	}
	if protocol != "" {
		return RequestHead{}, false // extended CONNECT (RFC 8441) is not offered
	}
	isConnect := method == "CONNECT"
	if isConnect {
		if path != "" || scheme != "" || authority == "" {
			return RequestHead{}, false
		}
	} else if method == "" || path == "" || (scheme != "http" && scheme != "https") {
		return RequestHead{}, false
	}
	header := h2head.Header(f.RegularFields())
	needsContinue := httpguts.HeaderValuesContainsToken(header["Expect"], "100-continue")
	if needsContinue {
		delete(header, "Expect")
	}
	if cookies := header["Cookie"]; len(cookies) > 1 {
		header["Cookie"] = []string{strings.Join(cookies, "; ")} // RFC 9113 8.2.3
	}
	var trailer http.Header
	for _, v := range header["Trailer"] {
		for _, key := range strings.Split(v, ",") {
			key = http.CanonicalHeaderKey(textproto.TrimString(key))
			switch key {
			case "Transfer-Encoding", "Trailer", "Content-Length":
			default:
				if trailer == nil {
					trailer = http.Header{}
				}
				trailer[key] = nil
			}
		}
	}
	delete(header, "Trailer")
	if host := header["Host"]; len(host) == 1 {
		if authority == "" {
			authority = host[0]
		} else if host[0] != authority {
			return RequestHead{}, false // RFC 9113 8.3.1
		}
		delete(header, "Host")
	} else if len(host) > 1 {
		return RequestHead{}, false
	}
	if strings.IndexByte(authority, '@') >= 0 || (authority != "" && !httpguts.ValidHostHeader(authority)) {
		return RequestHead{}, false
	}
	var u *url.URL
	var requestURI string
	if isConnect {
		u, requestURI = &url.URL{Host: authority}, authority
	} else {
		if path[0] != '/' && path != "*" {
			return RequestHead{}, false
		}
		var err error
		if u, err = url.ParseRequestURI(path); err != nil {
			return RequestHead{}, false
		}
		requestURI = path
	}
	declLen := int64(-1)
	if vv := header["Content-Length"]; len(vv) > 0 {
		// RFC 9110 8.6: one value (repeated identical ones allowed).
		n, err := strconv.ParseUint(vv[0], 10, 63)
		for _, v := range vv[1:] {
			if v != vv[0] {
				err = strconv.ErrSyntax
			}
		}
		if err != nil {
			return RequestHead{}, false
		}
		declLen = int64(n)
		if f.StreamEnded() && n != 0 {
			return RequestHead{}, false // RFC 9113 8.1.1: content-length without the DATA
		}
	}
	return RequestHead{
		Method: method, Scheme: scheme, Authority: authority, URL: u, RequestURI: requestURI,
		Header: header, Trailer: trailer, DeclLen: declLen, NeedsContinue: needsContinue,
		Invalid: checkRequestHeaders(header),
	}, true
}

// newStream (c.mu held) validates a request's HEADERS and makes its
// stream; the error is the stream's.
func (c *conn) newStream(f *http2.MetaHeadersFrame) (*stream, error) {
	id := f.StreamID
	h, ok := ParseRequestHead(f)
	if !ok {
		return nil, http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
	}
	st := &stream{c: c, id: id, declLen: h.DeclLen, needsContinue: h.NeedsContinue, declTrailers: h.Trailer != nil}
	st.bodyCond.L = &c.mu
	st.recvAvail = int32(c.cfg.MaxReceiveBufferPerStream)
	ctx, cancel := context.WithCancel(c.baseCtx)
	st.ctx.Reset(ctx)
	st.cancelCtx = cancel
	req := &http.Request{
		Method:     h.Method,
		URL:        h.URL,
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
		Header:     h.Header,
		Host:       h.Authority,
		RemoteAddr: c.remote,
		RequestURI: h.RequestURI,
		Trailer:    h.Trailer,
	}
	if h.Scheme == "https" {
		req.TLS = c.tls
	}
	if f.StreamEnded() {
		st.state, st.bodyErr = stateHalfClosedRemote, io.EOF
		req.Body = http.NoBody
	} else {
		req.Body = (*requestBody)(st)
		req.ContentLength = h.DeclLen
	}
	st.req = req.WithContext(&st.ctx)
	st.rwMem = responseWriter{c: c, st: st, req: st.req, isHead: h.Method == "HEAD"}
	st.rw = &st.rwMem
	switch {
	case f.Truncated:
		st.handler = http.HandlerFunc(headerListTooLong)
	case h.Invalid != nil:
		err := h.Invalid
		st.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, err.Error(), http.StatusBadRequest)
		})
	}
	st.sendWin = int64(c.peerInitialWin)
	return st, nil
}

var connHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade"}

// checkRequestHeaders refuses connection-specific fields (RFC 9113
// 8.2.2); Go's server answers them with 400.
func checkRequestHeaders(h http.Header) error {
	for _, k := range connHeaders {
		if _, ok := h[k]; ok {
			return fmt.Errorf("request header %q is not valid in HTTP/2", k)
		}
	}
	if te := h["Te"]; len(te) > 0 && (len(te) > 1 || (te[0] != "trailers" && te[0] != "")) {
		return fmt.Errorf(`request header "TE" may only be "trailers" in HTTP/2`)
	}
	return nil
}

func headerListTooLong(w http.ResponseWriter, r *http.Request) {
	const statusRequestHeaderFieldsTooLarge = 431 // RFC 6585
	w.WriteHeader(statusRequestHeaderFieldsTooLarge)
	io.WriteString(w, "<h1>HTTP Error 431</h1><p>Request Header Field(s) Too Large</p>")
}

// requestBody is a stream's Request.Body.
type requestBody stream

// Read returns the bytes received; with the last of them, io.EOF as soon
// as the client's END_STREAM is in (so that a Go transport relaying it
// sends END_STREAM on its last DATA frame, not in an empty one after).
func (b *requestBody) Read(p []byte) (int, error) {
	st := (*stream)(b)
	c := st.c
	c.mu.Lock()
	if st.needsContinue {
		st.needsContinue = false
		c.mu.Unlock()
		st.rw.write1xx(http.StatusContinue, nil)
		c.mu.Lock()
	}
	for !st.bodyBroken && st.bodyOff == len(st.body) && st.bodyErr == nil {
		st.bodyCond.Wait()
	}
	if st.bodyBroken {
		c.mu.Unlock()
		return 0, st.brokenErr
	}
	n := copy(p, st.body[st.bodyOff:])
	st.bodyOff += n
	if st.bodyOff == len(st.body) {
		st.body, st.bodyOff = st.body[:0], 0
	}
	var err error
	if st.bodyOff == len(st.body) && st.bodyErr != nil {
		err = st.bodyErr
		if err == io.EOF {
			for k, vv := range st.trailer {
				if _, ok := st.req.Trailer[k]; ok {
					st.req.Trailer[k] = vv // declared ones only, as Go's server
				}
			}
		}
	}
	cw, sw := c.creditLocked(st, int32(n), int32(n))
	c.mu.Unlock()
	if werr := c.sendWindowUpdates(st.id, cw, sw); werr != nil && err == nil {
		err = werr
	}
	return n, err
}

// Buffered reports the bytes a Read returns without waiting, and whether
// the client's END_STREAM is in with them (h2client.Buffered): the proxy's
// HTTP/2 client then sends a body that is whole with its HEADERS, in one
// write.
func (b *requestBody) Buffered() (int, bool) {
	st := (*stream)(b)
	st.c.mu.Lock()
	defer st.c.mu.Unlock()
	if st.bodyBroken {
		return 0, false
	}
	return len(st.body) - st.bodyOff, st.bodyErr == io.EOF
}

// Close discards what is unread, and gives the connection's window back.
func (b *requestBody) Close() error {
	st := (*stream)(b)
	st.c.discardBody(st, errClosedBody)
	return nil
}

func (c *conn) discardBody(st *stream, err error) {
	c.mu.Lock()
	cw := c.discardBodyLocked(st, err)
	c.mu.Unlock()
	c.sendWindowUpdates(0, cw, 0)
}

// discardBodyLocked (c.mu held) ends st's body reads with err and returns
// the connection-window credit to send for the bytes dropped.
func (c *conn) discardBodyLocked(st *stream, err error) int32 {
	if st.bodyBroken {
		return 0
	}
	st.bodyBroken, st.brokenErr = true, err
	unread := int32(len(st.body) - st.bodyOff)
	st.body, st.bodyOff = nil, 0
	st.bodyCond.Broadcast()
	cw, _ := c.creditLocked(nil, unread, 0)
	return cw
}

func (c *conn) readTimeoutLocked(st *stream) {
	if st.bodyErr == nil {
		st.bodyErr = fmt.Errorf("%w", os.ErrDeadlineExceeded)
		st.bodyCond.Broadcast()
	}
}

// takeSend takes up to want bytes of send window for st, waiting for
// some unless nonblocking.
func (c *conn) takeSend(st *stream, want int, block bool) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if st.state == stateClosed {
			return 0, st.closeErr
		}
		if c.closed {
			return 0, errClientGone
		}
		n := min(int64(want), c.sendWin, st.sendWin)
		if n > 0 {
			c.sendWin -= n
			st.sendWin -= n
			return int(n), nil
		}
		if !block {
			return 0, nil
		}
		c.flowCond.Wait()
	}
}

var dateCache atomic.Pointer[struct {
	sec int64
	s   string
}]

// httpDate is the Date header, formatted once a second.
func httpDate() string {
	now := time.Now()
	if d := dateCache.Load(); d != nil && d.sec == now.Unix() {
		return d.s
	}
	s := now.UTC().Format(http.TimeFormat)
	dateCache.Store(&struct {
		sec int64
		s   string
	}{now.Unix(), s})
	return s
}

// Date is the Date header a response gets when its handler set none,
// formatted once a second.
func Date() string { return httpDate() }
