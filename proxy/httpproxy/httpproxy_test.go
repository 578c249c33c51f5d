package httpproxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/metrics"
)

type routeFunc func(*http.Request) (*Target, error)

func (f routeFunc) Route(r *http.Request) (*Target, error) { return f(r) }

func (routeFunc) Backend(context.Context, string) (*Target, error) {
	return nil, errors.New("no backends")
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// The proxy's own answers: an HTTP status for HTTP clients, a trailers-only
// gRPC status for gRPC clients, both marked with the error header.
func TestProxyAnswers(t *testing.T) {
	empty := &Target{Authority: "empty.test:80", Balancer: balance.New(balance.Options[*Upstream]{})}
	for _, c := range []struct {
		name       string
		route      error
		target     *Target
		grpc       bool
		status     int
		grpcStatus string
		reason     string
	}{
		{"no endpoints", nil, empty, false, 503, "", "no_endpoints"},
		{"no endpoints, gRPC", nil, empty, true, 200, "14", "no_endpoints"},
		{"route error", &RouteError{Status: 400, Reason: "bad_authority", Err: errors.New("bad")}, nil, false, 400, "", "bad_authority"},
		{"route error, gRPC", &RouteError{Status: 400, Reason: "bad_authority", Err: errors.New("bad")}, nil, true, 200, "14", "bad_authority"},
		{"other router error", errors.New("boom"), nil, false, 502, "", "route"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := metrics.New()
			h := New("outbound", routeFunc(func(*http.Request) (*Target, error) {
				if c.route != nil {
					return nil, c.route
				}
				return c.target, nil
			}), m, quiet())
			req := httptest.NewRequest(http.MethodPost, "http://web.test/pkg.Svc/Method", strings.NewReader("x"))
			if c.grpc {
				req.Header.Set("Content-Type", "application/grpc")
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != c.status {
				t.Errorf("status %d, want %d", rec.Code, c.status)
			}
			if got := rec.Header().Get("Grpc-Status"); got != c.grpcStatus {
				t.Errorf("grpc-status %q, want %q", got, c.grpcStatus)
			}
			if got := rec.Header().Get(ErrorHeader); got != c.reason {
				t.Errorf("%s %q, want %q", ErrorHeader, got, c.reason)
			}
		})
	}
}

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
