package httpproxy

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
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
