package httpproxy

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"

	"golang.org/x/net/http/httpguts"

	"github.com/meridian-mesh/meridian/internal/names"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/internal/h1head"
	"github.com/meridian-mesh/meridian/proxy/metrics"
)

// ExpectHeader carries a client's "Expect: 100-continue" across the HTTP/2
// hop between two proxies: Go's HTTP/2 server consumes Expect (it answers
// 100 itself when the handler first reads the body), so without it the
// inbound proxy could not ask its application. Only honoured inbound.
const ExpectHeader = names.HeaderExpect

// clientBody is an HTTP/1 client's request body as the server reads it. It
// remembers the first error that is the client's doing (a malformed chunk,
// a body shorter than its Content-Length, a connection that broke), so that
// a failed exchange is answered and counted as the client's error, not the
// application's.
type clientBody struct {
	io.ReadCloser
	mu  sync.Mutex
	err error
	eof bool
}

func (b *clientBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	// ErrBodyReadAfterClose is the server closing the body when the
	// handler ends, not the client.
	if err == io.EOF {
		b.mu.Lock()
		b.eof = true
		b.mu.Unlock()
	} else if err != nil && !errors.Is(err, http.ErrBodyReadAfterClose) {
		b.mu.Lock()
		if b.err == nil {
			b.err = err
		}
		b.mu.Unlock()
	}
	return n, err
}

// complete reports whether the body was read to its end, intact.
func (b *clientBody) complete() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.eof && b.err == nil
}

// failed is the client's error, or nil.
func (b *clientBody) failed() error {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// clientError reports the error the client's request body failed with, if any.
func (x *Exchange) clientError() error { return x.client.failed() }

// BadRequest answers a request whose body the client broke: one 400, and
// the connection closed after it, since what follows on the connection
// cannot be framed (RFC 9112 §6.3, §7.1). It is counted (once for x) as a
// client error in m, not as a response of the application.
func BadRequest(w http.ResponseWriter, r *http.Request, x *Exchange, m *metrics.Registry, log *slog.Logger, err error) {
	x.errOnce.Do(func() {
		m.ClientError(x.Labels.Direction, x.Labels.Authority, "bad_request")
	})
	log.Debug("malformed request", "direction", x.Labels.Direction, "authority", x.Labels.Authority, "err", err)
	w.Header().Set("Connection", "close")
	WriteError(w, r, http.StatusBadRequest, "bad_request", err)
}

// closeAfterResponse makes the HTTP/1 server close the client's connection
// once the response in progress is complete, even when its headers are
// already out. h1server's ResponseWriter has CloseAfterReply for it; Go's
// server offers that only through MaxBytesReader: over its limit, it tells
// the connection's ResponseWriter to close after the reply (and, were the
// headers not written yet, to say Connection: close).
func closeAfterResponse(w http.ResponseWriter) {
	for {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			break
		}
		w = u.Unwrap()
	}
	if c, ok := w.(interface{ CloseAfterReply() }); ok {
		c.CloseAfterReply()
		return
	}
	http.MaxBytesReader(w, io.NopCloser(strings.NewReader("x")), 0).Read(make([]byte, 1))
}

// noContent normalises a response that cannot have content (1xx, 204, 304;
// RFC 9110 §6.4.1): whatever body an application sent with it is dropped,
// and so is the Content-Length of a 1xx or 204, which a server must not
// send (§8.6). A 304 keeps its Content-Length, the length of the
// representation it stands for. Go's HTTP/1 client already reads no body
// for these, but the header went on, and over HTTP/2 a non-zero
// content-length on a stream that ends at once is a protocol error to the
// peer.
func noContent(resp *http.Response) {
	s := resp.StatusCode
	if !(s >= 100 && s < 200 && s != http.StatusSwitchingProtocols) && s != http.StatusNoContent && s != http.StatusNotModified {
		return
	}
	if s != http.StatusNotModified {
		resp.Header.Del("Content-Length")
	}
	resp.ContentLength = 0
	if resp.Body != nil && resp.Body != http.NoBody {
		resp.Body.Close()
		resp.Body = http.NoBody
	}
}

// claimsContent reports a response that cannot have content (1xx, 204,
// 304) but declares some: a non-zero Content-Length, or Transfer-Encoding.
func claimsContent(resp *http.Response) bool {
	s := resp.StatusCode
	if !(s >= 100 && s < 200) && s != http.StatusNoContent && s != http.StatusNotModified {
		return false
	}
	if len(resp.TransferEncoding) > 0 {
		return true
	}
	cl := h1head.Get(resp.Header, "Content-Length")
	return cl != "" && cl != "0"
}

// Resendable reports a request that can be sent again as it is when its
// connection fails: neither an upgrade nor waiting for 100 Continue.
func Resendable(h http.Header) bool {
	return h1head.Get(h, "Upgrade") == "" && !ExpectsContinue(h)
}

// ExpectsContinue reports "Expect: 100-continue" on a request.
func ExpectsContinue(h http.Header) bool {
	return httpguts.HeaderValuesContainsToken(h["Expect"], "100-continue")
}
