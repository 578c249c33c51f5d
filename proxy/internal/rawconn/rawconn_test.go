//go:build linux

package rawconn

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// pair returns a loopback connection's two ends, the accepted one wrapped
// if wrapAccepted and the dialled one if wrapDialled.
func pair(t *testing.T, wrapAccepted, wrapDialled bool) (accepted, dialled net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var l net.Listener = ln
	if wrapAccepted {
		l = Listener{ln}
	}
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() { c, err := l.Accept(); ch <- res{c, err} }()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	if wrapDialled {
		d = Wrap(d)
	}
	t.Cleanup(func() { r.c.Close(); d.Close() })
	return r.c, d
}

func TestWrapsTCPOnly(t *testing.T) {
	if disabled {
		t.Skip("MERIDIAN_RAW_IO=0 turns the raw path off")
	}
	a, _ := pair(t, true, false)
	if _, ok := a.(*Conn); !ok {
		t.Fatalf("accepted %T, want *rawconn.Conn", a)
	}
	if u := a.(interface{ Unwrap() net.Conn }).Unwrap(); u == nil {
		t.Fatal("no *net.TCPConn beneath")
	} else if _, ok := u.(*net.TCPConn); !ok {
		t.Fatalf("Unwrap gives %T", u)
	}
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	if Wrap(p1) != p1 {
		t.Fatal("a connection that is not TCP was wrapped")
	}
}

// Bytes both ways, more than the sockets buffer (writes that would block
// wait for room and resume where they were), with reads of every size.
func TestStreamsBothWays(t *testing.T) {
	a, d := pair(t, true, true)
	const size = 8 << 20
	want := make([]byte, size)
	rand.Read(want)
	var wg sync.WaitGroup
	for _, dir := range []struct{ w, r net.Conn }{{a, d}, {d, a}} {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for off := 0; off < size; {
				n := min(size-off, 1+off%100000)
				k, err := dir.w.Write(want[off : off+n])
				if err != nil || k != n {
					t.Errorf("write %d at %d: %d, %v", n, off, k, err)
					return
				}
				off += n
			}
		}()
		go func() {
			defer wg.Done()
			got := make([]byte, 0, size)
			buf := make([]byte, 7919)
			for len(got) < size {
				n, err := dir.r.Read(buf[:1+len(got)%len(buf)])
				got = append(got, buf[:n]...)
				if err != nil {
					t.Errorf("read after %d bytes: %v", len(got), err)
					return
				}
			}
			if !bytes.Equal(got, want) {
				t.Error("bytes differ")
			}
		}()
	}
	wg.Wait()
	if n, err := a.Read(nil); n != 0 || err != nil {
		t.Fatalf("zero-length read: %d, %v", n, err)
	}
	if n, err := a.Write(nil); n != 0 || err != nil {
		t.Fatalf("zero-length write: %d, %v", n, err)
	}
}

// The errors are net's: EOF after the peer's close (and half-close), a
// deadline's timeout, net.ErrClosed for a connection closed under a
// blocked read, a reset's ECONNRESET.
func TestErrorsAsNets(t *testing.T) {
	t.Run("eof after half-close", func(t *testing.T) {
		a, d := pair(t, true, true)
		d.Write([]byte("x"))
		if err := d.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(a)
		if err != nil || string(b) != "x" {
			t.Fatalf("ReadAll: %q, %v", b, err)
		}
		if _, err := a.Write([]byte("still open")); err != nil {
			t.Fatalf("write after the peer's half-close: %v", err)
		}
		buf := make([]byte, 16)
		if n, err := io.ReadFull(d, buf[:10]); err != nil || string(buf[:n]) != "still open" {
			t.Fatalf("half-closed side reads %q, %v", buf[:n], err)
		}
	})
	t.Run("read deadline", func(t *testing.T) {
		a, _ := pair(t, true, true)
		a.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := a.Read(make([]byte, 1))
		var ne net.Error
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("read past the deadline: %v, want a timeout", err)
		}
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "read" || oe.Net != "tcp" || oe.Addr == nil {
			t.Fatalf("error %#v, want net's *OpError for read", err)
		}
		a.SetReadDeadline(time.Time{})
	})
	t.Run("write deadline", func(t *testing.T) {
		a, _ := pair(t, true, true) // the peer never reads
		a.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		buf := make([]byte, 1<<20)
		var total int
		var err error
		for i := 0; i < 1000 && err == nil; i++ {
			var n int
			n, err = a.Write(buf)
			total += n
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("writing %d bytes to a peer that does not read: %v, want the deadline", total, err)
		}
	})
	t.Run("closed under a read", func(t *testing.T) {
		a, _ := pair(t, true, true)
		errc := make(chan error, 1)
		go func() { _, err := a.Read(make([]byte, 1)); errc <- err }()
		time.Sleep(20 * time.Millisecond)
		a.Close()
		if err := <-errc; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read on a closed connection: %v, want net.ErrClosed", err)
		}
		if _, err := a.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("write on a closed connection: %v, want net.ErrClosed", err)
		}
	})
	t.Run("reset", func(t *testing.T) {
		a, d := pair(t, true, true)
		d.(*Conn).SetLinger(0) // close sends RST
		d.Close()
		_, err := a.Read(make([]byte, 1))
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("read after the peer's reset: %v, want ECONNRESET", err)
		}
	})
}

// Reads and writes of one connection from two goroutines at once, as a
// proxy's two directions do.
func TestConcurrentReadWrite(t *testing.T) {
	a, d := pair(t, true, true)
	var wg sync.WaitGroup
	echo := func(c net.Conn) {
		defer wg.Done()
		// Only Read and Write: io.Copy would take (*net.TCPConn)'s
		// WriteTo, which reads beside the raw path.
		io.Copy(struct{ io.Writer }{c}, struct{ io.Reader }{c})
		c.(interface{ CloseWrite() error }).CloseWrite()
	}
	wg.Add(1)
	go echo(a)
	msg := bytes.Repeat([]byte("0123456789"), 1000)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 100 {
			d.Write(msg)
		}
		d.(interface{ CloseWrite() error }).CloseWrite()
	}()
	n, err := io.Copy(io.Discard, struct{ io.Reader }{d})
	wg.Wait()
	if err != nil || n != int64(100*len(msg)) {
		t.Fatalf("echoed %d bytes, %v; want %d", n, err, 100*len(msg))
	}
}

// Writes from several goroutines at once, as net.Conn allows (a relay
// beside a transport's writer): each arrives whole, none is lost or
// written twice.
func TestConcurrentWriters(t *testing.T) {
	a, d := pair(t, true, true)
	const writers, each = 8, 200
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A record: its writer and number, then 100 bytes of the writer's letter.
			for i := range each {
				rec := fmt.Appendf(nil, "%d %04d ", w, i)
				rec = append(rec, bytes.Repeat([]byte{byte('a' + w)}, 100)...)
				if _, err := d.Write(rec); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	go func() { wg.Wait(); d.(interface{ CloseWrite() error }).CloseWrite() }()
	got, err := io.ReadAll(struct{ io.Reader }{a})
	if err != nil {
		t.Fatal(err)
	}
	const size = 107
	if len(got) != writers*each*size {
		t.Fatalf("read %d bytes, want %d", len(got), writers*each*size)
	}
	next := make([]int, writers)
	for off := 0; off < len(got); off += size {
		rec := got[off : off+size]
		var w, i int
		if _, err := fmt.Sscanf(string(rec[:7]), "%d %04d", &w, &i); err != nil || w < 0 || w >= writers {
			t.Fatalf("record at %d: %q", off, rec)
		}
		if i != next[w] || !bytes.Equal(rec[7:], bytes.Repeat([]byte{byte('a' + w)}, 100)) {
			t.Fatalf("record at %d: %q, want writer %d's record %d whole", off, rec, w, next[w])
		}
		next[w]++
	}
}

// WriteRead: the request goes whole and the answer comes back, many times
// in a row with the answer made at once (none waits for an answer that
// came before the wait); a request more than the socket buffers hold
// (the write waits for room, then the read for the answer); a read
// deadline gone before it still lets the write go, both deadlines gone
// send nothing; a reset peer's error names the write or the read, never a
// success.
func TestWriteRead(t *testing.T) {
	if disabled {
		t.Skip("MERIDIAN_RAW_IO=0 turns the raw path off")
	}
	a, d := pair(t, false, true)
	c := d.(*Conn)
	go func() {
		// An echo of each request's length, as soon as it is whole.
		var hdr [4]byte
		for {
			if _, err := io.ReadFull(a, hdr[:]); err != nil {
				return
			}
			n := int(hdr[0])<<24 | int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3])
			if _, err := io.CopyN(io.Discard, a, int64(n)); err != nil {
				return
			}
			if _, err := fmt.Fprintf(a, "%08d", n); err != nil {
				return
			}
		}
	}()
	req := func(n int) []byte {
		b := make([]byte, 4+n)
		b[0], b[1], b[2], b[3] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
		return b
	}
	buf := make([]byte, 64)
	small := req(100)
	for i := range 5000 {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.WriteRead(small, buf)
		if err != nil {
			t.Fatalf("exchange %d: %v", i, err)
		}
		got := string(buf[:n])
		for len(got) < 8 && err == nil {
			n, err = c.Read(buf)
			got += string(buf[:n])
		}
		if got != "00000100" {
			t.Fatalf("exchange %d: answer %q, want 00000100", i, got)
		}
	}
	big := req(8 << 20)
	n, err := c.WriteRead(big, buf)
	if err != nil {
		t.Fatalf("8 MiB request: %v", err)
	}
	got := string(buf[:n])
	for len(got) < 8 && err == nil {
		n, err = c.Read(buf)
		got += string(buf[:n])
	}
	if got != fmt.Sprintf("%08d", 8<<20) {
		t.Fatalf("8 MiB request: answer %q", got)
	}

	c.SetReadDeadline(time.Now().Add(-time.Second))
	var oe *net.OpError
	if _, err := c.WriteRead(small, buf); !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("after the read deadline: %v, want the read's timeout", err)
	}
	// The request went all the same, as Write then Read would send it:
	// its answer comes, then the next exchange's.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err = "", nil
	for n, err = c.WriteRead(small, buf); err == nil; n, err = c.Read(buf) {
		if got += string(buf[:n]); len(got) >= 16 {
			break
		}
	}
	if got != "0000010000000100" {
		t.Fatalf("after a timeout: answers %q, %v", got, err)
	}
	// Both deadlines gone: a write error, nothing sent.
	c.SetDeadline(time.Now().Add(-time.Second))
	if _, err := c.WriteRead(small, buf); !errors.As(err, &oe) || oe.Op != "write" || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("after both deadlines: %v, want the write's timeout", err)
	}
	c.SetDeadline(time.Time{})

	a.(*net.TCPConn).SetLinger(0)
	a.Close() // a reset
	time.Sleep(20 * time.Millisecond)
	if _, err := c.WriteRead(small, buf); !errors.As(err, &oe) || !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("to a reset peer: %v, want ECONNRESET or EPIPE", err)
	}
	if oe.Op != "write" && oe.Op != "read" {
		t.Errorf("the error's Op is %q", oe.Op)
	}
}
