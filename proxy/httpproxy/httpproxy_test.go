package httpproxy

import (
	"net/http"
	"testing"
)

func TestGRPCStatusOfResponses(t *testing.T) {
	grpcHdr := http.Header{"Content-Type": {"application/grpc+proto"}}
	for _, c := range []struct {
		name string
		resp *http.Response
		want string
	}{
		{"not gRPC", &http.Response{Header: http.Header{"Content-Type": {"text/plain"}}}, ""},
		{"trailer", &http.Response{Header: grpcHdr, Trailer: http.Header{"Grpc-Status": {"5"}}}, "5"},
		{"trailers-only", &http.Response{Header: http.Header{"Content-Type": {"application/grpc"}, "Grpc-Status": {"14"}}}, "14"},
		{"no status", &http.Response{Header: grpcHdr}, "2"},
	} {
		if got := grpcStatus(c.resp); got != c.want {
			t.Errorf("%s: grpcStatus = %q, want %q", c.name, got, c.want)
		}
	}
}
