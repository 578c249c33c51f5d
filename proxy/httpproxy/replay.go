package httpproxy

import (
	"bytes"
	"io"
	"sync"
)

// RetryBufferSize bounds how much of a request body is kept for a retry. A
// body that grows past it has streamed beyond recall: that request is not
// retried.
const RetryBufferSize = 64 << 10

// replayBody tees what an attempt reads from the client's body into a
// bounded buffer, so that a later attempt can read the same bytes again and
// then continue with the rest of the client's body.
type replayBody struct {
	mu       sync.Mutex
	src      io.Reader // the client's body
	buf      bytes.Buffer
	overflow bool // more than RetryBufferSize has been read: no replay
	eof      bool
}

func newReplayBody(src io.Reader) *replayBody { return &replayBody{src: src} }

// attempt returns a reader for one attempt: the buffered bytes, then the rest
// of the client's body. ok is false when the body can no longer be replayed.
func (b *replayBody) attempt() (io.ReadCloser, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.overflow {
		return nil, false
	}
	return &attemptBody{b: b}, true
}

type attemptBody struct {
	b    *replayBody
	off  int
	pass bool // this attempt overflowed the buffer and now streams straight through
}

func (a *attemptBody) Read(p []byte) (int, error) {
	b := a.b
	if a.pass {
		return b.src.Read(p)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if a.off < b.buf.Len() {
		n := copy(p, b.buf.Bytes()[a.off:])
		a.off += n
		return n, nil
	}
	if b.eof {
		return 0, io.EOF
	}
	if b.overflow || a.off != b.buf.Len() {
		// An earlier attempt is past this point and the bytes are gone.
		return 0, io.ErrUnexpectedEOF
	}
	// Unlock while blocked on the client; attempts are sequential, so no
	// other reader can race this one.
	b.mu.Unlock()
	n, err := b.src.Read(p)
	b.mu.Lock()
	if n > 0 {
		if b.buf.Len()+n > RetryBufferSize {
			b.overflow = true
			b.buf = bytes.Buffer{}
			a.pass = true
		} else {
			b.buf.Write(p[:n])
			a.off += n
		}
	}
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

// Close does not close the client's body: the server does that when the
// handler returns, and a later attempt may still need it.
func (a *attemptBody) Close() error { return nil }
