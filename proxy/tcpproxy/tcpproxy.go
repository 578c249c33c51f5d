// Package tcpproxy copies opaque byte streams between two connections, with
// half-close in both directions.
package tcpproxy

import (
	"errors"
	"io"
	"net"
	"sync"
)

// Splice copies a→b and b→a until both directions finish. When one side
// stops sending, the other side's write half is closed, so protocols that
// signal "done" with a half-close keep working. It closes both connections
// before returning and reports the first real error.
func Splice(a, b net.Conn) error {
	var wg sync.WaitGroup
	errs := make([]error, 2)
	wg.Add(2)
	go func() { defer wg.Done(); errs[0] = copyHalf(b, a) }()
	go func() { defer wg.Done(); errs[1] = copyHalf(a, b) }()
	wg.Wait()
	a.Close()
	b.Close()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func copyHalf(dst, src net.Conn) error {
	buf := bufs.Get().(*[]byte)
	defer bufs.Put(buf)
	// io.CopyBuffer uses splice(2) on Linux when both ends are bare *net.TCPConn.
	_, err := io.CopyBuffer(dst, src, *buf)
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
