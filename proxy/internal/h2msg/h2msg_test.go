package h2msg

import (
	"bytes"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestRequest: the fields a request is sent with, in order.
func TestRequest(t *testing.T) {
	req, _ := http.NewRequest("POST", "http://example.com/p?q=1", nil)
	req.Header = http.Header{
		"Cookie":     {"a=1; b=2"},
		"Te":         {"gzip, trailers"},
		"Connection": {"keep-alive"},
		"User-Agent": {"ua", "second"},
		"Host":       {"ignored"},
	}
	req.Trailer = http.Header{"X-B": nil, "X-A": nil}
	h, err := CheckRequest(req, 4)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	h.Enumerate(req, func(name, value string) { got = append(got, name+": "+value) })
	wantFirst := []string{":authority: example.com", ":method: POST", ":path: /p?q=1", ":scheme: http", "trailer: X-A,X-B"}
	if !reflect.DeepEqual(got[:5], wantFirst) || got[len(got)-1] != "content-length: 4" {
		t.Fatalf("fields %q", got)
	}
	rest := map[string]bool{}
	for _, f := range got[5 : len(got)-1] {
		rest[f] = true
	}
	want := map[string]bool{"cookie: a=1": true, "cookie: b=2": true, "te: trailers": true, "User-Agent: ua": true}
	if !reflect.DeepEqual(rest, want) {
		t.Fatalf("fields %q", got)
	}
	var buf bytes.Buffer
	h.Encode(hpack.NewEncoder(&buf), req)
	fields, err := hpack.NewDecoder(4096, nil).DecodeFull(buf.Bytes())
	if err != nil || len(fields) != len(got) {
		t.Fatalf("encoded %v: %v", fields, err)
	}
	// The header map's fields come in map order, which differs between
	// Enumerate and Encode: the pseudo-headers and trailer lead and
	// content-length ends in both, the rest is compared as a set.
	lower := func(f string) string {
		name, value, _ := strings.Cut(f, ": ")
		return strings.ToLower(name) + ": " + value
	}
	encoded := make([]string, len(fields))
	for i, f := range fields {
		encoded[i] = f.Name + ": " + f.Value
	}
	enumerated := make([]string, len(got))
	for i, f := range got {
		enumerated[i] = lower(f)
	}
	if !reflect.DeepEqual(encoded[:5], enumerated[:5]) || encoded[len(encoded)-1] != enumerated[len(enumerated)-1] {
		t.Errorf("encoded %q, enumerated %q", encoded, enumerated)
	}
	slices.Sort(encoded)
	slices.Sort(enumerated)
	if !reflect.DeepEqual(encoded, enumerated) {
		t.Errorf("encoded %q, enumerated %q", encoded, enumerated)
	}
	if err := h.CheckListSize(req, 10); err != ErrRequestHeaderListSize {
		t.Errorf("CheckListSize: %v", err)
	}
	if err := h.CheckListSize(req, 1<<64-1); err != nil {
		t.Errorf("CheckListSize: %v", err)
	}
	for _, bad := range []http.Header{{"Connection": {"upgrade"}}, {"Transfer-Encoding": {"gzip"}}, {"X": {"a\nb"}}} {
		req.Header = bad
		if _, err := CheckRequest(req, 0); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func meta(end bool, kv ...string) *http2.MetaHeadersFrame {
	f := &http2.MetaHeadersFrame{HeadersFrame: &http2.HeadersFrame{}}
	if end {
		f.Flags = http2.FlagHeadersEndStream
	}
	for i := 0; i < len(kv); i += 2 {
		f.Fields = append(f.Fields, hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return f
}

// TestParseResponse: a response's head as Go's transport reads it.
func TestParseResponse(t *testing.T) {
	r, err := ParseResponse(meta(false, ":status", "200", "content-length", "5", "content-length", "5",
		"connection", "close", "trailer", "x-a, x-b", "x-f", "1", "x-f", "2"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Code != 200 || r.Status != "200" || r.ContentLength != 5 || r.Header.Get("Connection") != "" ||
		!reflect.DeepEqual(r.Header["X-F"], []string{"1", "2"}) || !reflect.DeepEqual(r.Trailer, http.Header{"X-A": nil, "X-B": nil}) {
		t.Fatalf("%+v", r)
	}
	if r, _ := ParseResponse(meta(false, ":status", "200", "content-length", "5", "content-length", "6")); r.ContentLength != -1 || r.Header["Content-Length"] != nil {
		t.Errorf("conflicting lengths: %+v", r)
	}
	if r, err := ParseResponse(meta(false, ":status", "103", "link", "</a>")); err != nil || !r.Informational() || r.Header.Get("Link") != "</a>" {
		t.Errorf("103: %+v %v", r, err)
	}
	for _, f := range []*http2.MetaHeadersFrame{
		meta(false, "x", "y"),
		meta(false, ":status", "20"),
		meta(false, ":status", "abc"),
		meta(true, ":status", "100"),
	} {
		if _, err := ParseResponse(f); err == nil {
			t.Errorf("%v accepted", f.Fields)
		}
	}
	f := meta(false, ":status", "200")
	f.Truncated = true
	if _, err := ParseResponse(f); err == nil {
		t.Error("a truncated block accepted")
	}
}
