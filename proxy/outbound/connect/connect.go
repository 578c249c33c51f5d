// Package connect is the one connect-and-retry loop of the proxy: pick an
// endpoint, try it, move to another when connecting failed (nothing was
// sent), and name why none could be reached, in the words the metrics use.
//
// It is a leaf (it imports only proxy/balance) so that both the HTTP
// forwarder (proxy/httpproxy) and the destination cache that builds its
// upstreams (proxy/outbound) can use it.
package connect

import (
	"errors"
	"fmt"

	"github.com/meridian-mesh/meridian/proxy/balance"
)

// MaxAttempts bounds how many endpoints one request or connection tries
// when connecting fails; nothing has been sent, so trying another is safe.
const MaxAttempts = 3

// The reasons a request or connection got no endpoint: the reason label of
// endpoint_unavailable_total, the Meridian-Proxy-Error value, and (connect)
// the error label of response_total. Their values are part of the metrics'
// contract: never change them.
const (
	ReasonNoEndpoints = "no_endpoints" // the destination has no endpoints
	ReasonUnavailable = "unavailable"  // every endpoint is in connect backoff
	ReasonConnect     = "connect"      // connecting failed on every try
)

// UnavailableReason is the reason for a failed balance.Balancer.Pick:
// ReasonNoEndpoints for balance.ErrNoEndpoints, else ReasonUnavailable.
func UnavailableReason(err error) string {
	if errors.Is(err, balance.ErrNoEndpoints) {
		return ReasonNoEndpoints
	}
	return ReasonUnavailable
}

// DialError marks a failure to connect, which is always safe to retry on
// another endpoint because nothing was sent.
type DialError struct {
	Addr string
	Err  error
}

func (e *DialError) Error() string { return fmt.Sprintf("connect %s: %v", e.Addr, e.Err) }
func (e *DialError) Unwrap() error { return e.Err }

// UnavailableError is a Loop that could not pick an endpoint: the
// destination has none, or every one is in backoff (possibly because the
// loop's own connect failures put it there).
type UnavailableError struct {
	Reason string // UnavailableReason(Err)
	Err    error  // Pick's error
	// Last is the connect failure of the attempt before, nil when Pick
	// failed at the first attempt.
	Last error
}

func (e *UnavailableError) Error() string {
	if e.Last != nil {
		return fmt.Sprintf("%s: %v (after %v)", e.Reason, e.Err, e.Last)
	}
	return e.Reason + ": " + e.Err.Error()
}

// Unwrap gives errors.Is and errors.As both Pick's error and the connect
// failure before it.
func (e *UnavailableError) Unwrap() []error {
	if e.Last == nil {
		return []error{e.Err}
	}
	return []error{e.Err, e.Last}
}

// Final marks a connect failure that Loop must return rather than retry
// (Loop returns err itself): an HTTP request whose body the failed attempt
// already started to read cannot be sent again.
func Final(err error) error { return &finalError{err} }

type finalError struct{ err error }

func (e *finalError) Error() string { return e.err.Error() }
func (e *finalError) Unwrap() error { return e.err }

// isDialError: err is or wraps a *DialError. (A function of its own, so
// that the target errors.As needs is allocated only when try failed.)
func isDialError(err error) bool {
	var de *DialError
	return errors.As(err, &de)
}

// Loop picks an endpoint of b and calls try on it. When try fails with a
// *DialError (nothing was sent) and not Final, Loop picks again, up to MaxAttempts tries
// in all, and returns the last failure; any other result of try is
// returned as it is. When Pick fails Loop returns an *UnavailableError.
//
// try does the endpoint's own accounting (StartRequest, Fail, Succeed,
// Result), which differs between an HTTP request and an opaque stream.
func Loop[T, R any](b *balance.Balancer[T], try func(ep *balance.Endpoint[T]) (R, error)) (R, error) {
	return LoopPreferring(b, nil, try)
}

// LoopPreferring is Loop whose first pick prefers the ready endpoint that
// prefer accepts (balance.PickPreferred); nil prefers none. A retry after a
// failed connect is the balancer's choice.
func LoopPreferring[T, R any](b *balance.Balancer[T], prefer func(T) bool, try func(ep *balance.Endpoint[T]) (R, error)) (R, error) {
	var zero R
	var last error
	for attempt := 0; attempt < MaxAttempts; attempt++ {
		ep, err := b.PickPreferred(prefer)
		prefer = nil // a pick after a failed connect is the balancer's
		if err != nil {
			return zero, &UnavailableError{Reason: UnavailableReason(err), Err: err, Last: last}
		}
		r, err := try(ep)
		if err == nil || !isDialError(err) {
			return r, err
		}
		if f, ok := err.(*finalError); ok {
			return r, f.err
		}
		last = err
	}
	return zero, last
}
