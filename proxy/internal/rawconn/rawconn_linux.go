package rawconn

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// Conn is a *net.TCPConn whose Read and Write make their system calls
// without the runtime's syscall bookkeeping (see the package doc).
type Conn struct {
	*net.TCPConn
	rc syscall.RawConn

	// The arguments and results of the read and the write in progress
	// live here so that the callbacks, made once, allocate nothing per
	// call. rmu and wmu make it one read and one write at a time, as the
	// poller does for net's own methods, but around the fields too:
	// net.Conn allows Write from several goroutines at once (a WebSocket
	// relay beside the transport's writer), and the poller's lock, taken
	// inside rc.Write, came after the fields were set.
	rmu     sync.Mutex
	wmu     sync.Mutex
	rp      []byte
	rn      int
	rerr    error
	readFn  func(fd uintptr) bool
	wp      []byte
	wn      int
	werr    error
	writeFn func(fd uintptr) bool
	// WriteRead's: whether its write is done, and its callback.
	wrWrote bool
	wrErr   error
	wrFn    func(fd uintptr) bool
}

// Wrap returns c as a *Conn when it is a *net.TCPConn, else c itself.
func Wrap(c net.Conn) net.Conn {
	if disabled {
		return c
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	rw := &Conn{TCPConn: tc, rc: rc}
	rw.readFn = rw.read
	rw.writeFn = rw.write
	rw.wrFn = rw.writeRead
	return rw
}

func (c *Conn) read(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&c.rp[0])), uintptr(len(c.rp)))
		switch e {
		case 0:
			if n == 0 {
				c.rn, c.rerr = 0, io.EOF
			} else {
				c.rn, c.rerr = int(n), nil
			}
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // the poller waits for the socket to be readable
		default:
			c.rn, c.rerr = 0, os.NewSyscallError("read", e)
			return true
		}
	}
}

func (c *Conn) write(fd uintptr) bool {
	for c.wn < len(c.wp) {
		rest := c.wp[c.wn:]
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&rest[0])), uintptr(len(rest)))
		switch e {
		case 0:
			if n == 0 {
				c.werr = io.ErrUnexpectedEOF // as poll.FD.Write
				return true
			}
			c.wn += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false // the poller waits for room in the socket's buffer
		default:
			c.werr = os.NewSyscallError("write", e)
			return true
		}
	}
	return true
}

// Read reads as (*net.TCPConn).Read does.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	c.rp = p
	err := c.rc.Read(c.readFn)
	n, rerr := c.rn, c.rerr
	c.rp, c.rerr = nil, nil
	c.rmu.Unlock()
	if err != nil {
		return 0, c.opError("read", err)
	}
	if rerr != nil && rerr != io.EOF {
		return n, c.opError("read", rerr)
	}
	return n, rerr
}

// Write writes as (*net.TCPConn).Write does: all of p, or an error.
func (c *Conn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	c.wp, c.wn = p, 0
	err := c.rc.Write(c.writeFn)
	n, werr := c.wn, c.werr
	c.wp, c.werr = nil, nil
	c.wmu.Unlock()
	if err == nil {
		err = werr
	}
	if err != nil {
		return n, c.opError("write", err)
	}
	return n, nil
}

// WriteRead writes all of w, then reads into r as Read does: for a
// request and its answer. The read waits for the poller before it tries:
// a read made at once after the write fails with EAGAIN (the answer is
// not there yet), a system call wasted per request. Read cannot skip that
// try, because it re-arms the poller first and a readiness seen before it
// would be lost; here the poller is re-armed before the write, so the
// answer's readiness cannot come before it. n is what was read. w is
// written whole unless the error is a "write" *net.OpError (nothing is
// read then): a read that cannot start (its deadline gone) still lets the
// write go first, as Write then Read would.
func (c *Conn) WriteRead(w, r []byte) (n int, err error) {
	if len(w) == 0 {
		return c.Read(r)
	}
	if len(r) == 0 {
		_, err := c.Write(w)
		return 0, err
	}
	c.rmu.Lock()
	c.wmu.Lock()
	c.rp, c.wp, c.wn, c.wrWrote = r, w, 0, false
	err = c.rc.Read(c.wrFn)
	if err != nil && !c.wrWrote {
		// The poller refused before the callback: write as Write would.
		c.wrWrote = true
		c.wrErr = c.waitWrite()
	}
	n, rerr, werr := c.rn, c.rerr, c.wrErr
	c.rp, c.rerr, c.wp, c.werr, c.wrErr = nil, nil, nil, nil, nil
	c.wmu.Unlock()
	c.rmu.Unlock()
	switch {
	case werr != nil:
		return 0, c.opError("write", werr)
	case err != nil:
		return 0, c.opError("read", err)
	case rerr != nil && rerr != io.EOF:
		return n, c.opError("read", rerr)
	}
	return n, rerr
}

// writeRead is WriteRead's callback: the write at its first call (finished
// through the poller's write wait if the socket's buffer is full), then
// the read at each readiness.
func (c *Conn) writeRead(fd uintptr) bool {
	if c.wrWrote {
		return c.read(fd)
	}
	c.wrWrote = true
	if c.write(fd) {
		c.wrErr = c.werr
	} else {
		c.wrErr = c.waitWrite() // full: wait for room
	}
	return c.wrErr != nil // else wait for the answer
}

// waitWrite finishes the write in progress as Write does, through the
// poller's write wait (its own lock and deadline), and returns its error.
func (c *Conn) waitWrite() error {
	if err := c.rc.Write(c.writeFn); err != nil {
		return err
	}
	return c.werr
}

// opError wraps err as net's own methods do, unwrapping the OpError the
// raw calls put around the poller's errors (net.ErrClosed,
// os.ErrDeadlineExceeded).
func (c *Conn) opError(op string, err error) error {
	if oe, ok := err.(*net.OpError); ok {
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// ReadFrom is (*net.TCPConn).ReadFrom, given the *net.TCPConn beneath a
// *Conn source so that two raw connections still splice(2).
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	if rc, ok := r.(*Conn); ok {
		r = rc.TCPConn
	}
	return c.TCPConn.ReadFrom(r)
}

// WriteTo is (*net.TCPConn).WriteTo, likewise.
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	if wc, ok := w.(*Conn); ok {
		w = wc.TCPConn
	}
	return c.TCPConn.WriteTo(w)
}

// NetConn and Unwrap return the *net.TCPConn beneath (origdst unwraps to
// ask for SO_ORIGINAL_DST).
func (c *Conn) NetConn() net.Conn { return c.TCPConn }

// Unwrap: see NetConn.
func (c *Conn) Unwrap() net.Conn { return c.TCPConn }
