// Package discover is how the proxy learns where an authority's endpoints are.
//
// The proxy depends only on the Resolver interface. This package implements it with
// static configuration (a YAML file and flags); the control plane implements it with
// the destination API. Updates always carry the whole endpoint set, so a consumer
// never has to reconcile deltas.
package discover

import (
	"context"
	"errors"
	"net/netip"
)

// ErrNotFound means the resolver knows nothing about the authority.
var ErrNotFound = errors.New("destination not found")

// NotFoundError is ErrNotFound (errors.Is) from a resolver that keeps
// watching the authority: Appeared is closed once the resolver may know it
// (the caller should resolve it again), and Stop ends the watch. A caller
// can therefore keep the answer for as long as it stays true, instead of
// asking again on every use.
type NotFoundError struct {
	Authority string
	Appeared  <-chan struct{}
	Stop      func()
}

func (e *NotFoundError) Error() string { return ErrNotFound.Error() + ": " + e.Authority }

// Is makes errors.Is(err, ErrNotFound) true.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// Protocol hints tell the proxy how an endpoint wants to be spoken to.
const (
	HintNone   = ""       // detect / preserve the client's protocol
	HintH2     = "h2"     // the endpoint speaks HTTP/2 with prior knowledge
	HintOpaque = "opaque" // never detect: copy bytes
)

// Endpoint is one address that serves an authority.
type Endpoint struct {
	Addr     string            `yaml:"addr"`               // host:port
	Weight   uint32            `yaml:"weight,omitempty"`   // relative; 0 means the default weight of 1
	Protocol string            `yaml:"protocol,omitempty"` // a Hint*
	Labels   map[string]string `yaml:"labels,omitempty"`
	// Identity is the SPIFFE ID the endpoint's proxy presents; empty when
	// the endpoint is not meshed.
	Identity string `yaml:"identity,omitempty"`
}

// Resolver finds endpoint sets.
type Resolver interface {
	// Resolve starts watching authority (host:port). The first value on Updates is
	// the current set (possibly empty); later values replace it. ErrNotFound when
	// the authority is unknown to the resolver (a *NotFoundError when the
	// resolver can tell when that changes).
	Resolve(ctx context.Context, authority string) (Watch, error)
	// LookupAddr maps an original destination (a service's virtual address) to
	// the authority that owns it, so connections redirected by iptables find
	// their service even without a Host header.
	LookupAddr(addr netip.AddrPort) (authority string, ok bool)
}

// Watch is a subscription to one authority's endpoints.
type Watch interface {
	// Updates delivers whole endpoint sets. It is closed when the watch ends.
	Updates() <-chan []Endpoint
	// Close ends the watch.
	Close()
}
