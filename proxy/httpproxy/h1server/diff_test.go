package h1server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// testHandler is served by both servers in the differential test; the
// request's path picks what it does.
func testHandler(w http.ResponseWriter, r *http.Request) {
	switch strings.TrimPrefix(r.URL.Path, "/") {
	case "hello":
		io.WriteString(w, "hello")
	case "html":
		io.WriteString(w, "<html><body>hi</body></html>")
	case "big":
		for i := 0; i < 50; i++ {
			fmt.Fprintf(w, "%0100d", i)
		}
	case "copy":
		io.Copy(w, strings.NewReader(strings.Repeat("0123456789", 700)))
	case "copylen":
		w.Header().Set("Content-Length", "7000")
		io.Copy(w, strings.NewReader(strings.Repeat("0123456789", 700)))
	case "flush":
		io.WriteString(w, "one")
		w.(http.Flusher).Flush()
		io.WriteString(w, "two")
	case "echo":
		b, err := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%q %v %q", b, err, r.Trailer)
	case "headers":
		keys := make([]string, 0, len(r.Header))
		for k := range r.Header {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		fmt.Fprintf(w, "%s %q %q %s cl=%d te=%q close=%v url=%q\n", r.Method, r.RequestURI, r.Host, r.Proto, r.ContentLength, r.TransferEncoding, r.Close, r.URL.String())
		for _, k := range keys {
			fmt.Fprintf(w, "%s=%q\n", k, r.Header[k])
		}
	case "noread":
		io.WriteString(w, "ignored the body")
	case "readsome":
		io.ReadFull(r.Body, make([]byte, 3))
		io.WriteString(w, "read 3")
	case "closebody":
		r.Body.Close()
		io.WriteString(w, "closed")
	case "trailer":
		w.Header().Set("Trailer", "X-Sum, X-Bad, Content-Length")
		io.WriteString(w, "body")
		w.Header().Set("X-Sum", "42")
		w.Header().Set("X-Bad", "no")
	case "trailerprefix":
		io.WriteString(w, "body")
		w.(http.Flusher).Flush()
		w.Header().Set(http.TrailerPrefix+"X-Late", "yes")
	case "204":
		w.Header().Set("Content-Length", "10")
		w.WriteHeader(204)
		io.WriteString(w, "x")
	case "304":
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", "10")
		w.WriteHeader(304)
	case "103":
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(103)
		io.WriteString(w, "after early hints")
	case "999":
		w.WriteHeader(999)
	case "shortcl":
		w.Header().Set("Content-Length", "10")
		io.WriteString(w, "short")
	case "close":
		w.Header().Set("Connection", "close")
		io.WriteString(w, "bye")
	case "keepalive10":
		w.Header().Set("Content-Length", "2")
		w.Header().Set("Connection", "keep-alive")
		io.WriteString(w, "ok")
	case "identity":
		w.Header().Set("Transfer-Encoding", "identity")
		io.WriteString(w, "until close")
	case "tecl":
		w.Header().Set("Transfer-Encoding", "chunked")
		w.Header().Set("Content-Length", "3")
		io.WriteString(w, "abc")
	case "badcl":
		w.Header().Set("Content-Length", "x")
		io.WriteString(w, "abc")
	case "panic":
		panic("boom")
	case "abort":
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	case "typeset":
		w.Header().Set("Content-Type", "application/x-thing")
		io.WriteString(w, "<html>")
	case "encoded":
		w.Header().Set("Content-Encoding", "gzip")
		io.WriteString(w, "<html>")
	case "date":
		w.Header().Set("Date", "Thu, 01 Jan 1970 00:00:00 GMT")
		io.WriteString(w, "dated")
	case "headafter":
		io.WriteString(w, "x")
		w.Header().Set("X-After", "1")
		w.WriteHeader(500)
	case "empty":
	case "status500":
		http.Error(w, "oops", 500)
	case "fullduplex":
		http.NewResponseController(w).EnableFullDuplex()
		io.WriteString(w, "fd")
	case "readafter":
		go func(b io.Reader) {}(r.Body)
		io.WriteString(w, "x")
	default:
		http.NotFound(w, r)
	}
}

var dateRe = regexp.MustCompile(`Date: [A-Za-z]{3}, \d\d [A-Za-z]{3} \d{4} \d\d:\d\d:\d\d GMT\r\n`)

// exchange sends raw on a new connection to addr, half-closes, and
// returns everything read until the server closes (or 3 s).
func exchange(t *testing.T, addr, raw string, halfClose bool) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	if halfClose {
		c.(*net.TCPConn).CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	var buf bytes.Buffer
	io.Copy(&buf, c)
	return dateRe.ReplaceAllString(buf.String(), "Date: X\r\n")
}

// servers starts net/http's server and an h1server with the same handler
// and limits, and returns their addresses.
func servers(t *testing.T, h http.Handler, maxHeader int, headerTimeout time.Duration) (stdAddr, ownAddr string) {
	t.Helper()
	quiet := log.New(io.Discard, "", 0)
	ln1, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	std := &http.Server{Handler: h, ReadHeaderTimeout: headerTimeout, MaxHeaderBytes: maxHeader, ErrorLog: quiet}
	go std.Serve(ln1)
	t.Cleanup(func() { std.Close() })

	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	own := &Server{Handler: h, ReadHeaderTimeout: headerTimeout, MaxHeaderBytes: maxHeader, ErrorLog: quiet}
	go func() {
		for {
			c, err := ln2.Accept()
			if err != nil {
				return
			}
			go own.ServeConn(context.Background(), c)
		}
	}()
	t.Cleanup(func() { ln2.Close(); own.Close() })
	return ln1.Addr().String(), ln2.Addr().String()
}

func get(path string) string { return "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n" }

func post(path, body string) string {
	return "POST " + path + " HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
}

var diffCases = []struct {
	name, raw string
}{
	{"get", get("/hello")},
	{"html sniffed", get("/html")},
	{"chunked response", get("/big")},
	{"io.Copy", get("/copy")},
	{"io.Copy with length", get("/copylen")},
	{"flush", get("/flush")},
	{"head", "HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n"},
	{"head big", "HEAD /big HTTP/1.1\r\nHost: x\r\n\r\n"},
	{"head empty", "HEAD /empty HTTP/1.1\r\nHost: x\r\n\r\n"},
	{"empty", get("/empty")},
	{"404", get("/nothing")},
	{"500", get("/status500")},
	{"204", get("/204")},
	{"304", get("/304")},
	{"103 early hints", get("/103")},
	{"status 999", get("/999")},
	{"short content-length", get("/shortcl")},
	{"handler Connection close", get("/close")},
	{"identity", get("/identity")},
	{"te and cl response", get("/tecl")},
	{"bad response cl", get("/badcl")},
	{"panic", get("/panic")},
	{"abort", get("/abort")},
	{"content-type set", get("/typeset")},
	{"content-encoding set", get("/encoded")},
	{"date set", get("/date")},
	{"header after write", get("/headafter")},
	{"trailers", get("/trailer")},
	{"trailer prefix", get("/trailerprefix")},
	{"trailers http/1.0", "GET /trailer HTTP/1.0\r\n\r\n"},
	{"headers", "GET /headers?a=b HTTP/1.1\r\nHost: example.com:80\r\nX-A: 1\r\nx-a: 2\r\nAccept:  spaced  \r\n\r\n"},
	{"pipelined", get("/hello") + get("/big") + "HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n" + get("/html")},
	{"pipelined posts", post("/echo", "abc") + post("/noread", "defgh") + get("/hello")},
	{"http/1.0", "GET /hello HTTP/1.0\r\n\r\n"},
	{"http/1.0 keep-alive", "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /html HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"},
	{"http/1.0 keep-alive chunk", "GET /big HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + get("/hello")},
	{"http/1.0 keep-alive handler", "GET /keepalive10 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + get("/hello")},
	{"connection close", "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + get("/html")},
	{"connection close token", "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\n" + get("/html")},
	{"post echo", post("/echo", "hello body")},
	{"post not read", post("/noread", "hello body") + get("/hello")},
	{"post read some", post("/readsome", "hello body") + get("/hello")},
	{"post closed", post("/closebody", "hello body") + get("/hello")},
	{"post big not read", "POST /noread HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n" + strings.Repeat("a", 300000) + get("/hello")},
	{"post medium not read", "POST /noread HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + strings.Repeat("a", 100000) + get("/hello")},
	{"chunked big not read", "POST /noread HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + strings.Repeat("1000\r\n"+strings.Repeat("b", 4096)+"\r\n", 70) + "0\r\n\r\n" + get("/hello")},
	// Not "full duplex, body not read, a request pipelined behind": net/http
	// starts its background read when finishRequest's Close reaches the
	// body's EOF, after it aborted the last one, and the next request's
	// startBackgroundRead panics ("invalid concurrent Body.Read call"): the
	// connection is closed unanswered. h1server answers it
	// (TestFullDuplexPipelined).
	{"full duplex not read, alone", "POST /fullduplex HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"},
	{"chunked echo", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n" + get("/hello")},
	{"chunk extension", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;name=value\r\nabc\r\n0;x\r\n\r\n" + get("/hello")},
	{"chunked trailers", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n3\r\nabc\r\n0\r\nX-T: v\r\n\r\n" + get("/hello")},
	{"bad chunk size", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n" + get("/hello")},
	{"bad chunk size not read", "POST /noread HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n" + get("/hello")},
	{"chunk size overflow", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nabc\r\n0\r\n\r\n"},
	{"chunk missing crlf", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n"},
	{"cl and te", "POST /headers HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + get("/hello")},
	{"te and cl http/1.0", "POST /echo HTTP/1.0\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc"},
	{"two content-lengths", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"},
	{"same content-lengths", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc" + get("/hello")},
	{"content-length list", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc"},
	{"negative content-length", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\nabc"},
	{"plus content-length", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc"},
	{"te gzip", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc"},
	{"te gzip chunked", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"},
	{"te twice", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
	{"te identity", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n"},
	{"te CHUNKED", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: CHUNKED\r\n\r\n1\r\na\r\n0\r\n\r\n"},
	{"obs-fold", "GET /headers HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n"},
	{"obs-fold host", "GET /headers HTTP/1.1\r\nHost: x\r\n y\r\n\r\n"},
	{"leading space header", "GET /headers HTTP/1.1\r\n Host: x\r\n\r\n"},
	{"space before colon", "GET /headers HTTP/1.1\r\nHost: x\r\nX-Bad : 1\r\n\r\n"},
	{"bare lf", "GET /headers HTTP/1.1\nHost: x\nX-A: 1\n\n"},
	{"bare cr", "GET /headers HTTP/1.1\r\nHost: x\r\nX-A: 1\r2\r\n\r\n"},
	{"nul in value", "GET /headers HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n"},
	{"non-ascii value", "GET /headers HTTP/1.1\r\nHost: x\r\nX-A: caf\xc3\xa9\r\n\r\n"},
	{"non-ascii name", "GET /headers HTTP/1.1\r\nHost: x\r\nX-\xc3\xa9: 1\r\n\r\n"},
	{"non-ascii path", "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n"},
	{"missing host", "GET /headers HTTP/1.1\r\n\r\n"},
	{"empty host", "GET /headers HTTP/1.1\r\nHost:\r\n\r\n"},
	{"two hosts", "GET /headers HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"},
	{"malformed host", "GET /headers HTTP/1.1\r\nHost: a b\r\n\r\n"},
	{"malformed host 2", "GET /headers HTTP/1.1\r\nHost: a/b\r\n\r\n"},
	{"http/1.0 no host", "GET /headers HTTP/1.0\r\n\r\n"},
	{"absolute form", "GET http://example.com/headers?q=1 HTTP/1.1\r\nHost: other\r\n\r\n"},
	{"absolute form no host", "GET http://example.com/headers HTTP/1.1\r\n\r\n"},
	{"absolute form bad host", "GET http://example.com/headers HTTP/1.1\r\nHost: a b\r\n\r\n"},
	{"connect", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"},
	{"connect no host", "CONNECT example.com:443 HTTP/1.1\r\n\r\n"},
	{"connect path", "CONNECT /headers HTTP/1.1\r\nHost: x\r\n\r\n"},
	{"asterisk get", "GET * HTTP/1.1\r\nHost: x\r\n\r\n"},
	{"options asterisk", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n" + get("/hello")},
	{"options asterisk body", "OPTIONS * HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" + get("/hello")},
	{"options asterisk big body", "OPTIONS * HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + strings.Repeat("a", 5000) + get("/hello")},
	{"http/2.0 line", "GET /hello HTTP/2.0\r\nHost: x\r\n\r\n"},
	{"http/1.2", "GET /hello HTTP/1.2\r\nHost: x\r\n\r\n"},
	{"http/0.9", "GET /hello\r\n\r\n"},
	{"pri", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"},
	{"pri with host", "PRI * HTTP/2.0\r\nHost: x\r\n\r\n"},
	{"lowercase version", "GET /hello http/1.1\r\nHost: x\r\n\r\n"},
	{"bad method", "G@T /hello HTTP/1.1\r\nHost: x\r\n\r\n"},
	{"lower method", "get /headers HTTP/1.1\r\nHost: x\r\n\r\n"},
	{"extra spaces", "GET  /hello HTTP/1.1\r\nHost: x\r\n\r\n"},
	{"no target", "GET HTTP/1.1\r\nHost: x\r\n\r\n"},
	{"garbage", "\x16\x03\x01\x00\x05hello\r\n\r\n"},
	{"leading crlf", "\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n"},
	{"crlf after post", post("/echo", "abc") + "\r\n" + get("/hello")},
	{"expect 100", "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc" + get("/hello")},
	{"expect 100 not read", "POST /noread HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc" + get("/hello")},
	{"expect 100 no body", "GET /hello HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n" + get("/html")},
	{"expect 100 http/1.0", "POST /echo HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc"},
	{"expect other", "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: something\r\nContent-Length: 3\r\n\r\nabc" + get("/hello")},
	{"expect 100 then 103", "POST /103 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc"},
	{"request line too long", "GET /" + strings.Repeat("a", 9000) + " HTTP/1.1\r\nHost: x\r\n\r\n"},
	{"header too large", "GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("b", 9000) + "\r\n\r\n"},
	{"header at limit", "GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("b", 4000) + "\r\n\r\n" + get("/html")},
	{"many headers", "GET /hello HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-A: 1\r\n", 1200) + "\r\n"},
	{"truncated head", "GET /hello HTTP/1.1\r\nHost: x\r\n"},
	{"truncated body", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"},
	{"truncated chunked", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"},
	{"upgrade header no hijack", "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n" + get("/html")},
	{"body read after response", get("/readafter") + get("/hello")},
}

// TestDifferential sends the same bytes to net/http's server and to
// h1server and wants the same bytes back, Date aside.
func TestDifferential(t *testing.T) {
	stdAddr, ownAddr := servers(t, http.HandlerFunc(testHandler), 4096, 5*time.Second)
	for _, tc := range diffCases {
		for _, half := range []bool{true, false} {
			name := tc.name
			if !half {
				if !strings.HasPrefix(tc.name, "truncated") {
					continue
				}
				name += " (open)"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				want := exchange(t, stdAddr, tc.raw, half)
				got := exchange(t, ownAddr, tc.raw, half)
				if got != want {
					t.Errorf("request %q\nnet/http: %q\nh1server: %q", trim(tc.raw), trim(want), trim(got))
				}
			})
		}
	}
}

func trim(s string) string {
	if len(s) > 600 {
		return s[:300] + "…" + s[len(s)-300:]
	}
	return s
}

// Heads that stop coming: answered (400 mid-line) or not as net/http does
// at its header timeout.
func TestDifferentialHeaderTimeout(t *testing.T) {
	stdAddr, ownAddr := servers(t, http.HandlerFunc(testHandler), 0, 100*time.Millisecond)
	for _, raw := range []string{"", "G", "GET / HT", "GET / HTTP/1.1\r\nHo", "GET / HTTP/1.1\r\nHost: x\r\n", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab"} {
		t.Run(raw, func(t *testing.T) {
			t.Parallel()
			want := exchange(t, stdAddr, raw, false)
			got := exchange(t, ownAddr, raw, false)
			if got != want {
				t.Errorf("request %q\nnet/http: %q\nh1server: %q", raw, want, got)
			}
		})
	}
}
