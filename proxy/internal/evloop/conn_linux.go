package evloop

import (
	"errors"
	"net"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A ConnHandler is told, on the loop, what happened on its Conn.
type ConnHandler interface {
	// Readable: Buffered holds more bytes than at the last call, or the
	// read side ended (EOF or Err).
	Readable(c *Conn)
	// Written: the socket took everything written, after a Write it could
	// not take at once (the time to produce more, for a handler that
	// stops while Pending is large).
	Written(c *Conn)
}

// BufferSize is a connection's read buffer, taken from its loop's spares
// when it reads and given back when it is empty: an idle connection holds
// none.
const BufferSize = 16 << 10

// Conn is a connected non-blocking stream socket served by a loop. Its
// methods are the loop's (called only from the loop).
type Conn struct {
	l      *Loop
	fd     int
	h      ConnHandler
	buf    []byte // buf[r:w] read and not consumed; nil while empty
	r, w   int
	out    []byte // written and not taken by the socket yet
	ev     Events // what fd is watched for
	eof    bool
	err    error
	shut   bool // CloseWrite once out is written
	closed bool
	gone   bool // hung up with nothing left to do: no longer watched
}

// NewConn serves the connected stream socket fd (made non-blocking here)
// on the loop, telling h of what comes. The loop owns fd from then on:
// Close closes it, Detach gives it back.
func (l *Loop) NewConn(fd int, h ConnHandler) (*Conn, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, os.NewSyscallError("fcntl", err)
	}
	c := &Conn{l: l, fd: fd, h: h, ev: In}
	if err := l.Watch(fd, In, c); err != nil {
		return nil, err
	}
	return c, nil
}

// SetHandler replaces the handler.
func (c *Conn) SetHandler(h ConnHandler) { c.h = h }

// Fd is the socket's descriptor.
func (c *Conn) Fd() int { return c.fd }

// Buffered is what was read and not consumed. It is valid until the next
// Consume or the handler's return, whichever is first.
func (c *Conn) Buffered() []byte { return c.buf[c.r:c.w] }

// Consume drops the first n buffered bytes.
func (c *Conn) Consume(n int) {
	c.r += n
	if c.r == c.w {
		c.r, c.w = 0, 0
		if c.buf != nil {
			c.l.putBuf(c.buf)
			c.buf = nil
		}
	}
	c.want()
}

// Unread puts b in front of the bytes read and not consumed, as read
// first: what a goroutine read from the socket before the loop took it. It
// fails when b does not fit in the buffer with them. Nothing tells the
// handler of b: the caller serves it.
func (c *Conn) Unread(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if c.buf == nil {
		c.buf = c.l.getBuf()
	}
	n := c.w - c.r
	if len(b)+n > len(c.buf) {
		if n == 0 {
			c.l.putBuf(c.buf)
			c.buf = nil
		}
		return errors.New("evloop: Unread past the buffer")
	}
	copy(c.buf[len(b):], c.buf[c.r:c.w])
	copy(c.buf, b)
	c.r, c.w = 0, len(b)+n
	c.want()
	return nil
}

// EOF says that the peer ended its side: no more bytes come.
func (c *Conn) EOF() bool { return c.eof }

// Silent reports whether the connection is open with nothing to read:
// nothing buffered, no end or error seen, and none in the socket (a
// non-blocking MSG_PEEK finds nothing), for a caller about to use an idle
// connection.
func (c *Conn) Silent() bool {
	if c.closed || c.eof || c.err != nil || c.r < c.w {
		return false
	}
	var b [1]byte
	_, _, err := unix.Recvfrom(c.fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
	return err == unix.EAGAIN
}

// Err is the read or write error that ended the connection, if any.
func (c *Conn) Err() error { return c.err }

// Pending is how many written bytes the socket has not taken yet.
func (c *Conn) Pending() int { return len(c.out) }

// Write writes b, keeping what the socket does not take at once for when
// it can (Written says when it all went). It fails only when the
// connection has failed or is closed.
func (c *Conn) Write(b []byte) error { return c.Write2(b, nil) }

// Write2 writes a then b, in one system call when it can.
func (c *Conn) Write2(a, b []byte) error {
	if c.closed || c.shut {
		return net.ErrClosed
	}
	if c.err != nil {
		return c.err
	}
	if len(c.out) > 0 {
		c.out = append(append(c.out, a...), b...)
		return nil
	}
	n, err := writev(c.fd, a, b)
	if err != nil && err != unix.EAGAIN {
		c.fail(os.NewSyscallError("writev", err))
		return c.err
	}
	if n < len(a) {
		c.out = append(append(c.out, a[n:]...), b...)
	} else if n-len(a) < len(b) {
		c.out = append(c.out, b[n-len(a):]...)
	}
	c.want()
	return nil
}

// CloseWrite shuts the write side down once what was written is out.
func (c *Conn) CloseWrite() error {
	if c.closed {
		return net.ErrClosed
	}
	c.shut = true
	if len(c.out) == 0 {
		return os.NewSyscallError("shutdown", unix.Shutdown(c.fd, unix.SHUT_WR))
	}
	return nil
}

// Close closes the socket at once, dropping what was not written.
func (c *Conn) Close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	c.l.Forget(c.fd)
	c.release()
	return os.NewSyscallError("close", unix.Close(c.fd))
}

func (c *Conn) closeByLoop() { c.Close() }

func (c *Conn) release() {
	if c.buf != nil {
		c.l.putBuf(c.buf)
		c.buf = nil
	}
	c.r, c.w = 0, 0
	c.out = nil
}

// Detach takes the socket off the loop: the caller owns fd from then on,
// with the bytes read and not consumed (a copy). What was written and not
// taken yet is an error: hand a connection over between two messages.
func (c *Conn) Detach() (fd int, buffered []byte, err error) {
	if c.closed {
		return -1, nil, net.ErrClosed
	}
	if len(c.out) > 0 {
		return -1, nil, errors.New("evloop: Detach with bytes still to write")
	}
	buffered = append([]byte(nil), c.Buffered()...)
	c.closed = true
	c.l.Forget(c.fd)
	c.release()
	return c.fd, buffered, nil
}

// Handoff detaches the connection as a net.Conn for a goroutine to serve,
// whose first reads return the bytes already buffered.
func (c *Conn) Handoff() (net.Conn, error) {
	fd, buffered, err := c.Detach()
	if err != nil {
		return nil, err
	}
	return FileConn(fd, buffered)
}

// FileConn makes a net.Conn of the socket fd (the runtime's poller serves
// it; fd is closed, the net.Conn has its own), replaying prefix first.
func FileConn(fd int, prefix []byte) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "evloop")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	if len(prefix) == 0 {
		return nc, nil
	}
	return &Prefixed{Conn: nc, prefix: prefix}, nil
}

// Prefixed is a net.Conn whose first reads return bytes read from it
// before.
type Prefixed struct {
	net.Conn
	prefix []byte
}

func (p *Prefixed) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// CloseWrite shuts the write side down, as a *net.TCPConn's does.
func (p *Prefixed) CloseWrite() error {
	if cw, ok := p.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("evloop: CloseWrite not supported")
}

// NetConn is the connection under the prefix.
func (p *Prefixed) NetConn() net.Conn { return p.Conn }

// Ready is the loop's: it reads when fd is readable and writes what is
// pending when it is writable.
func (c *Conn) Ready(ev Events) {
	if ev&Out != 0 && len(c.out) > 0 {
		c.flush()
		if c.closed {
			return
		}
	}
	if ev&In != 0 && c.ev&In != 0 {
		c.read()
	}
	if ev&Hangup != 0 && c.ev == 0 && !c.closed {
		// The socket reports a hang-up or an error at every poll, watched
		// for it or not: with nothing left to read or write it is
		// forgotten until the handler closes it.
		c.gone = true
		c.l.Forget(c.fd)
	}
}

// read makes one read: level-triggered, the loop tells again while more
// is there (no read to learn that nothing is left).
func (c *Conn) read() {
	if c.buf == nil {
		c.buf = c.l.getBuf()
	}
	if c.w == len(c.buf) && c.r > 0 {
		c.w = copy(c.buf, c.buf[c.r:c.w])
		c.r = 0
	}
	if c.w == len(c.buf) {
		c.want() // full: reading stops until a Consume
		return
	}
	n, e := rawRead(c.fd, c.buf[c.w:])
	switch {
	case e == unix.EAGAIN:
		if c.r == c.w {
			c.l.putBuf(c.buf)
			c.buf = nil
		}
		return
	case e != 0:
		c.fail(os.NewSyscallError("read", e))
	case n == 0:
		c.eof = true
		c.want()
	default:
		c.w += n
	}
	if c.r == c.w && c.buf != nil {
		c.l.putBuf(c.buf)
		c.buf = nil
	}
	c.h.Readable(c)
}

func (c *Conn) flush() {
	n, e := rawWrite(c.fd, c.out)
	if e == unix.EAGAIN {
		return
	}
	if e != 0 {
		c.fail(os.NewSyscallError("write", e))
		c.h.Readable(c) // the handler learns of the failure there
		return
	}
	c.out = c.out[n:]
	if len(c.out) > 0 {
		return
	}
	c.out = c.out[:0:0]
	c.want()
	if c.shut {
		unix.Shutdown(c.fd, unix.SHUT_WR)
	}
	c.h.Written(c)
}

// fail ends the connection's reading and writing with err.
func (c *Conn) fail(err error) {
	if c.err == nil {
		c.err = err
	}
	c.out = nil
	c.want()
}

// want watches fd for what the connection needs: In while it may read
// (no EOF or error, room in the buffer), Out while bytes are pending.
func (c *Conn) want() {
	if c.closed || c.gone {
		return
	}
	var ev Events
	if !c.eof && c.err == nil && (c.buf == nil || c.w-c.r < BufferSize) {
		ev |= In
	}
	if len(c.out) > 0 {
		ev |= Out
	}
	if ev != c.ev {
		c.ev = ev
		c.l.Modify(c.fd, ev)
	}
}

func (l *Loop) getBuf() []byte {
	if n := len(l.bufs); n > 0 {
		b := l.bufs[n-1]
		l.bufs = l.bufs[:n-1]
		return b
	}
	return make([]byte, BufferSize)
}

// putBuf keeps a buffer for the next read, at most maxSpareBufs of them.
func (l *Loop) putBuf(b []byte) {
	if len(l.bufs) < maxSpareBufs {
		l.bufs = append(l.bufs, b)
	}
}

const maxSpareBufs = 256

// The system calls are raw: the descriptors are non-blocking, so they
// never park the thread, and the runtime's system call bookkeeping (which
// wakes its monitor thread) is not needed.

func rawRead(fd int, b []byte) (int, syscall.Errno) {
	for {
		n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		if e != unix.EINTR {
			return int(n), e
		}
	}
}

func rawWrite(fd int, b []byte) (int, syscall.Errno) {
	for {
		n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		if e != unix.EINTR {
			return int(n), e
		}
	}
}

// writev writes a then b (either may be empty) in one call; n counts the
// bytes of both taken.
func writev(fd int, a, b []byte) (int, error) {
	var iov [2]unix.Iovec
	k := 0
	for _, p := range [2][]byte{a, b} {
		if len(p) > 0 {
			iov[k].Base = &p[0]
			iov[k].SetLen(len(p))
			k++
		}
	}
	if k == 0 {
		return 0, nil
	}
	for {
		n, _, e := unix.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(k))
		switch e {
		case 0:
			return int(n), nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, unix.EAGAIN
		default:
			return 0, e
		}
	}
}

// Take takes c's socket for a loop (NewConn): a duplicate of its
// descriptor, and c closed (the runtime's poller lets its own go). Nothing
// may be using c meanwhile, and it must have nothing buffered above the
// socket.
func Take(c interface {
	syscall.Conn
	Close() error
}) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	cerr := rc.Control(func(s uintptr) {
		fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	})
	if cerr != nil {
		return -1, cerr
	}
	if err != nil {
		return -1, os.NewSyscallError("fcntl", err)
	}
	c.Close()
	return fd, nil
}
