// Package tcpproxy copies opaque byte streams between two connections, with
// half-close in both directions.
package tcpproxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ErrIdle is SpliceIdle's result when it closed an idle stream.
var ErrIdle = errors.New("tcpproxy: idle timeout")

// Splice copies a→b and b→a until both directions finish. When one side
// stops sending, the other side's write half is closed, so protocols that
// signal "done" with a half-close keep working. It closes both connections
// before returning and reports the first real error.
func Splice(a, b net.Conn) error { return SpliceIdle(a, b, 0) }

// SpliceIdle is Splice that closes both connections, and returns ErrIdle,
// once no byte has been read from either for idle (0: never). Bytes in
// either direction keep the stream alive, so a long download with a
// silent client is not idle.
func SpliceIdle(a, b net.Conn, idle time.Duration) error {
	var last atomic.Int64 // Unix ns of the last read that returned bytes
	last.Store(time.Now().UnixNano())
	var idled atomic.Bool
	ra, rb := io.Reader(a), io.Reader(b)
	if idle > 0 {
		ra, rb = &activity{a, &last}, &activity{b, &last}
		// One timer per stream, re-armed from the last activity: no
		// deadline syscall per read.
		var t *time.Timer
		var mu sync.Mutex
		mu.Lock()
		defer func() { mu.Lock(); t.Stop(); mu.Unlock() }()
		t = time.AfterFunc(idle, func() {
			quiet := time.Since(time.Unix(0, last.Load()))
			if quiet >= idle {
				idled.Store(true)
				a.Close()
				b.Close()
				return
			}
			mu.Lock()
			t.Reset(idle - quiet)
			mu.Unlock()
		})
		mu.Unlock()
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	wg.Add(2)
	go func() { defer wg.Done(); errs[0] = copyHalf(b, a, ra) }()
	go func() { defer wg.Done(); errs[1] = copyHalf(a, b, rb) }()
	wg.Wait()
	a.Close()
	b.Close()
	if idled.Load() {
		return ErrIdle
	}
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// activity records when reads from a connection return bytes.
type activity struct {
	net.Conn
	last *atomic.Int64
}

func (r *activity) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	if n > 0 {
		r.last.Store(time.Now().UnixNano())
	}
	return n, err
}

func copyHalf(dst, src net.Conn, r io.Reader) error {
	buf := bufs.Get().(*[]byte)
	defer bufs.Put(buf)
	// io.CopyBuffer uses splice(2) on Linux when both ends are bare
	// *net.TCPConn (and no idle timeout wraps the reader).
	_, err := io.CopyBuffer(dst, r, *buf)
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		dst.Close()
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		// A reset from one side ends the other too: nothing more can flow.
		src.Close()
		dst.Close()
		return err
	}
	return nil
}

var bufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
