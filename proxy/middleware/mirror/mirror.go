// Package mirror implements the Gateway API's RequestMirror filter
// (HTTPRequestMirrorFilter): a fraction of the requests is copied to
// another backend, fire-and-forget, while the primary request goes on
// unchanged and never waits for the copy.
package mirror

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
)

// MaxBody bounds the body kept to be mirrored: a request with a larger one
// is not mirrored (its body streams to the primary as it comes).
const MaxBody = 64 << 10

// MaxInFlight bounds the mirrored requests one filter has in flight: beyond
// it a request is not mirrored, so that a slow mirror backend costs memory
// and goroutines in proportion to the bound, not to the traffic.
const MaxInFlight = 64

// Reasons given to Config.Skipped.
const (
	SkippedBodyTooLarge = "body_too_large"
	SkippedBodyError    = "body_error" // the body broke, or was not read to its end
	SkippedBusy         = "busy"       // MaxInFlight mirrored requests in flight
)

// Config is an HTTPRequestMirrorFilter.
type Config struct {
	// Numerator/Denominator is the fraction of requests mirrored (a
	// Percent p is p/100); 0/0: all of them (the spec's default when
	// neither is given); n/0 all too. Numerator ≥ Denominator mirrors all.
	Numerator, Denominator uint32
	// Send sends a mirrored request (to a single endpoint of the mirror's
	// backend) and discards the response. It runs on a goroutine of its
	// own; the request's context is its own (not cancelled with the
	// primary's, carrying none of its values): Send bounds it.
	Send func(*http.Request)
	// Skipped, optional, is told each request sampled but not mirrored,
	// and why (Skipped* above): for a counter.
	Skipped func(reason string)
}

// New returns the filter. For a sampled request it clones the request for
// Send, with a body of its own:
//
//   - no body: the mirror is sent at once;
//   - a body of known length up to MaxBody: read ahead before next is
//     called (the one delay mirroring costs), the primary and the mirror
//     each reading their own reader over the same bytes;
//   - a body of unknown length (chunked, HTTP/2, a gRPC stream): never
//     read ahead (a stream's next message may wait for the response); what
//     the primary reads is kept, and the mirror is sent once the primary's
//     body ends within MaxBody;
//   - larger: not mirrored.
//
// The primary keeps its header, ContentLength and framing.
func New(c Config) func(http.Handler) http.Handler {
	f := &filter{c: c, slots: make(chan struct{}, MaxInFlight), skipped: c.Skipped}
	if f.skipped == nil {
		f.skipped = func(string) {}
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if c.Send != nil && c.sampled() {
				f.mirror(r)
			}
			next.ServeHTTP(w, r)
		})
	}
}

type filter struct {
	c       Config
	slots   chan struct{}
	skipped func(string)
}

func (c Config) sampled() bool {
	if c.Denominator == 0 || c.Numerator >= c.Denominator {
		return true
	}
	return rand.Uint32N(c.Denominator) < c.Numerator
}

// mirror arranges r's copy to be sent, replacing r.Body when it has to.
func (f *filter) mirror(r *http.Request) {
	m := r.Clone(context.Background())
	m.RequestURI = "" // a client request
	switch {
	case r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0:
		m.Body = http.NoBody
		f.send(m, nil)
	case r.ContentLength > MaxBody:
		f.skipped(SkippedBodyTooLarge)
	case r.ContentLength > 0:
		orig := r.Body
		b, err := io.ReadAll(io.LimitReader(orig, r.ContentLength))
		if err != nil {
			// The primary reads what came, then the error, as it would have.
			f.skipped(SkippedBodyError)
			r.Body = readCloser{io.MultiReader(bytes.NewReader(b), errReader{err}), orig}
			return
		}
		r.Body = readCloser{bytes.NewReader(b), orig}
		f.send(m, b)
	default:
		r.Body = &teeBody{orig: r.Body, f: f, m: m}
	}
}

// send starts Send on m, with body (nil: none), unless MaxInFlight are in
// flight already.
func (f *filter) send(m *http.Request, body []byte) {
	select {
	case f.slots <- struct{}{}:
	default:
		f.skipped(SkippedBusy)
		return
	}
	if body != nil {
		m.Body = io.NopCloser(bytes.NewReader(body))
		m.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		m.ContentLength = int64(len(body))
	}
	go func() {
		defer func() { <-f.slots }()
		f.c.Send(m)
	}()
}

// readCloser reads r and closes the request's original body.
type readCloser struct {
	io.Reader
	c io.Closer
}

func (b readCloser) Close() error { return b.c.Close() }

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// teeBody is the primary's body of unknown length: it keeps what the
// primary reads, up to MaxBody, and sends the mirror at its end. Read and
// Close may run at once (the transport closes a body under a Read).
type teeBody struct {
	orig io.ReadCloser
	f    *filter
	m    *http.Request

	mu   sync.Mutex
	buf  []byte
	done bool // mirrored or skipped
}

func (b *teeBody) Read(p []byte) (int, error) {
	n, err := b.orig.Read(p)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return n, err
	}
	if len(b.buf)+n > MaxBody {
		b.done, b.buf = true, nil
		b.f.skipped(SkippedBodyTooLarge)
		return n, err
	}
	b.buf = append(b.buf, p[:n]...)
	switch {
	case err == io.EOF:
		b.done = true
		body := b.buf
		if body == nil {
			body = []byte{}
		}
		b.f.send(b.m, body)
	case err != nil:
		b.done, b.buf = true, nil
		b.f.skipped(SkippedBodyError)
	}
	return n, err
}

func (b *teeBody) Close() error {
	b.mu.Lock()
	if !b.done {
		b.done, b.buf = true, nil
		b.f.skipped(SkippedBodyError)
	}
	b.mu.Unlock()
	return b.orig.Close()
}
