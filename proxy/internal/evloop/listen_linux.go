package evloop

import (
	"errors"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A Listener accepts a listening socket's connections on a loop.
type Listener struct {
	l      *Loop
	fd     int
	accept func(fd int, remote unix.Sockaddr)
	closed bool
}

// Listen accepts ln's connections on the loop and gives each to accept, on
// the loop, as a non-blocking descriptor that accept then owns. ln keeps
// its address; the loop listens on a duplicate of its socket, and ln's
// own Accept must not be called. Close the Listener, then ln.
func (l *Loop) Listen(ln net.Listener, accept func(fd int, remote unix.Sockaddr)) (*Listener, error) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return nil, errors.New("evloop: the listener has no socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	dup := -1
	var derr error
	if err := rc.Control(func(fd uintptr) { dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, os.NewSyscallError("fcntl", derr)
	}
	if err := unix.SetNonblock(dup, true); err != nil {
		unix.Close(dup)
		return nil, os.NewSyscallError("fcntl", err)
	}
	lis := &Listener{l: l, fd: dup, accept: accept}
	if err := l.Watch(dup, In, lis); err != nil {
		unix.Close(dup)
		return nil, err
	}
	return lis, nil
}

// acceptBatch bounds the connections taken per readiness: the loop's other
// work goes on between batches under a flood of connections.
const acceptBatch = 16

// acceptBackoff is the pause in accepting after running out of
// descriptors or memory.
const acceptBackoff = 50 * time.Millisecond

// Ready accepts what is waiting.
func (lis *Listener) Ready(Events) {
	for i := 0; i < acceptBatch && !lis.closed; i++ {
		fd, sa, err := unix.Accept4(lis.fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		switch err {
		case nil:
		case unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM:
			// Out of descriptors or memory: the socket stays readable,
			// and accepting again at once would spin. Wait a little, as
			// net's Accept does not (it is told to by its caller).
			lis.l.Modify(lis.fd, 0)
			lis.l.After(acceptBackoff, func() {
				if !lis.closed {
					lis.l.Modify(lis.fd, In)
				}
			})
			return
		default:
			// EAGAIN: none left; ECONNABORTED and the like: that one
			// went away.
			if err == unix.EAGAIN {
				return
			}
			continue
		}
		lis.accept(fd, sa)
	}
}

// Close stops accepting and closes the duplicate socket.
func (lis *Listener) Close() error {
	if lis.closed {
		return nil
	}
	lis.closed = true
	lis.l.Forget(lis.fd)
	return os.NewSyscallError("close", unix.Close(lis.fd))
}

func (lis *Listener) closeByLoop() { lis.Close() }
