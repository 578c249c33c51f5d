//go:build linux

// Command evloop is a measuring stick, not a product: the cheapest HTTP/1.1
// keep-alive reverse proxy Go can be, built the way nginx is (one thread,
// one epoll loop, non-blocking sockets, callbacks, no goroutine, no
// allocation per request), to tell how much of the gap between the
// gateway and nginx is the Go runtime and how much is the gateway's own
// request path (bench/README.md, "A Go event loop's ceiling").
//
// It forwards requests whose path starts with /api/ to its backends round
// robin over kept-alive upstream connections, appending X-Forwarded-For
// and X-Forwarded-Proto as the gateway does, and answers 404 otherwise.
// It knows only what the benchmark sends: requests and responses framed by
// Content-Length (a chunked request gets 501, a chunked response closes
// the connection); no TLS, no timeouts, upstream connections opened with a
// blocking connect.
//
//	evloop -listen 127.0.0.1:8080 -backends 127.0.0.1:9001,127.0.0.1:9002
package main

import (
	"bytes"
	"flag"
	"fmt"
	"log"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

type conn struct {
	fd       int
	upstream bool
	rbuf     []byte // bytes read and not yet consumed: rbuf[:rn]
	rn       int
	wpend    []byte // bytes still to write (EPOLLOUT armed while set)
	peer     *conn  // client: its upstream while a request is out; upstream: its client
	backend  int
	xff      []byte // client: its X-Forwarded-* lines
	reqBuf   []byte // upstream: the request being sent
	closed   bool
}

type proxy struct {
	ep       int
	ln       int
	conns    []*conn
	backends []unix.SockaddrInet4
	idle     [][]*conn // per backend
	next     int
}

var (
	notFound       = []byte("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
	notImplemented = []byte("HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
	crlf2          = []byte("\r\n\r\n")
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	backends := flag.String("backends", "", "comma-separated backend addresses (IPv4)")
	flag.Parse()
	runtime.LockOSThread()
	p := &proxy{}
	for _, b := range strings.Split(*backends, ",") {
		ap, err := netip.ParseAddrPort(b)
		if err != nil || !ap.Addr().Is4() {
			log.Fatalf("-backends: %q is not an IPv4 address and port", b)
		}
		p.backends = append(p.backends, unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()})
	}
	p.idle = make([][]*conn, len(p.backends))
	err := p.run(*listen) // serves until it fails
	fmt.Fprintln(os.Stderr, "evloop:", err)
	os.Exit(1)
}

func (p *proxy) run(listen string) error {
	ap, err := netip.ParseAddrPort(listen)
	if err != nil || !ap.Addr().Is4() {
		return fmt.Errorf("-listen: %q is not an IPv4 address and port", listen)
	}
	if p.ln, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0); err != nil {
		return err
	}
	unix.SetsockoptInt(p.ln, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.Bind(p.ln, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err != nil {
		return err
	}
	if err := unix.Listen(p.ln, 4096); err != nil {
		return err
	}
	if p.ep, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return err
	}
	if err := unix.EpollCtl(p.ep, unix.EPOLL_CTL_ADD, p.ln, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(p.ln)}); err != nil {
		return err
	}
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := epollWait(p.ep, events)
		if err == unix.EINTR {
			continue
		}
		if err != 0 {
			return err
		}
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			if fd == p.ln {
				p.accept()
				continue
			}
			c := p.conn(fd)
			if c == nil {
				continue
			}
			if ev.Events&unix.EPOLLOUT != 0 && len(c.wpend) > 0 {
				p.flush(c)
			}
			if ev.Events&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR) != 0 && p.conn(fd) == c {
				p.readable(c)
			}
		}
	}
}

// epollWait blocks in a raw system call too: the runtime takes the thread
// for a running goroutine (nothing else is there to run), so neither the
// waits nor the wake-ups go through the scheduler's system call hand-off.
// Its monitor's preemption signal every 10 ms ends a wait with EINTR.
func epollWait(ep int, events []unix.EpollEvent) (int, unix.Errno) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(ep), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), ^uintptr(0), 0, 0)
	return int(n), e
}

func (p *proxy) conn(fd int) *conn {
	if fd < len(p.conns) {
		return p.conns[fd]
	}
	return nil
}

func (p *proxy) add(c *conn) {
	for c.fd >= len(p.conns) {
		p.conns = append(p.conns, nil)
	}
	p.conns[c.fd] = c
	unix.EpollCtl(p.ep, unix.EPOLL_CTL_ADD, c.fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(c.fd)})
}

func (p *proxy) accept() {
	for {
		fd, sa, err := unix.Accept4(p.ln, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			return // EAGAIN, or a failure the next event retries
		}
		unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		c := &conn{fd: fd, rbuf: make([]byte, 16<<10)}
		if in4, ok := sa.(*unix.SockaddrInet4); ok {
			ip := netip.AddrFrom4(in4.Addr).String()
			c.xff = []byte("X-Forwarded-For: " + ip + "\r\nX-Forwarded-Proto: http\r\n")
		}
		p.add(c)
	}
}

// read and write are raw system calls: non-blocking, they never park the
// thread, so the runtime's entersyscall/exitsyscall bookkeeping is not
// needed (nginx's cost per call is the kernel's alone).
func read(fd int, b []byte) (int, unix.Errno) {
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	return int(n), e
}

func write(fd int, b []byte) (int, unix.Errno) {
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	return int(n), e
}

func (p *proxy) close(c *conn) {
	if p.conn(c.fd) != c {
		return
	}
	p.conns[c.fd] = nil
	c.closed = true
	unix.Close(c.fd)
	if c.peer != nil {
		peer := c.peer
		c.peer, peer.peer = nil, nil
		p.close(peer)
	}
}

func (p *proxy) readable(c *conn) {
	if c.rn == len(c.rbuf) {
		c.rbuf = append(c.rbuf, make([]byte, len(c.rbuf))...)
	}
	n, e := read(c.fd, c.rbuf[c.rn:])
	if e == unix.EAGAIN {
		return
	}
	if e != 0 || n == 0 {
		p.close(c)
		return
	}
	c.rn += n
	if c.upstream {
		p.response(c)
	} else {
		p.request(c)
	}
}

// send writes b, keeping what the socket did not take for EPOLLOUT.
func (p *proxy) send(c *conn, b []byte) bool {
	if len(c.wpend) > 0 {
		c.wpend = append(c.wpend, b...) // behind what is already waiting
		return true
	}
	for len(b) > 0 {
		n, e := write(c.fd, b)
		if e == unix.EAGAIN {
			c.wpend = append(c.wpend[:0], b...)
			unix.EpollCtl(p.ep, unix.EPOLL_CTL_MOD, c.fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT, Fd: int32(c.fd)})
			return true
		}
		if e != 0 {
			p.close(c)
			return false
		}
		b = b[n:]
	}
	return true
}

func (p *proxy) flush(c *conn) {
	b := c.wpend
	c.wpend = c.wpend[:0]
	unix.EpollCtl(p.ep, unix.EPOLL_CTL_MOD, c.fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(c.fd)})
	p.send(c, b)
}

// request forwards the client's next complete request, if one is in and
// none is out.
func (p *proxy) request(c *conn) {
	for c.peer == nil && c.rn > 0 {
		buf := c.rbuf[:c.rn]
		end := bytes.Index(buf, crlf2)
		if end < 0 {
			return
		}
		head := buf[:end+2] // through the last header line's CRLF
		sp := bytes.IndexByte(head, ' ')
		if sp < 0 {
			p.close(c)
			return
		}
		body, chunked, ok := framing(head)
		if !ok {
			p.close(c)
			return
		}
		if chunked {
			p.send(c, notImplemented)
			p.close(c)
			return
		}
		total := end + 4 + body
		if c.rn < total {
			return
		}
		if !bytes.HasPrefix(head[sp+1:], []byte("/api/")) {
			p.consume(c, total)
			if !p.send(c, notFound) {
				return
			}
			continue
		}
		up := p.upstream()
		if up == nil {
			p.close(c)
			return
		}
		up.reqBuf = append(append(append(append(up.reqBuf[:0], head...), c.xff...), "\r\n"...), buf[end+4:total]...)
		p.consume(c, total)
		c.peer, up.peer = up, c
		if !p.send(up, up.reqBuf) {
			return
		}
	}
}

func (p *proxy) consume(c *conn, n int) {
	copy(c.rbuf, c.rbuf[n:c.rn])
	c.rn -= n
}

// response passes a complete response to the client and returns the
// upstream connection to its pool.
func (p *proxy) response(up *conn) {
	buf := up.rbuf[:up.rn]
	end := bytes.Index(buf, crlf2)
	if end < 0 {
		return
	}
	body, chunked, ok := framing(buf[:end+2])
	if !ok || chunked {
		p.close(up)
		return
	}
	total := end + 4 + body
	if up.rn < total {
		return
	}
	c := up.peer
	if c == nil {
		p.close(up)
		return
	}
	c.peer, up.peer = nil, nil
	if !p.send(c, buf[:total]) {
		p.close(up)
		return
	}
	p.consume(up, total)
	p.idle[up.backend] = append(p.idle[up.backend], up)
	p.request(c) // a pipelined request may be waiting
}

// framing finds Content-Length and Transfer-Encoding in a head (from its
// second line).
func framing(head []byte) (body int, chunked, ok bool) {
	line := bytes.IndexByte(head, '\n')
	for line >= 0 && line+1 < len(head) {
		rest := head[line+1:]
		eol := bytes.IndexByte(rest, '\n')
		if eol < 0 {
			break
		}
		h := rest[:eol]
		if colon := bytes.IndexByte(h, ':'); colon > 0 {
			name, val := h[:colon], bytes.TrimSpace(h[colon+1:])
			switch {
			case len(name) == 14 && bytes.EqualFold(name, []byte("content-length")):
				n, err := strconv.Atoi(string(val))
				if err != nil || n < 0 {
					return 0, false, false
				}
				body = n
			case len(name) == 17 && bytes.EqualFold(name, []byte("transfer-encoding")):
				chunked = true
			}
		}
		line += 1 + eol
	}
	return body, chunked, true
}

// upstream takes an idle connection to the next backend, or opens one.
func (p *proxy) upstream() *conn {
	i := p.next
	p.next = (p.next + 1) % len(p.backends)
	for n := len(p.idle[i]); n > 0; n-- {
		up := p.idle[i][n-1]
		p.idle[i] = p.idle[i][:n-1]
		if !up.closed { // a backend may have closed it while idle
			return up
		}
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	if err := unix.Connect(fd, &p.backends[i]); err != nil {
		unix.Close(fd)
		return nil
	}
	unix.SetNonblock(fd, true)
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	up := &conn{fd: fd, upstream: true, backend: i, rbuf: make([]byte, 16<<10)}
	p.add(up)
	return up
}
