package detect

import (
	"io"
	"net"
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
		{"POST", Opaque, false},
		{"M-SEARCH * HTTP/1.1", HTTP1, true},
		{Preface, HTTP2, true},
		{"PRI * HTTP/2.0\r\n", Opaque, false},
		{"PRI * HTTP/1.1\r\n", HTTP1, true}, // a method named PRI followed by a space
		{"PRIX", Opaque, false},
		{"\x16\x03\x01\x02\x00", TLS, true},
		{"\x16\x01", Opaque, true},
		{"\x00\x00\x00\x01", Opaque, true},
		{" GET", Opaque, true},
		{"SSH-2.0-OpenSSH\r\n", Opaque, true},
		{"ABCDEFGHIJKLMNOPQRSTUVWXYZ", Opaque, true},
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
	for _, s := range []string{"GET / HTTP/1.1\r\n", Preface, "\x16\x03\x01", "\x00", "PRI * HTTP/2", "OPTIONS * HTTP/1.1"} {
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
		// Undecided input is always a proper prefix of something still ambiguous, and short.
		if !done && len(b) > len(Preface)+maxMethod {
			t.Fatalf("undecided after %d bytes: %q", len(b), b)
		}
	})
}
