package httpproxy

import (
	"context"
	"errors"
	"net/http"
	"sync"

	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/internal/h1head"
)

// outcome reports one request's result to the endpoint that served it, for
// the balancer's failure accrual (balance.Endpoint.Result): once, when the
// result is known, and never for a request its client cancelled.
type outcome struct {
	once sync.Once
	ep   *balance.Endpoint[*Upstream]
	ctx  context.Context // the upstream request's, to tell a cancellation
}

func (o *outcome) report(failure string) {
	if o == nil {
		return
	}
	o.once.Do(func() {
		if o.ep == nil || (failure != "" && clientCanceled(o.ctx)) {
			return
		}
		o.ep.Result(failure)
	})
}

// clientCanceled: the request's context ended for another reason than the
// route's timeout, which means its client went away.
func clientCanceled(ctx context.Context) bool {
	return ctx != nil && ctx.Err() != nil && !errors.Is(context.Cause(ctx), ErrRouteTimeout)
}

// gRPC codes that say the server (not the request) failed, as Linkerd's
// proxy and Envoy's retry-on/outlier classification treat them.
var grpcFailures = map[string]bool{
	"2":  true, // UNKNOWN
	"13": true, // INTERNAL
	"14": true, // UNAVAILABLE
	"15": true, // DATA_LOSS
}

// appUnavailable are the reasons a peer proxy gives (ErrorHeader) when it
// could not reach its application: the endpoint is up but useless.
var appUnavailable = map[string]bool{"connect": true, "unavailable": true, "no_endpoints": true}

// AppUnavailable reports whether resp is a peer proxy's own answer that it
// could not reach its application: the request never got there.
func AppUnavailable(resp *http.Response) bool {
	return resp.StatusCode >= 500 && appUnavailable[resp.Header.Get(ErrorHeader)]
}

// PeerFailed reports whether resp is a meshed endpoint's proxy's own
// answer that it could not reach its application or lost it mid-exchange
// (502/503 with ErrorHeader connect, unavailable, no_endpoints or
// upstream): the application is going away, and an idempotent request may
// be tried again elsewhere (RFC 9110 9.2.2). An endpoint that forges the
// header only gets an idempotent request sent again.
func PeerFailed(resp *http.Response) bool {
	if resp.StatusCode != http.StatusBadGateway && resp.StatusCode != http.StatusServiceUnavailable {
		return false
	}
	return AppUnavailable(resp) || resp.Header.Get(ErrorHeader) == "upstream"
}

// Idempotent reports whether method is one of RFC 9110 9.2.2's idempotent
// methods.
func Idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// headerFailure classifies a response by its status line and headers: a
// 5xx, a peer proxy's own failure to reach its application, or a gRPC
// trailers-only response with a failing status. "" means not failed (yet:
// a gRPC status in the trailers is judged at the body's end).
func headerFailure(resp *http.Response) string {
	failing := resp.StatusCode >= 500
	if isGRPCResponse(resp) {
		if s := h1head.Get(resp.Header, "Grpc-Status"); grpcFailures[s] {
			failing = true
		}
	}
	if !failing {
		return ""
	}
	if appUnavailable[resp.Header.Get(ErrorHeader)] {
		return "app_unavailable"
	}
	if resp.StatusCode >= 500 {
		return "5xx"
	}
	return "grpc"
}

// endFailure classifies a response whose body ended with err (nil at EOF).
func endFailure(resp *http.Response, err error) string {
	if f := headerFailure(resp); f != "" {
		return f
	}
	if err != nil {
		return "reset"
	}
	if isGRPCResponse(resp) && grpcFailures[grpcStatus(resp)] {
		return "grpc"
	}
	return ""
}

// EndFailure is what the balancer's failure accrual is told of a
// response passed whole (err nil) or broken off by err, for a caller that
// forwards responses itself (the gateway's event loops): as the
// Forwarder's own requests report it.
func EndFailure(resp *http.Response, err error) string { return endFailure(resp, err) }

// GRPCStatus is a response's gRPC status as the Forwarder counts it (its
// trailers', or its head's for a trailers-only response; UNKNOWN when a
// gRPC response ended without one), "" for others: for a caller that
// forwards on its own (the event loops).
func GRPCStatus(resp *http.Response) string { return grpcStatus(resp) }

// IsGRPC says whether r is a gRPC request, answered in gRPC's terms.
func IsGRPC(r *http.Request) bool { return isGRPC(r) }

// errorFailure classifies a request that got no response (ctx is its own).
func errorFailure(ctx context.Context, err error) string {
	if errors.Is(err, ErrRouteTimeout) || errors.Is(context.Cause(ctx), ErrRouteTimeout) {
		return "timeout"
	}
	return "reset"
}

// closed reports what is known of a response whose body was closed: a
// body closed before its end (the client went away, or stopped reading)
// reports what the headers said, and nothing for gRPC, whose status was
// never seen. After EOF or a read error (a reset) the outcome was reported
// already (observedBody.Read).
func (o *outcome) closed(resp *http.Response) {
	if o == nil {
		return
	}
	if !isGRPCResponse(resp) || headerFailure(resp) != "" {
		o.report(headerFailure(resp))
	}
	o.once.Do(func() {}) // unknown: nothing to report
}
