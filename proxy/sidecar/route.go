package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"

	"github.com/meridian-mesh/meridian/internal/names"
	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
)

// outboundRouter routes by the request's authority: the override header,
// else Host / :authority, else the connection's original destination. An
// authority that is an IP address is looked up as a service's virtual
// address first, as an original destination is.
type outboundRouter struct{ p *Proxy }

// Route refuses a loop: a request this proxy forwarded before, or one whose
// target is one of its own listeners. It marks the others (HopHeader).
func (r outboundRouter) Route(req *http.Request) (*httpproxy.Target, error) {
	if r.p.sawBefore(req.Header) {
		return nil, loopError(fmt.Errorf("the request came back to the proxy that forwarded it (%s: %s)", HopHeader, r.p.id))
	}
	t, err := r.route(req)
	if err == nil {
		req.Header.Add(HopHeader, r.p.id)
	}
	return t, err
}

func (r outboundRouter) route(req *http.Request) (*httpproxy.Target, error) {
	s := r.p.out
	a, _ := req.Context().Value(acceptedKey{}).(*accepted)
	authority := req.Header.Get(httpproxy.DstOverrideHeader)
	if authority == "" {
		authority = req.Host
	}
	if authority != "" {
		auth, err := discover.CanonicalAuthority(authority, 80)
		if err != nil {
			return nil, &httpproxy.RouteError{Status: http.StatusBadRequest, Reason: "bad_authority", Authority: authority, Err: err}
		}
		if ip, err := netip.ParseAddrPort(auth); err == nil {
			if err := r.p.checkTarget("the authority", ip); err != nil {
				return nil, loopError(err)
			}
		}
		d, err := s.dests.Get(req.Context(), auth)
		switch {
		case err == nil:
			return d.Target(), nil
		case !errors.Is(err, discover.ErrNotFound):
			return nil, resolveError(auth, err)
		}
		if ip, err := netip.ParseAddrPort(auth); err == nil {
			// An address, not a name: a service's virtual IP (the
			// application dialled a ClusterIP) or some address outside the mesh.
			d, err := s.dests.ResolveAddr(req.Context(), ip)
			if err != nil {
				return nil, resolveError(auth, err)
			}
			return d.Target(), nil
		}
	}
	if a != nil && a.origDst.IsValid() {
		if err := r.p.checkTarget("the original destination", a.origDst); err != nil {
			return nil, loopError(err)
		}
		d, err := s.dests.ResolveAddr(req.Context(), a.origDst)
		if err != nil {
			return nil, resolveError(a.origDst.String(), err)
		}
		return d.Target(), nil
	}
	return nil, &httpproxy.RouteError{Status: http.StatusServiceUnavailable, Reason: "unknown_authority",
		Err: fmt.Errorf("no destination is known for authority %q", authority)}
}

// resolveError is a failure to resolve authority. A request whose client
// went away meanwhile is a cancellation (499, counted as the client's), not
// an unavailable destination.
func resolveError(authority string, err error) *httpproxy.RouteError {
	if errors.Is(err, context.Canceled) {
		return &httpproxy.RouteError{Status: 499, Reason: "canceled", Authority: authority, Err: err}
	}
	return &httpproxy.RouteError{Status: http.StatusServiceUnavailable, Reason: "resolve", Authority: authority, Err: err}
}

// Backend resolves a traffic-split backend by name.
func (r outboundRouter) Backend(ctx context.Context, authority string) (*httpproxy.Target, error) {
	auth, err := discover.CanonicalAuthority(authority, 80)
	if err != nil {
		return nil, err
	}
	d, err := r.p.out.dests.Get(ctx, auth)
	if err != nil {
		return nil, err
	}
	return d.Target(), nil
}

// ClientIDHeader carries, on requests to the application, the SPIFFE ID of
// the meshed client proxy that sent them over mTLS.
const ClientIDHeader = names.HeaderClientID

// inboundRouter sends everything to the local application. The policy
// has allowed the request already (middleware/authz, before it).
type inboundRouter struct{ p *Proxy }

func (r inboundRouter) Route(req *http.Request) (*httpproxy.Target, error) {
	s := r.p.in
	// The application learns who called: the client proxy's SPIFFE ID when
	// the request came over mTLS, never a value a client made up.
	req.Header.Del(ClientIDHeader)
	req.Header.Del(HopHeader) // see HopHeader
	if a, _ := req.Context().Value(acceptedKey{}).(*accepted); a != nil && a.peer != "" {
		req.Header.Set(ClientIDHeader, a.peer)
	}
	if r.p.cfg.InboundForward != "" {
		if ap, err := netip.ParseAddrPort(r.p.cfg.InboundForward); err == nil {
			if err := r.p.checkTarget("the inbound forward address", ap); err != nil {
				return nil, loopError(err)
			}
		}
		return s.dests.Passthrough(r.p.cfg.InboundForward).Target(), nil
	}
	if a, _ := req.Context().Value(acceptedKey{}).(*accepted); a != nil && a.origDst.IsValid() {
		if err := r.p.checkTarget("the original destination", a.origDst); err != nil {
			return nil, loopError(err)
		}
		return s.dests.Passthrough(a.origDst.String()).Target(), nil
	}
	return nil, &httpproxy.RouteError{Status: http.StatusBadGateway, Reason: "no_forward_target",
		Err: errors.New("no inbound forward address is configured and the connection was not redirected")}
}
