// Package retry sends a request again when its response is a failure its
// route allows to retry, while the profile's retry budget allows. The
// request's body is read ahead, up to BufferSize, so that it can be sent
// again; a larger body is streamed as usual and never retried.
package retry

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/metrics"
)

// BufferSize bounds the request body kept for retries. A request whose body
// is larger is never retried.
const BufferSize = 64 << 10

// MaxRetries bounds the retries of one request, on top of the budget.
const MaxRetries = 3

// Options configure retries.
type Options struct {
	// Direction is the direction label of the exchange, when this
	// middleware starts it.
	Direction string
	// Metrics counts retry_total{outcome} (retried, budget_exhausted,
	// body_too_large), and each retried failure as a response.
	Metrics *metrics.Registry
	Log     *slog.Logger
}

// New returns the middleware. It acts on requests whose route
// (middleware/route) is retryable; the retries themselves happen in the
// forwarder's round trip (httpproxy.Retrier), where a failed response can
// still be dropped before it reaches the client.
func New(o Options) func(http.Handler) http.Handler {
	l := &loop{metrics: o.Metrics}
	retrier := httpproxy.Retrier(l.Retry) // once: a method value allocates
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			x, r := httpproxy.ExchangeFor(w, r, o.Direction)
			// A client waiting for 100 Continue gets the application's
			// decision, so its body is not read ahead for retries.
			if x.Route != nil && x.Route.Retryable && httpproxy.Resendable(r.Header) {
				x.Profile.Budget().Deposit()
				ok, err := buffer(r, x)
				if err != nil {
					httpproxy.BadRequest(w, r, x, o.Metrics, o.Log, err)
					return
				}
				if ok {
					x.Retry = retrier
				} else {
					o.Metrics.Retry(x.Labels, "body_too_large")
				}
			}
			next.ServeHTTP(w, r)
		})
	}
}

// buffer reads a retryable request's body into x.Body, up to BufferSize. A
// larger body is not retried: it is sent as it streams, the part already
// read first. ok reports whether the body is buffered.
func buffer(r *http.Request, x *httpproxy.Exchange) (ok bool, err error) {
	if r.Body == nil || r.Body == http.NoBody {
		return true, nil
	}
	buf, err := io.ReadAll(io.LimitReader(r.Body, BufferSize+1))
	if err != nil {
		return false, err
	}
	if len(buf) > BufferSize {
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
		return false, nil
	}
	x.Body = buf
	return true, nil
}

// loop is the retry loop, one for every request of the middleware.
type loop struct{ metrics *metrics.Registry }

// Retry sends r until its response is not a failure of its route, is gRPC
// (whose status comes in trailers, after the body), or the retries or the
// budget are used up; each failure dropped is counted as a response, and
// the one passed on once, like any response.
func (l *loop) Retry(r *http.Request, x *httpproxy.Exchange, a httpproxy.Attempts) (*http.Response, error) {
	for retry := 0; ; retry++ {
		if x.Body != nil {
			r.Body = io.NopCloser(bytes.NewReader(x.Body))
			r.ContentLength = int64(len(x.Body))
		}
		resp, err := a.Send(r, x)
		if err != nil {
			return nil, err
		}
		failed := x.Route.IsFailure(resp.StatusCode) && !isGRPC(resp)
		if failed && (retry >= MaxRetries || !x.Profile.Budget().Withdraw()) {
			l.metrics.Retry(x.Labels, "budget_exhausted")
			failed = false // passed on as it is
		}
		if !failed {
			if x.Timeout != nil {
				x.Timeout.Stop() // the route timeout bounds the wait for headers, not the body
			}
			return resp, nil // counted once, by the forwarder, when its body ends
		}
		// A failure dropped for a retry: counted here, as the client never
		// sees it.
		l.metrics.ResponseDone(x.Labels, metrics.Response{Status: resp.StatusCode, Latency: time.Since(x.Start)})
		l.metrics.Retry(x.Labels, "retried")
		a.Discard(x, resp)
	}
}

func isGRPC(resp *http.Response) bool {
	return strings.HasPrefix(resp.Header.Get("Content-Type"), "application/grpc")
}
