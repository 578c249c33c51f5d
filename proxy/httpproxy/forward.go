package httpproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strings"
	"sync"

	"golang.org/x/net/http/httpguts"

	"github.com/meridian-mesh/meridian/proxy/httpproxy/h2client"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/internal/h1head"
)

// forward is httputil.ReverseProxy.ServeHTTP for the Forwarder's requests
// that are neither protocol upgrades nor wait for 100 Continue (those go
// through ReverseProxy itself): the same steps in the same order, with the
// Forwarder's settings (Rewrite, FlushInterval -1, no Director, no
// ModifyResponse) built in. What it leaves out is ReverseProxy's cost per
// request, for a forwarder that only ever uses one configuration: the
// Request copy that puts the 1xx trace in its context, the ProxyRequest,
// the trace's lock and flag as allocations of their own, the
// maxLatencyWriter (and its ResponseController and method value) with the
// timer it starts for every response to flush the headers from another
// goroutine, and the Content-Type parse that looks for server-sent events
// (every response is flushed at once anyway). The headers are flushed here
// before the body is copied, through flushGate as before, instead of from
// that timer's goroutine.
//
// TestForwardMatchesReverseProxy checks the two paths answer alike.
func (f *Forwarder) forward(w *flushGate, r *http.Request) {
	o := &outgoing{}
	t := &o.inf
	t.w = w
	t.trace.Got1xxResponse = t.got1xx
	outreq := o.clone(r, o.withTrace(r.Context()))
	if r.ContentLength == 0 {
		outreq.Body = nil // Go issue 16036: nil Body for http.Transport retries
	}
	if outreq.Body != nil {
		// The transport may close the body it was given when it fails:
		// that must not close the server's (ReverseProxy does the same).
		o.body = noopCloseReader{outreq.Body}
		outreq.Body = &o.body
		defer outreq.Body.Close()
	}
	if outreq.Header == nil {
		outreq.Header = make(http.Header)
	}
	outreq.Close = false
	removeHopByHopHeaders(outreq.Header)
	if httpguts.HeaderValuesContainsToken(r.Header["Te"], "trailers") {
		outreq.Header["Te"] = []string{"trailers"}
	}
	// ReverseProxy's Rewrite: the client's forwarding headers go, then
	// the rewrite keeps them; unparsable query parameters are removed.
	delete(outreq.Header, "Forwarded")
	delete(outreq.Header, "X-Forwarded-For")
	delete(outreq.Header, "X-Forwarded-Host")
	delete(outreq.Header, "X-Forwarded-Proto")
	outreq.URL.RawQuery = cleanQueryParams(outreq.URL.RawQuery)
	rewrite(r, outreq)
	if _, ok := outreq.Header["User-Agent"]; !ok {
		outreq.Header.Set("User-Agent", "") // not Go's default
	}

	res, err := roundTripper{f}.RoundTrip(outreq)
	t.mu.Lock()
	t.w = nil // the round trip has returned
	t.mu.Unlock()
	if err != nil {
		f.proxyError(w, outreq, err)
		return
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		// Not asked for: ReverseProxy's answers (the h1client's body of a
		// 101 is not writable, and HTTP/2 has no 101).
		up := upgradeType(res.Header)
		switch {
		case !isPrint(up):
			err = fmt.Errorf("backend tried to switch to invalid protocol %q", up)
		case up != "":
			err = fmt.Errorf("backend tried to switch protocol %q when %q was requested", up, "")
		default:
			err = errors.New("internal error: 101 switching protocols response with non-writable body")
		}
		f.proxyError(w, outreq, err)
		return
	}
	removeHopByHopHeaders(res.Header)
	moveHeader(w.Header(), res.Header)
	// The Trailer header is not among a transport's response headers:
	// announce the trailers it saw.
	announced := len(res.Trailer)
	if announced > 0 {
		keys := make([]string, 0, len(res.Trailer))
		for k := range res.Trailer {
			keys = append(keys, k)
		}
		w.Header().Add("Trailer", strings.Join(keys, ", "))
	}
	w.WriteHeader(res.StatusCode)
	if err := f.copyResponse(w, res.Body); err != nil {
		defer res.Body.Close()
		if r.Context().Value(http.ServerContextKey) == nil {
			// Not a server's request (a mirrored copy): no server
			// goroutine to recover the panic (ReverseProxy's rule).
			f.log.Debug("suppressing panic for copyResponse error", "err", err)
			return
		}
		// The response has begun: all that is left is to abort it.
		panic(http.ErrAbortHandler)
	}
	res.Body.Close() // now, to fill res.Trailer
	if len(res.Trailer) > 0 && r.ProtoMajor == 1 {
		// Chunked, so that net/http does not compute a Content-Length
		// (an HTTP/2 response carries trailers either way).
		w.FlushError()
	}
	if len(res.Trailer) == announced {
		moveHeader(w.Header(), res.Trailer)
		return
	}
	for k, vv := range res.Trailer {
		k = http.TrailerPrefix + k
		for _, v := range vv {
			w.Header().Add(k, v)
		}
	}
}

// fastPath reports whether forward serves r: not an upgrade (ReverseProxy
// hands the connection over), not waiting for 100 Continue (net/http's
// Transport sends it, whose 101 response body ReverseProxy can splice),
// and a context that can end (ReverseProxy watches CloseNotify otherwise).
func fastPath(r *http.Request) bool {
	return upgradeType(r.Header) == "" && !ExpectsContinue(r.Header) && r.Context().Done() != nil
}

// copyResponse copies the body to the client, flushing the headers first
// and every write after (FlushInterval -1), all through flushGate. Two
// exceptions save a write per response: the headers are not flushed alone
// when the body's first bytes (or its end) are already in (bodyBuffered:
// an HTTP/2 upstream's DATA that came with its HEADERS), and the last
// bytes, read with io.EOF, are not flushed: the handler's end sends them
// with the end of the response (a unary gRPC response: HEADERS, DATA and
// trailers in one write).
func (f *Forwarder) copyResponse(w *flushGate, body io.Reader) error {
	if !bodyBuffered(body) {
		w.FlushError()
	}
	bp := buffers.Get().(*[]byte) // the pointer back to the pool: no allocation
	defer buffers.Put(bp)
	buf := *bp
	for {
		nr, rerr := body.Read(buf)
		if rerr != nil && rerr != io.EOF && rerr != context.Canceled {
			f.log.Debug("httputil: ReverseProxy read error during body copy", "err", rerr)
		}
		if nr > 0 {
			nw, werr := w.Write(buf[:nr])
			if rerr == nil {
				w.FlushError()
			}
			if werr != nil {
				return werr
			}
			if nr != nw {
				return io.ErrShortWrite
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				return nil
			}
			return rerr
		}
	}
}

// bodyBuffered reports a response body whose next Read returns at once
// with data or its end (h2client.Buffered).
func bodyBuffered(body io.Reader) bool {
	b, ok := body.(h2client.Buffered)
	if !ok {
		return false
	}
	n, eof := b.Buffered()
	return n > 0 || eof
}

// outgoing is what forward allocates for the request it sends: the
// request and its URL (r.Clone's two allocations) and the 1xx relay, in
// one allocation of the same size class as the three together.
type outgoing struct {
	req  http.Request
	url  url.URL
	inf  informational
	ctx  traceCtx
	body noopCloseReader // the request's body, if any
}

// withTrace is httptrace.WithClientTrace(parent, &o.inf.trace), its
// context inside o. WithClientTrace merges the trace with one parent
// already has, and adds net hooks for a trace with DNS or connect hooks:
// neither applies to forward's trace unless parent has one (then
// WithClientTrace itself), or the key could not be learnt.
func (o *outgoing) withTrace(parent context.Context) context.Context {
	if clientTraceKey == nil || httptrace.ContextClientTrace(parent) != nil {
		return httptrace.WithClientTrace(parent, &o.inf.trace)
	}
	o.ctx = traceCtx{Context: parent, trace: &o.inf.trace}
	return &o.ctx
}

// traceCtx is the context.WithValue context WithClientTrace makes, in an
// allocation forward makes anyway. Being no *cancelCtx, it passes the
// lookup of the nearest one (Value) to its parent, whose Done is its own:
// contexts derived from it are linked without a goroutine.
type traceCtx struct {
	context.Context
	trace *httptrace.ClientTrace
}

func (c *traceCtx) Value(key any) any {
	if key == clientTraceKey {
		return c.trace
	}
	return c.Context.Value(key)
}

// clientTraceKey is httptrace's context key (unexported), learnt from the
// one lookup ContextClientTrace makes; nil if it made none.
var clientTraceKey = func() any {
	var p keyProbe
	httptrace.ContextClientTrace(&p)
	return p.key
}()

type keyProbe struct {
	context.Context // nil: only Value is called
	key             any
}

func (p *keyProbe) Value(key any) any {
	if p.key == nil {
		p.key = key
	}
	return nil
}

// clone is r.Clone(ctx) into o: a copy of what forward or a transport may
// change (URL, Header, Trailer, TransferEncoding), the rest shallow, as
// Clone does. The header is a map of its own whose value slices are r's,
// clipped: forward changes it by key (Set, Del, Add, which copies a
// clipped slice), and neither it nor a transport writes into a value
// slice, so the values array Clone would allocate is not needed. A
// request with parsed forms, which Clone copies too and the proxy never
// parses, takes Clone itself.
func (o *outgoing) clone(r *http.Request, ctx context.Context) *http.Request {
	if r.Form != nil || r.PostForm != nil || r.MultipartForm != nil || r.URL == nil {
		return r.Clone(ctx)
	}
	o.req = *r.WithContext(ctx) // inlined: its copy stays on the stack
	o.url = *r.URL
	if r.URL.User != nil {
		u := *r.URL.User
		o.url.User = &u
	}
	o.req.URL = &o.url
	if r.Header != nil {
		h := make(http.Header, len(r.Header))
		for k, vv := range r.Header {
			h[k] = vv[:len(vv):len(vv)]
		}
		o.req.Header = h
	}
	o.req.Trailer = r.Trailer.Clone()
	if s := r.TransferEncoding; s != nil {
		o.req.TransferEncoding = append([]string(nil), s...)
	}
	return &o.req
}

// informational forwards the 1xx responses the transport reports until
// the final one has come (ReverseProxy's Got1xxResponse), in one
// allocation with its trace. (Its size keeps outgoing, with the 8-byte
// header of an object over 512 bytes, in the 640-byte size class.)
type informational struct {
	trace httptrace.ClientTrace
	mu    sync.Mutex
	w     *flushGate // nil once the round trip has returned: the header map is not ours
}

func (t *informational) got1xx(code int, header textproto.MIMEHeader) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.w == nil {
		return nil
	}
	h := t.w.Header()
	copyHeader(h, http.Header(header))
	t.w.WriteHeader(code)
	clear(h) // WriteHeader does not for a 1xx
	return nil
}

// noopCloseReader is a request body whose Close leaves the server's alone.
type noopCloseReader struct{ io.ReadCloser }

func (noopCloseReader) Close() error { return nil }

// Buffered passes the body's (h2client.Buffered) on.
func (r noopCloseReader) Buffered() (int, bool) { return buffered(r.ReadCloser) }

func buffered(r io.Reader) (int, bool) {
	if b, ok := r.(h2client.Buffered); ok {
		return b.Buffered()
	}
	return 0, false
}

// What follows is httputil's, for forward.

// hopHeaders are removed from requests and responses (RFC 9110 §7.6.1, and
// RFC 2616's list that httputil keeps).
var hopHeaders = []string{
	"Connection",
	"Proxy-Connection",
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

// removeHopByHopHeaders removes the headers Connection names, then the
// known hop-by-hop ones.
func removeHopByHopHeaders(h http.Header) {
	for _, f := range h["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, f := range hopHeaders {
		delete(h, f) // canonical already: no Del's canonicalization per name
	}
}

func copyHeader(dst, src http.Header) {
	for k, vv := range src {
		for _, v := range vv {
			dst.Add(k, v)
		}
	}
}

// moveHeader is copyHeader for a src that is dropped after (a response's
// header or trailer, read by nobody but through dst): a key dst does not
// have takes src's value slice itself instead of a copy, clipped so that
// an append to it in dst copies rather than writes into src's array.
func moveHeader(dst, src http.Header) {
	for k, vv := range src {
		if _, ok := dst[k]; !ok && len(vv) > 0 {
			dst[k] = vv[:len(vv):len(vv)]
			continue
		}
		for _, v := range vv {
			dst.Add(k, v)
		}
	}
}

func upgradeType(h http.Header) string {
	if !httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade") {
		return ""
	}
	return h1head.Get(h, "Upgrade")
}

// isPrint: every byte is printable ASCII.
func isPrint(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// cleanQueryParams re-encodes a query that has parameters url.ParseQuery
// would reject (a ';', a bad escape), dropping them; others are kept as
// they are.
func cleanQueryParams(s string) string {
	reencode := func(s string) string {
		v, _ := url.ParseQuery(s)
		return v.Encode()
	}
	for i := 0; i < len(s); {
		switch s[i] {
		case ';':
			return reencode(s)
		case '%':
			if i+2 >= len(s) || !ishex(s[i+1]) || !ishex(s[i+2]) {
				return reencode(s)
			}
			i += 3
		default:
			i++
		}
	}
	return s
}

func ishex(c byte) bool {
	switch {
	case '0' <= c && c <= '9', 'a' <= c && c <= 'f', 'A' <= c && c <= 'F':
		return true
	}
	return false
}
