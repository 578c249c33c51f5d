package h1client

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"reflect"
	"testing"

	"github.com/meridian-mesh/meridian/proxy/httpproxy/internal/h1head"
)

// responseSeeds are heads parseResponseHead takes, and heads it must
// leave to http.ReadResponse (each near one of its rules).
var responseSeeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nDate: Fri, 04 Dec 2026 20:00:00 GMT\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 503\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel",
	"HTTP/1.1 200 OK\r\nset-cookie: a=1\r\nSet-Cookie: b=2\r\nX-Empty:\r\nX-Sp:  v  \r\nHost: h\r\nContent-Length: 1\r\n\r\nxHTTP/1.1",
	"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
	"HTTP/1.1 200 OK\r\n\r\nclose-delimited",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n",
	"HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nPragma: no-cache\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTrailer: X\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n",
	"HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n",
	"HTTP/1.1 100 Continue\r\n\r\n",
	"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
	"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1  200 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 +20 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 O\x01K\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\n folded\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX : y\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX: caf\xc3\xa9\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n",
}

// FuzzParseResponseHead holds parseResponseHead to http.ReadResponse:
// whatever it takes, ReadResponse takes too, with the same response (every
// field, the header map, the body's bytes and error) and the same bytes
// consumed.
func FuzzParseResponseHead(f *testing.F) {
	for _, s := range responseSeeds {
		f.Add([]byte(s), false)
	}
	f.Add([]byte(responseSeeds[0]), true)
	f.Fuzz(func(t *testing.T, in []byte, head bool) {
		if len(in) > 4096 { // what one bufio.Reader holds
			return
		}
		checkParseResponseHead(t, in, head)
	})
}

func checkParseResponseHead(t *testing.T, in []byte, head bool) (taken bool) {
	t.Helper()
	method := http.MethodGet
	if head {
		method = http.MethodHead
	}
	req, _ := http.NewRequest(method, "http://web.test/", nil)
	br := bufio.NewReader(bytes.NewReader(in))
	buf, _ := br.Peek(len(in))
	got := new(http.Response)
	n, ok := parseResponseHead(buf, br, req, got, new(h1head.Body), nil)
	if !ok {
		return false
	}
	br.Discard(n)
	wr := bufio.NewReader(bytes.NewReader(in))
	want, err := http.ReadResponse(wr, req)
	if err != nil {
		t.Fatalf("parseResponseHead took %q, http.ReadResponse refused it: %v", in, err)
	}
	if wn := len(in) - wr.Buffered(); n != wn {
		t.Fatalf("%q: head of %d bytes, ReadResponse's %d", in, n, wn)
	}
	gotBody, gotErr := io.ReadAll(got.Body)
	wantBody, wantErr := io.ReadAll(want.Body)
	if !bytes.Equal(gotBody, wantBody) || gotErr != wantErr {
		t.Fatalf("%q: body %q, %v; ReadResponse's %q, %v", in, gotBody, gotErr, wantBody, wantErr)
	}
	if (got.Body == http.NoBody) != (want.Body == http.NoBody) {
		t.Fatalf("%q: NoBody %v, ReadResponse's %v", in, got.Body == http.NoBody, want.Body == http.NoBody)
	}
	if br.Buffered() != wr.Buffered() {
		t.Fatalf("%q: %d bytes left after the body, ReadResponse's %d", in, br.Buffered(), wr.Buffered())
	}
	got.Body, want.Body = nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%q:\n got %+v\nwant %+v", in, got, want)
	}
	// The event loop's parse (ParseResponseHead), into a Header a larger
	// head filled before: the same fields, none of the last head's.
	var into h1head.Reuse
	var loop http.Response
	if _, ok := ParseResponseHead([]byte(reusedHead), req, &loop, &into); !ok {
		t.Fatal("ParseResponseHead refused the filler head")
	}
	ln, ok := ParseResponseHead(buf, req, &loop, &into)
	if !ok || ln != n || loop.Body != nil {
		t.Fatalf("%q: ParseResponseHead %d, %v, body %v; parseResponseHead's %d", in, ln, ok, loop.Body, n)
	}
	if !reflect.DeepEqual(loop.Header, want.Header) {
		t.Fatalf("%q: ParseResponseHead into a used Header: %v, ReadResponse's %v", in, loop.Header, want.Header)
	}
	return true
}

// reusedHead fills a Reuse before the head under test: more fields than
// most, some repeated.
const reusedHead = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nA: 1\r\nA: 2\r\nB: 3\r\nSet-Cookie: c\r\nSet-Cookie: d\r\nX-Y: z\r\nDate: d\r\nServer: s\r\nC: 4\r\n\r\n"

// TestParseResponseHeadSeeds runs the seeds and checks that the common
// heads take the fast path.
func TestParseResponseHeadSeeds(t *testing.T) {
	for _, s := range responseSeeds {
		checkParseResponseHead(t, []byte(s), false)
		if checkParseResponseHead(t, []byte(s), true) {
			t.Errorf("parseResponseHead took %q as the response to HEAD", s)
		}
	}
	// The first six, and the keep-alive heads of nginx and Node.js.
	fast := append(responseSeeds[:6:6], responseSeeds[11], responseSeeds[12])
	for _, s := range fast {
		if !checkParseResponseHead(t, []byte(s), false) {
			t.Errorf("parseResponseHead left %q to http.ReadResponse", s)
		}
	}
}

func BenchmarkParseResponseHead(b *testing.B) {
	in := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nDate: Fri, 04 Dec 2026 20:00:00 GMT\r\nContent-Length: 2\r\n\r\nok")
	req, _ := http.NewRequest(http.MethodGet, "http://web.test/", nil)
	b.Run("parseResponseHead", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var resp http.Response
			var body h1head.Body
			if _, ok := parseResponseHead(in, nil, req, &resp, &body, nil); !ok {
				b.Fatal("not parsed")
			}
		}
	})
	b.Run("ReadResponse", func(b *testing.B) {
		b.ReportAllocs()
		r := bytes.NewReader(in)
		br := bufio.NewReader(r)
		for b.Loop() {
			r.Reset(in)
			br.Reset(r)
			if _, err := http.ReadResponse(br, req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// On an event loop's connection the only allocation per response is the
// head's string: the Header and its values' slice are the Reuse's.
func TestParseResponseHeadReuseAllocs(t *testing.T) {
	in := []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\nDate: Mon, 07 Dec 2026 14:00:00 GMT\r\n\r\nok")
	req, _ := http.NewRequest(http.MethodGet, "http://web.test/", nil)
	var into h1head.Reuse
	var resp http.Response
	allocs := testing.AllocsPerRun(100, func() {
		if _, ok := ParseResponseHead(in, req, &resp, &into); !ok {
			t.Fatal("not parsed")
		}
	})
	if allocs != 1 {
		t.Errorf("%v allocations per head, want 1 (its string)", allocs)
	}
}
