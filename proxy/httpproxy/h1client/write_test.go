package h1client

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"testing"
)

// FuzzWriteRequest holds writeRequest to (*http.Request).Write: whatever
// request it writes (one that check lets through), it writes the same
// bytes.
func FuzzWriteRequest(f *testing.F) {
	f.Add("GET", "/", "", "web.test", "Accept", "*/*", "", "", false, 0, false)
	f.Add("POST", "/a%20b?x=1", "", "web.test:8080", "Content-Type", "text/plain", "User-Agent", "bench", false, 5, false)
	f.Add("PUT", "/", "q", "h", "Connection", "keep-alive, Close", "", "", true, 0, false)
	f.Add("DELETE", "//x", "", "[::1]:80", "X", " padded\t", "user-agent", "", true, 0, false)
	f.Add("", "/ü", "", "héllo", "", "", "User-Agent", "", false, 3, true)
	f.Add("PATCH", "/", "", "bad host", "Trailer", "X", "Transfer-Encoding", "chunked", false, 0, false)
	f.Add("CONNECT", "", "", "h:443", "Content-Length", "9", "Host", "other", false, 0, false)
	f.Fuzz(func(t *testing.T, method, path, query, host, k1, v1, k2, v2 string, close bool, bodyLen int, traced bool) {
		if bodyLen < 0 || bodyLen > 64 {
			return
		}
		build := func() *http.Request {
			u := &url.URL{Scheme: "http", Host: "ignored.test", Path: path, RawQuery: query}
			req := &http.Request{Method: method, URL: u, Host: host, Header: http.Header{}, Close: close}
			if k1 != "" {
				req.Header[k1] = []string{v1}
			}
			if k2 != "" {
				req.Header[k2] = append(req.Header[k2], v2)
			}
			if bodyLen > 0 {
				req.ContentLength = int64(bodyLen)
				req.Body = io.NopCloser(strings.NewReader(strings.Repeat("b", bodyLen)))
			}
			if traced {
				req = req.WithContext(httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{WroteHeaders: func() {}}))
			}
			return req
		}
		req := build()
		if check(req) != nil {
			return
		}
		var body []byte
		if bodyLen > 0 {
			body = bytes.Repeat([]byte("b"), bodyLen)
		}
		var got bytes.Buffer
		bw := bufio.NewWriter(&got)
		if !writeRequest(bw, req, body) {
			if got.Len() != 0 || bw.Buffered() != 0 {
				t.Fatalf("writeRequest declined after writing %q", got.String())
			}
			return
		}
		bw.Flush()
		var want bytes.Buffer
		if err := build().Write(&want); err != nil {
			t.Fatalf("writeRequest wrote %q, Request.Write failed: %v", got.String(), err)
		}
		if got.String() != want.String() {
			t.Fatalf("writeRequest wrote\n%q\nRequest.Write\n%q", got.String(), want.String())
		}
	})
}

func BenchmarkWriteRequest(b *testing.B) {
	req, _ := http.NewRequest(http.MethodGet, "http://web.test/a/b?x=1", nil)
	req.Header.Set("Accept", "*/*")
	req.Header.Set("X-Request-Id", "1234")
	req.Header.Set("User-Agent", "")
	bw := bufio.NewWriter(io.Discard)
	b.Run("writeRequest", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !writeRequest(bw, req, nil) {
				b.Fatal("declined")
			}
			bw.Flush()
		}
	})
	b.Run("Request.Write", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := req.Write(bw); err != nil {
				b.Fatal(err)
			}
			bw.Flush()
		}
	})
}

// TestWriteRequestTakesCommon: what the forwarder sends most is written by
// writeRequest, the same bytes as Request.Write.
func TestWriteRequestTakesCommon(t *testing.T) {
	for _, c := range []struct {
		method, url, body string
		close             bool
	}{
		{"GET", "http://web.test/", "", false},
		{"POST", "http://web.test:8080/a%2Fb?x=1&y", "hello", false},
		{"DELETE", "http://10.0.0.1:80/x", "", true},
	} {
		build := func() *http.Request {
			var body io.Reader
			if c.body != "" {
				body = strings.NewReader(c.body)
			}
			req, _ := http.NewRequest(c.method, c.url, body)
			req.Header.Set("User-Agent", "")
			req.Header.Set("X-Forwarded-For", "10.0.0.2")
			req.Header["Accept"] = []string{"a", "b"}
			req.Close = c.close
			return req
		}
		var got, want bytes.Buffer
		bw := bufio.NewWriter(&got)
		var body []byte
		if c.body != "" {
			body = []byte(c.body)
		}
		if !writeRequest(bw, build(), body) {
			t.Fatalf("%s %s: left to Request.Write", c.method, c.url)
		}
		bw.Flush()
		build().Write(&want)
		if got.String() != want.String() {
			t.Errorf("%s %s: wrote\n%q\nRequest.Write\n%q", c.method, c.url, got.String(), want.String())
		}
	}
}
