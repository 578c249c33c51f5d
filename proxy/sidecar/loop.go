package sidecar

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/listen"
)

// HopHeader marks a request the outbound side forwarded: it lists the
// instance IDs of the proxies it went out through. An outbound proxy that
// finds its own ID there has seen the request before (a loop the address
// check missed: a name or a second address leading back to the proxy). The
// inbound side removes it before the application (and the outbound side
// does not send it to this pod's own application, reached without the
// inbound side), so that an application which copies headers onto its own
// calls (A→B→A chains) is not mistaken for a loop.
const HopHeader = httpproxy.HopHeader

// loopReason is the ErrorHeader value and the endpoint_unavailable_total
// reason of a refused loop.
const loopReason = "loop"

// newInstanceID is a random ID told apart from any other proxy's.
func newInstanceID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ownAddrs are the addresses that reach this proxy's own listeners.
type ownAddrs struct {
	exact map[netip.AddrPort]string // bound address → listener name
	// wildcard maps a port bound on 0.0.0.0 or [::] to its listener: any
	// local address with that port is the listener.
	wildcard map[uint16]string
	local    map[netip.Addr]bool // this pod's addresses (loopback is local too)
}

func newOwnAddrs(local map[netip.Addr]bool) *ownAddrs {
	return &ownAddrs{exact: map[netip.AddrPort]string{}, wildcard: map[uint16]string{}, local: local}
}

func (o *ownAddrs) add(name string, addrs []net.Addr) {
	for _, a := range addrs {
		ap, err := netip.ParseAddrPort(a.String())
		if err != nil {
			continue
		}
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if ap.Addr().IsUnspecified() {
			o.wildcard[ap.Port()] = name
			continue
		}
		o.exact[ap] = name
	}
}

// listener names the listener of this proxy that ap reaches, or "".
func (o *ownAddrs) listener(ap netip.AddrPort) string {
	ip := ap.Addr().Unmap()
	if name, ok := o.exact[netip.AddrPortFrom(ip, ap.Port())]; ok {
		return name
	}
	if name, ok := o.wildcard[ap.Port()]; ok && (ip.IsLoopback() || ip.IsUnspecified() || o.local[ip]) {
		return name
	}
	return ""
}

// ownAddrs collects the bound listeners' addresses (New calls it once all are bound).
func (p *Proxy) collectOwnAddrs() {
	o := newOwnAddrs(selfSet(p.cfg.LocalIPs))
	o.add("outbound", listen.Addrs(p.out.ln))
	o.add("inbound", listen.Addrs(p.in.ln))
	o.add("admin", p.admin.Addrs())
	p.own = o
}

// loopError is the answer to a request whose target is this proxy: 508
// Loop Detected (gRPC FAILED_PRECONDITION, a configuration error that a
// retry cannot fix), at once, instead of forwarding it to itself until the
// file descriptors run out.
func loopError(err error) error {
	return &httpproxy.RouteError{Status: http.StatusLoopDetected, Reason: loopReason, Err: err}
}

// checkTarget refuses a target address that is one of this proxy's own listeners.
func (p *Proxy) checkTarget(what string, ap netip.AddrPort) error {
	if name := p.own.listener(ap); name != "" {
		return fmt.Errorf("%s %s is this proxy's own %s listener", what, ap, name)
	}
	return nil
}

// sawBefore reports whether this proxy's outbound side forwarded req already.
func (p *Proxy) sawBefore(h http.Header) bool {
	for _, v := range h.Values(HopHeader) {
		for _, id := range strings.Split(v, ",") {
			if strings.TrimSpace(id) == p.id {
				return true
			}
		}
	}
	return false
}

// opaqueLoop refuses, and counts, an opaque connection whose destination is
// one of this proxy's listeners: forwarded, it would reach the proxy again
// and again.
func (p *Proxy) opaqueLoop(s *side, a *accepted) error {
	to, what := a.origDst, "the original destination"
	if s.direction == "inbound" && p.cfg.InboundForward != "" {
		to, _ = netip.ParseAddrPort(p.cfg.InboundForward)
		what = "the inbound forward address"
	}
	if !to.IsValid() {
		return nil
	}
	if err := p.checkTarget(what, to); err != nil {
		p.metrics.Unavailable(s.direction, to.String(), loopReason)
		return err
	}
	return nil
}
