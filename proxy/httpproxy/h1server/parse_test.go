package h1server

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"reflect"
	"testing"
)

// parseSeeds are heads parseHead takes, and heads it must leave to
// http.ReadRequest (each near one of its rules).
var parseSeeds = []string{
	"GET / HTTP/1.1\r\nHost: web.test\r\n\r\n",
	"GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: web.test\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n",
	"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
	"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhel",
	"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 007\r\n\r\n1234567GET",
	"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
	"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
	"GET / HTTP/1.0\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
	"GET / HTTP/1.1\r\nhost: h\r\nx-lower: 1\r\nX-DUP: a\r\nx-dup: b\r\nEmpty:\r\nSp:   v   \r\nTab:\tv\t\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: \r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
	"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\nx",
	"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: \r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nPragma: no-cache\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nTrailer: X\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",
	"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
	"GET / HTTP/1.1\r\n: empty name\r\n\r\n",
	"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
	"GET / HTTP/1.1\r\nX: caf\xc3\xa9\r\n\r\n",
	"GET / HTTP/1.1\r\nX: a\nb\r\n\r\n",
	"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
	"GET / HTTP/1.1\n\r\n\r\n",
	"GET / HTTP/1.1\r\n\nX: y\r\n\r\n",
	"GET  / HTTP/1.1\r\n\r\n",
	"GET / HTTP/1.1 \r\n\r\n",
	"GET /a b HTTP/1.1\r\n\r\n",
	"GET / HTTP/1.2\r\n\r\n",
	"GET / HTTP/2.0\r\n\r\n",
	"get / HTTP/1.1\r\n\r\n",
	"G(T / HTTP/1.1\r\n\r\n",
	"GET http://h/ HTTP/1.1\r\n\r\n",
	"GET * HTTP/1.1\r\n\r\n",
	"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
	"CONNECT /rpc HTTP/1.1\r\n\r\n",
	"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	"OPTIONS /%zz HTTP/1.1\r\n\r\n",
	"GET //double HTTP/1.1\r\n\r\n",
	"GET /a%2Fb HTTP/1.1\r\n\r\n",
	"GET /? HTTP/1.1\r\n\r\n",
	"\r\nGET / HTTP/1.1\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\n",
	"PURGE /cache HTTP/1.1\r\nHost: h\r\n\r\n",
	// Targets for parseTarget: a query's '?'s, and paths it leaves to
	// url.ParseRequestURI.
	"GET /a?? HTTP/1.1\r\n\r\n",
	"GET /a?b? HTTP/1.1\r\n\r\n",
	"GET /a?b#c HTTP/1.1\r\n\r\n",
	"GET /a#f HTTP/1.1\r\n\r\n",
	"GET /a!b*(c)'d HTTP/1.1\r\n\r\n",
	"GET /~u/x.y-z_w;p=1,2@h:8$&+ HTTP/1.1\r\n\r\n",
	"GET /a/./b/../%7e HTTP/1.1\r\n\r\n",
}

// FuzzParseHead holds parseHead to http.ReadRequest: whatever parseHead
// takes, ReadRequest takes too, with the same request (every field, the
// header map, the body's bytes and error) and the same bytes consumed.
func FuzzParseHead(f *testing.F) {
	for _, s := range parseSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 4096 { // what one bufio.Reader holds
			return
		}
		checkParseHead(t, in)
	})
}

func checkParseHead(t *testing.T, in []byte) (taken bool) {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(in))
	buf, _ := br.Peek(len(in))
	got := new(http.Request)
	n, ok := parseHead(buf, br, got, nil)
	if !ok {
		return false
	}
	br.Discard(n)
	wr := bufio.NewReader(bytes.NewReader(in))
	want, err := http.ReadRequest(wr)
	if err != nil {
		t.Fatalf("parseHead took %q, http.ReadRequest refused it: %v", in, err)
	}
	if wn := len(in) - wr.Buffered(); n != wn {
		t.Fatalf("%q: head of %d bytes, ReadRequest's %d", in, n, wn)
	}
	gotBody, gotErr := io.ReadAll(got.Body)
	wantBody, wantErr := io.ReadAll(want.Body)
	if !bytes.Equal(gotBody, wantBody) || gotErr != wantErr {
		t.Fatalf("%q: body %q, %v; ReadRequest's %q, %v", in, gotBody, gotErr, wantBody, wantErr)
	}
	if (got.Body == http.NoBody) != (want.Body == http.NoBody) {
		t.Fatalf("%q: NoBody %v, ReadRequest's %v", in, got.Body == http.NoBody, want.Body == http.NoBody)
	}
	if br.Buffered() != wr.Buffered() {
		t.Fatalf("%q: %d bytes left after the body, ReadRequest's %d", in, br.Buffered(), wr.Buffered())
	}
	got.Body, want.Body = nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%q:\n got %+v\nwant %+v\n(URL %+v, %+v)", in, got, want, got.URL, want.URL)
	}
	// The event loop's parse (ParseHead), into a Header a larger head
	// filled before: the same fields, none of the last head's, and a
	// body it does not read but does not call none.
	var into Reuse
	var loop http.Request
	if _, ok := ParseHead([]byte(reusedHead), &loop, &into); !ok {
		t.Fatal("ParseHead refused the filler head")
	}
	ln, ok := ParseHead(buf, &loop, &into)
	if !ok || ln != n {
		t.Fatalf("%q: ParseHead %d, %v; parseHead's %d", in, ln, ok, n)
	}
	if (loop.Body == http.NoBody) != (want.ContentLength == 0) {
		t.Fatalf("%q: ParseHead's NoBody %v with Content-Length %d", in, loop.Body == http.NoBody, want.ContentLength)
	}
	if !reflect.DeepEqual(loop.Header, want.Header) {
		t.Fatalf("%q: ParseHead into a used Header: %v, ReadRequest's %v", in, loop.Header, want.Header)
	}
	if !reflect.DeepEqual(loop.URL, want.URL) {
		t.Fatalf("%q: ParseHead into a used URL: %+v, ReadRequest's %+v", in, loop.URL, want.URL)
	}
	return true
}

// reusedHead fills a Reuse before the head under test: more fields than
// most, some repeated, and a query.
const reusedHead = "GET /r?q=1 HTTP/1.1\r\nHost: a\r\nA: 1\r\nA: 2\r\nB: 3\r\nCookie: c\r\nX-Y: z\r\nAccept: */*\r\nUser-Agent: u\r\nC: 4\r\nD: 5\r\n\r\n"

// TestParseHeadSeeds runs the seeds (the fuzz target does too) and checks
// that the common heads take the fast path.
func TestParseHeadSeeds(t *testing.T) {
	taken := 0
	for _, s := range parseSeeds {
		if checkParseHead(t, []byte(s)) {
			taken++
		}
	}
	for _, s := range parseSeeds[:9] {
		if !checkParseHead(t, []byte(s)) {
			t.Errorf("parseHead left %q to http.ReadRequest", s)
		}
	}
	t.Logf("%d of %d seeds parsed in place", taken, len(parseSeeds))
}

func BenchmarkParseHead(b *testing.B) {
	in := []byte("GET /a/b?x=1 HTTP/1.1\r\nHost: web.test\r\nUser-Agent: bench\r\nAccept: */*\r\nX-Request-Id: 1234\r\n\r\n")
	b.Run("parseHead", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var req http.Request
			if _, ok := parseHead(in, nil, &req, nil); !ok {
				b.Fatal("not parsed")
			}
		}
	})
	b.Run("ReadRequest", func(b *testing.B) {
		b.ReportAllocs()
		r := bytes.NewReader(in)
		br := bufio.NewReader(r)
		for b.Loop() {
			r.Reset(in)
			br.Reset(r)
			if _, err := http.ReadRequest(br); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// On an event loop's connection the only allocation per request is the
// head's string: the Header, its values' slice and the URL are the
// Reuse's, and the body's reader is none.
func TestParseHeadReuseAllocs(t *testing.T) {
	heads := [][]byte{
		[]byte("GET /a/b?x=1 HTTP/1.1\r\nHost: web.test\r\nUser-Agent: bench\r\nAccept: */*\r\nX-Request-Id: 1234\r\n\r\n"),
		[]byte("POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"),
	}
	var into Reuse
	var req http.Request
	for _, in := range heads {
		allocs := testing.AllocsPerRun(100, func() {
			if _, ok := ParseHead(in, &req, &into); !ok {
				t.Fatalf("%q not parsed", in)
			}
		})
		if allocs != 1 {
			t.Errorf("%q: %v allocations per head, want 1 (its string)", in, allocs)
		}
	}
}
