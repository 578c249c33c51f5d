package detect

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	cases := []struct {
		in   string
		want Protocol
		done bool
	}{
		{"GET / HTTP/1.1\r\n", HTTP1, true},
		{"GET / HTTP/1.1\n", HTTP1, true}, // a bare LF (RFC 9112 §2.2)
		{"GET / HTTP/1.0\r\n", HTTP1, true},
		{"GET / HTTP/1.1\r", Opaque, false},
		{"GET / HTTP/1.1", Opaque, false},
		{"GET / HTTP/1.", Opaque, false},
		{"GET /", Opaque, false},
		{"GET ", Opaque, false},
		{"GET / HTTP/1.1\rX", Opaque, true},
		{"GET / HTTP/2.0\r\n", Opaque, true},
		{"GET / HTTP/1.x\r\n", Opaque, true},
		{"GET  / HTTP/1.1\r\n", Opaque, true}, // no target
		{"GET /\r\n", Opaque, true},           // HTTP/0.9: Go does not serve it
		{"GET /a\tb HTTP/1.1\r\n", Opaque, true},
		{"OPTIONS * HTTP/1.1\r\n", HTTP1, true},
		{"CONNECT example.com:443 HTTP/1.1\r\n", HTTP1, true},
		{"GET http://example.com/a?b=c HTTP/1.1\r\n", HTTP1, true},
		{"PROPFIND /dav/ HTTP/1.1\r\n", HTTP1, true},
		{"POST", Opaque, false},
		{"M-SEARCH * HTTP/1.1\r\n", HTTP1, true},
		{Preface, HTTP2, true},
		{"PRI * HTTP/2.0\r\n", Opaque, false},
		{"PRI * HTTP/1.1\r\n", HTTP1, true}, // a method named PRI
		{"PRIX", Opaque, false},
		{"\x16\x03\x01\x02\x00", TLS, true},
		{"\x16\x01", Opaque, true},
		{"\x00\x00\x00\x01", Opaque, true},
		{" GET", Opaque, true},
		{"SSH-2.0-OpenSSH\r\n", Opaque, true},
		{"ABCDEFGHIJKLMNOPQRSTUVWXYZ", Opaque, true},
		// Text protocols a client speaks first: never HTTP/1.
		{"set k 0 0 5\r\nhello\r\n", Opaque, true}, // memcached
		{"set k 0 0 5", Opaque, true},
		{"get k\r\n", Opaque, true},
		{"get k", Opaque, false},         // could still be "get k HTTP/1.1"
		{"NICK alice\r\n", Opaque, true}, // IRC
		{"PING\r\n", Opaque, true},       // Redis inline
		{"SET k v\r\n", Opaque, true},
		{"EHLO client.example.com\r\n", Opaque, true}, // SMTP
		{"MAIL FROM:<a@example.com>\r\n", Opaque, true},
		{"A001 LOGIN alice secret\r\n", Opaque, true}, // IMAP
		{"*1\r\n$4\r\nPING\r\n", Opaque, true},        // RESP
		{"", Opaque, false},
	}
	for _, c := range cases {
		p, done := Classify([]byte(c.in))
		if p != c.want || done != c.done {
			t.Errorf("Classify(%q) = %v,%v; want %v,%v", c.in, p, done, c.want, c.done)
		}
	}
}

// pipe returns a connected pair over real loopback TCP so deadlines behave as in production.
func pipe(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestDetectReplaysBytes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		chunks []string
		want   Protocol
	}{
		{"http1", []string{"GET / HTTP/1.1\r\nHost: a\r\n\r\n"}, HTTP1},
		{"http1-split-method", []string{"DEL", "ETE /x HTTP/1.1\r\n\r\n"}, HTTP1},
		{"h2-split-preface", []string{"PRI * HTTP", "/2.0\r\n\r\nSM\r\n\r\n\x00\x00"}, HTTP2},
		{"opaque", []string{"\x00\x01binary"}, Opaque},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := pipe(t)
			go func() {
				for _, c := range tc.chunks {
					client.Write([]byte(c))
					time.Sleep(5 * time.Millisecond)
				}
				client.(*net.TCPConn).CloseWrite()
			}()
			p, conn, err := Detect(server, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if p != tc.want {
				t.Fatalf("got %v, want %v", p, tc.want)
			}
			all, err := io.ReadAll(conn)
			if err != nil {
				t.Fatal(err)
			}
			var want string
			for _, c := range tc.chunks {
				want += c
			}
			if string(all) != want {
				t.Fatalf("replayed %q, want %q", all, want)
			}
		})
	}
}

// A server-speaks-first protocol sends nothing: detection gives up after the
// timeout and the connection is treated as opaque, still usable.
func TestDetectTimeoutIsOpaque(t *testing.T) {
	client, server := pipe(t)
	p, conn, err := Detect(server, 50*time.Millisecond)
	if err != nil || p != Opaque {
		t.Fatalf("got %v, %v; want opaque", p, err)
	}
	// The deadline must have been cleared: a later write is readable.
	go client.Write([]byte("late"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "late" {
		t.Fatalf("read after detect: %q %v", buf, err)
	}
}

// A connection silent at the timeout says so, and once its peer speaks,
// Wait returns and Resume detects what it sent, replayed whole. Bytes or
// a close are not silence.
func TestDetectSilentThenResume(t *testing.T) {
	client, server := pipe(t)
	p, conn, err := Detect(server, 50*time.Millisecond)
	if err != nil || p != Opaque || !conn.Silent() {
		t.Fatalf("got %v, %v, silent %v; want opaque and silent", p, err, conn.Silent())
	}
	const req = "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
	go func() {
		time.Sleep(100 * time.Millisecond)
		client.Write([]byte(req[:5]))
		time.Sleep(20 * time.Millisecond)
		client.Write([]byte(req[5:]))
	}()
	if err := conn.Wait(); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	p, err = conn.Resume(time.Second, time.Now().Add(time.Second))
	if err != nil || p != HTTP1 || conn.Silent() {
		t.Fatalf("Resume: %v, %v, silent %v; want http/1", p, err, conn.Silent())
	}
	buf := make([]byte, len(req))
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != req {
		t.Fatalf("replayed %q, %v", buf, err)
	}

	client, server = pipe(t)
	client.Write([]byte("\x00"))
	if _, conn, _ := Detect(server, 50*time.Millisecond); conn.Silent() {
		t.Error("a connection that sent a byte is silent")
	}
	client, server = pipe(t)
	client.Close()
	if _, conn, _ := Detect(server, time.Second); conn.Silent() {
		t.Error("a connection closed before its first byte is silent")
	}
}

func TestDetectEarlyClose(t *testing.T) {
	client, server := pipe(t)
	client.Write([]byte("GE"))
	client.Close()
	p, conn, err := Detect(server, time.Second)
	if err != nil || p != Opaque {
		t.Fatalf("got %v, %v; want opaque", p, err)
	}
	b, _ := io.ReadAll(conn)
	if string(b) != "GE" {
		t.Fatalf("replayed %q", b)
	}
}

func FuzzClassify(f *testing.F) {
	for _, s := range []string{"GET / HTTP/1.1\r\n", Preface, "\x16\x03\x01", "\x00", "PRI * HTTP/2", "OPTIONS * HTTP/1.1",
		"set k 0 0 5\r\n", "NICK alice\r\n", "PING\r\n", "GET / HTTP/1.1\n", "CONNECT a:443 HTTP/1.0\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, done := Classify(b)
		// Monotonic: once decided, more bytes never change the answer.
		if done {
			q, done2 := Classify(append(append([]byte{}, b...), 'x', ' '))
			if !done2 || q != p {
				t.Fatalf("Classify(%q)=%v,done; extended gives %v,%v", b, p, q, done2)
			}
		}
		// A decided HTTP/2 always carries the full preface.
		if p == HTTP2 && string(b[:len(Preface)]) != Preface {
			t.Fatalf("h2 without preface: %q", b)
		}
		// A decided HTTP/1 is a complete request line, or a long one.
		if p == HTTP1 && bytes.IndexByte(b, '\n') < 0 && len(b) < MaxRequestLine {
			t.Fatalf("http/1 without a line end: %q", b)
		}
		// Undecided input is bounded by the buffer detection peeks into.
		if !done && len(b) >= bufSize {
			t.Fatalf("undecided after %d bytes: %q", len(b), b)
		}
	})
}

// A request line longer than MaxRequestLine is HTTP/1 for a known method
// and an origin- or absolute-form target, opaque otherwise.
func TestClassifyLongLine(t *testing.T) {
	long := strings.Repeat("a", MaxRequestLine)
	for _, c := range []struct {
		in   string
		want Protocol
	}{
		{"GET /" + long, HTTP1},
		{"POST http://example.com/" + long, HTTP1},
		{"FOO /" + long, Opaque},
		{"GET " + long, Opaque},
		{"GET /" + long[:MaxRequestLine-20] + " HTTP/1.1\r\n", HTTP1}, // decided by its version
	} {
		p, done := Classify([]byte(c.in))
		if !done || p != c.want {
			t.Errorf("Classify(%.20q... %d bytes) = %v,%v; want %v,true", c.in, len(c.in), p, done, c.want)
		}
	}
}

// A client that trickles its request line byte by byte is still HTTP/1
// when the line completes within the timeout.
func TestDetectTrickledRequestLine(t *testing.T) {
	client, server := pipe(t)
	const line = "GET /path HTTP/1.1\r\nHost: a\r\n\r\n"
	go func() {
		for i := range len(line) {
			if _, err := client.Write([]byte{line[i]}); err != nil {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	p, conn, err := Detect(server, 10*time.Second)
	if err != nil || p != HTTP1 {
		t.Fatalf("got %v, %v; want http/1", p, err)
	}
	got := make([]byte, len("GET /path HTTP/1.1\r\n"))
	if _, err := io.ReadFull(conn, got); err != nil || string(got) != line[:len(got)] {
		t.Fatalf("replayed %q, %v", got, err)
	}
}

// A partial request line at the detection timeout waits for the header
// deadline; a line that then completes is HTTP/1, one that does not is
// ErrIncomplete. Silence is still opaque at the detection timeout.
func TestDetectUntilLineDeadline(t *testing.T) {
	t.Run("completes", func(t *testing.T) {
		client, server := pipe(t)
		client.Write([]byte("GET /slow HT"))
		done := make(chan struct{})
		go func() {
			defer close(done)
			// Sent once detection has given up on its first timeout.
			buf := make([]byte, 1)
			client.SetReadDeadline(time.Now().Add(10 * time.Second))
			client.Read(buf) // the server writes one byte when it has
			client.Write([]byte("TP/1.1\r\n\r\n"))
		}()
		srv := &signalConn{Conn: server, onTimeout: func() { server.Write([]byte{'!'}) }}
		p, _, err := DetectUntil(srv, 20*time.Millisecond, time.Now().Add(10*time.Second))
		<-done
		if err != nil || p != HTTP1 {
			t.Fatalf("got %v, %v; want http/1", p, err)
		}
	})
	t.Run("incomplete", func(t *testing.T) {
		client, server := pipe(t)
		client.Write([]byte("GET /slow HT"))
		p, _, err := DetectUntil(server, 20*time.Millisecond, time.Now().Add(100*time.Millisecond))
		if !errors.Is(err, ErrIncomplete) || p != Opaque {
			t.Fatalf("got %v, %v; want ErrIncomplete", p, err)
		}
	})
	t.Run("silent", func(t *testing.T) {
		_, server := pipe(t)
		p, _, err := DetectUntil(server, 20*time.Millisecond, time.Now().Add(10*time.Second))
		if err != nil || p != Opaque {
			t.Fatalf("got %v, %v; want opaque", p, err)
		}
	})
}

// signalConn calls onTimeout the first time a read hits its deadline.
type signalConn struct {
	net.Conn
	onTimeout func()
	once      bool
}

func (c *signalConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if errors.Is(err, os.ErrDeadlineExceeded) && !c.once {
		c.once = true
		c.onTimeout()
	}
	return n, err
}
