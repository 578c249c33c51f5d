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
// its copy shares nothing forward or a transport changes with the
// client's request.
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
		got.Header["X-A"][0] = "changed"
		got.Trailer["X-T"] = []string{"v"}
		got.TransferEncoding[0] = "changed"
		if r.URL.Path == "/changed" || r.URL.User != nil && r.URL.User.Username() == "other" ||
			r.Header["X-A"][0] != "1" || r.Trailer["X-T"] != nil || r.TransferEncoding[0] != "chunked" {
			t.Fatalf("%s: the clone shares state with the client's request", target)
		}
	}
}

type cloneKey struct{}
