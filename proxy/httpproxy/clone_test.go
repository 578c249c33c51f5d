package httpproxy

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"unsafe"
)

// TestOutgoingClone: outgoing.clone gives what Request.Clone gives, and
// what forward changes in its copy (the header by key, the URL) leaves the
// client's request as it was.
func TestOutgoingClone(t *testing.T) {
	ctx := context.WithValue(context.Background(), cloneKey{}, 1)
	for _, target := range []string{"/a?b=c", "http://u:p@h.test/x;y?z#f"} {
		r := httptest.NewRequest("POST", target, strings.NewReader("body"))
		r.Header.Add("X-A", "1")
		r.Header.Add("X-A", "2")
		r.Trailer = http.Header{"X-T": nil}
		r.TransferEncoding = []string{"chunked"}
		want := r.Clone(ctx)
		var o outgoing
		got := o.clone(r, ctx)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: clone\n%+v\nRequest.Clone\n%+v", target, got, want)
		}
		got.URL.Path = "/changed"
		if got.URL.User != nil {
			*got.URL.User = *url.User("other")
		}
		got.Header.Add("X-A", "3")
		got.Header.Set("Content-Type", "changed")
		got.Header.Del("X-A")
		got.Trailer["X-T"] = []string{"v"}
		got.TransferEncoding[0] = "changed"
		if r.URL.Path == "/changed" || r.URL.User != nil && r.URL.User.Username() == "other" ||
			!reflect.DeepEqual(r.Header["X-A"], []string{"1", "2"}) || r.Header.Get("Content-Type") == "changed" || r.Trailer["X-T"] != nil || r.TransferEncoding[0] != "chunked" {
			t.Fatalf("%s: the clone shares state with the client's request", target)
		}
	}
}

type cloneKey struct{}

// TestTraceContext: forward's trace context is WithClientTrace's (the
// transports find the trace), linked to its parent's cancellation; under a
// parent's trace both run, as WithClientTrace does.
func TestTraceContext(t *testing.T) {
	if clientTraceKey == nil {
		t.Fatal("httptrace's context key was not learnt")
	}
	parent, cancel := context.WithCancel(context.Background())
	var o outgoing
	ctx := o.withTrace(parent)
	if ctx != &o.ctx || httptrace.ContextClientTrace(ctx) != &o.inf.trace {
		t.Fatal("the transports do not find the trace")
	}
	if ctx.Value(cloneKey{}) != nil || httptrace.ContextClientTrace(parent) != nil {
		t.Fatal("values leak")
	}
	child, stop := context.WithCancel(ctx)
	defer stop()
	cancel()
	<-child.Done()

	got := 0
	outer := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got1xxResponse: func(int, textproto.MIMEHeader) error { got++; return nil }})
	var o2 outgoing
	o2.inf.trace.Got1xxResponse = func(int, textproto.MIMEHeader) error { got++; return nil }
	httptrace.ContextClientTrace(o2.withTrace(outer)).Got1xxResponse(103, nil)
	if got != 2 {
		t.Fatalf("%d hooks ran, want both", got)
	}
}

// TestOutgoingSize: outgoing and the 8-byte header the allocator adds to
// an object with pointers over 512 bytes fit the 640-byte size class.
func TestOutgoingSize(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("sizes are for 64-bit platforms")
	}
	if n := unsafe.Sizeof(outgoing{}); n+8 > 640 {
		t.Errorf("outgoing is %d bytes, more than the 640-byte size class with its header", n)
	}
}
