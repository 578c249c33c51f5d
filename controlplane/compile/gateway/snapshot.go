package gateway

import (
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

// hostBefore orders hostnames as the proxy matches them: exact names,
// then wildcards (longest first), then "" (any).
func hostBefore(a, b string) bool {
	ra, rb := hostRank(a), hostRank(b)
	if ra != rb {
		return ra < rb
	}
	if len(a) != len(b) {
		return len(a) > len(b)
	}
	return a < b
}

func hostRank(h string) int {
	switch {
	case h == "":
		return 2
	case strings.HasPrefix(h, "*."):
		return 1
	}
	return 0
}

// snapshot assembles the programmed listeners by port.
func (c *compiler) snapshot() *gatewaypb.Snapshot {
	s := &gatewaypb.Snapshot{Gateway: c.gw.Namespace + "/" + c.gw.Name, TrustedHops: c.opts.TrustedHops, MaxRequestHeaderBytes: c.opts.MaxRequestHeaderBytes,
		BackendClientCertificate: c.clientCert}
	type key struct {
		port uint32
		udp  bool // a UDP port and a TCP one may share a number
	}
	ports := map[key]*gatewaypb.Port{}
	for _, l := range c.all {
		if !l.programmed() {
			continue
		}
		k := key{uint32(l.spec.Port), l.mode == gatewaypb.Listener_UDP}
		p := ports[k]
		if p == nil {
			p = &gatewaypb.Port{Port: uint32(l.spec.Port), Protocol: gatewaypb.Port_HTTP}
			switch l.mode {
			case gatewaypb.Listener_HTTP:
			case gatewaypb.Listener_TCP:
				p.Protocol = gatewaypb.Port_TCP
			case gatewaypb.Listener_UDP:
				p.Protocol = gatewaypb.Port_UDP
			default:
				p.Protocol = gatewaypb.Port_TLS
			}
			ports[k] = p
			s.Ports = append(s.Ports, p)
		}
		pl := &gatewaypb.Listener{Name: l.snapshotName(), Hostname: l.hostname, Mode: l.mode, Certificates: l.certs, ClientValidation: l.clientValidation}
		switch l.mode {
		case gatewaypb.Listener_TLS_PASSTHROUGH, gatewaypb.Listener_TLS_TERMINATE:
			pl.TlsRoutes = tlsRoutes(l.tlsRoutes, l.mode == gatewaypb.Listener_TLS_PASSTHROUGH)
		case gatewaypb.Listener_TCP:
			pl.TcpRoute = tcpRoute(l.l4Routes)
		case gatewaypb.Listener_UDP:
			pl.UdpRoute = udpRoute(l.l4Routes)
		default:
			pl.Hosts = hosts(l.hosts)
		}
		p.Listeners = append(p.Listeners, pl)
	}
	sort.Slice(s.Ports, func(i, j int) bool {
		a, b := s.Ports[i], s.Ports[j]
		return a.Port < b.Port || a.Port == b.Port && a.Protocol < b.Protocol
	})
	for _, p := range s.Ports {
		sort.SliceStable(p.Listeners, func(i, j int) bool { return hostBefore(p.Listeners[i].Hostname, p.Listeners[j].Hostname) })
	}
	names := make([]string, 0, len(c.certs))
	for n := range c.certs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s.Certificates = append(s.Certificates, c.certs[n])
	}
	s.Rejected = dedupe(c.rejected)
	s.Version = version(s)
	return s
}

// snapshotName: the Gateway's listeners by name; a ListenerSet's, whose
// names may repeat the Gateway's, as "<namespace>/<ListenerSet>/<name>".
func (l *listener) snapshotName() string {
	if l.set == nil {
		return string(l.spec.Name)
	}
	return l.set.obj.Namespace + "/" + l.set.obj.Name + "/" + string(l.spec.Name)
}

// hosts orders a listener's hostnames and resolves precedence: a Host's
// rules are its own (in rule precedence), then those of each less specific
// hostname that also matches it, so that a request the specific routes do
// not match still reaches a wildcard's or the catch-all's.
func hosts(own map[string][]*rule) []*gatewaypb.Host {
	names := make([]string, 0, len(own))
	for h, rs := range own {
		names = append(names, h)
		sortRules(rs)
	}
	sort.Slice(names, func(i, j int) bool { return hostBefore(names[i], names[j]) })
	out := make([]*gatewaypb.Host, 0, len(names))
	for _, h := range names {
		host := &gatewaypb.Host{Hostname: h}
		for _, r := range own[h] {
			host.Rules = append(host.Rules, r.pb)
		}
		// The less specific hostnames matching h are its wildcard
		// suffixes, longest first, then "": looked up, not searched, so
		// that a listener's cost grows with its hostnames, not their square.
		for _, less := range lessSpecific(h) {
			for _, r := range own[less] {
				host.Rules = append(host.Rules, r.pb)
			}
		}
		out = append(out, host)
	}
	return out
}

// lessSpecific lists the hostnames that cover h, most specific first:
// "a.b.c" → "*.b.c", "*.c", ""; "*.b.c" → "*.c", "".
func lessSpecific(h string) []string {
	if h == "" {
		return nil
	}
	var out []string
	rest := strings.TrimPrefix(h, "*.") // a wildcard's own label is "*"
	for rest != "" {
		if i := strings.IndexByte(rest, '.'); i >= 0 {
			rest = rest[i+1:]
			out = append(out, "*."+rest)
			continue
		}
		break
	}
	return append(out, "")
}

// tlsRoutes orders a TLS listener's routes by their most specific hostname.
// passthrough: the backends carry no TLS of their own (the client's TLS
// goes through as is).
func tlsRoutes(ts []*tlsRoute, passthrough bool) []*gatewaypb.TLSRoute {
	best := func(t *tlsRoute) string {
		b := t.hostnames[0]
		for _, h := range t.hostnames[1:] {
			if hostBefore(h, b) {
				b = h
			}
		}
		return b
	}
	sort.SliceStable(ts, func(i, j int) bool {
		a, b := ts[i], ts[j]
		ba, bb := best(a), best(b)
		if ba != bb {
			return hostBefore(ba, bb)
		}
		if a.created != b.created {
			return a.created < b.created
		}
		if a.ns != b.ns {
			return a.ns < b.ns
		}
		return a.name < b.name
	})
	out := make([]*gatewaypb.TLSRoute, 0, len(ts))
	for _, t := range ts {
		hs := append([]string(nil), t.hostnames...)
		if len(hs) == 1 && hs[0] == "" {
			hs = nil
		}
		sort.Slice(hs, func(i, j int) bool { return hostBefore(hs[i], hs[j]) })
		bs := t.pb.Backends
		if passthrough {
			bs = make([]*gatewaypb.Backend, len(t.pb.Backends))
			for i, b := range t.pb.Backends {
				if b.Tls != nil {
					b = proto.CloneOf(b)
					b.Tls = nil
				}
				bs[i] = b
			}
		}
		out = append(out, &gatewaypb.TLSRoute{Route: t.pb.Route, Hostnames: hs, Backends: bs})
	}
	return out
}

func dedupe(rs []*gatewaypb.Rejected) []*gatewaypb.Rejected {
	key := func(r *gatewaypb.Rejected) string {
		return r.Kind + "\x00" + r.Namespace + "\x00" + r.Name + "\x00" + r.Reason + "\x00" + r.Message
	}
	sort.SliceStable(rs, func(i, j int) bool { return key(rs[i]) < key(rs[j]) })
	var out []*gatewaypb.Rejected
	for i, r := range rs {
		if i > 0 && key(rs[i-1]) == key(r) {
			continue
		}
		out = append(out, r)
	}
	return out
}
