package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
	"github.com/meridian-mesh/meridian/proxy/metrics"
	"github.com/meridian-mesh/meridian/proxy/routematch"
)

// DefaultMaxRequestHeaderBytes is Snapshot.max_request_header_bytes' default.
const DefaultMaxRequestHeaderBytes = 64 << 10

// table is a compiled snapshot. It is never changed once built: requests
// and handshakes read the one they loaded, whole.
type table struct {
	version     string
	gateway     string
	trustedHops int
	maxHeader   int
	ports       map[uint32]*port // TCP: HTTP, TLS and TCP ports
	udp         map[uint32]*port // UDP ports, numbers shared with ports' allowed
	certs       map[string]*certificate
	certOrder   []*certificate // certs in the snapshot's order (Diagnostics)
	clientCert  *certificate   // presented to BackendTLSPolicy backends; nil: none
	// rejected is Snapshot.rejected (Diagnostics). The table keeps no
	// reference to the snapshot itself: 10,000 routes' messages are some
	// 7 MB that would stay live beside the compiled table.
	rejected []*gatewaypb.Rejected
}

type port struct {
	number        uint32
	protocol      gatewaypb.Port_Protocol
	proxyProtocol bool        // every connection starts with a PROXY header
	listeners     []*listener // in match order (listenerOrder)
}

type listener struct {
	name     string
	port     uint32
	hostname string // "", "foo.example.com" or "*.example.com", lower case
	mode     gatewaypb.Listener_Mode
	scheme   string // "http" or "https" (X-Forwarded-Proto, redirects)
	certs    []*certificate
	tls      *tls.Config // HTTPS, TLS_TERMINATE: terminates with the certificate the hello supports
	hosts    []*host     // in match order
	routes   []*tlsRoute // TLS_PASSTHROUGH, TLS_TERMINATE: in match order; TCP, UDP: its one route, if any
	// The hosts by hostname, so that finding a request's costs a few map
	// lookups however many there are: exact names, wildcards by their
	// "*.suffix", and the host of any name.
	exact, wild map[string]*host
	any         *host
}

type certificate struct {
	name string
	cert *tls.Certificate // Leaf set
}

type host struct {
	hostname string
	rules    []*rule
}

// tlsRoute is a TLS listener's route, or a TCP or UDP listener's (no
// hostnames: it takes every connection, or every session).
type tlsRoute struct {
	ref       string // "kind/namespace/name/rule"
	hostnames []string
	backends  []*backend
	total     uint64
}

// compile validates s and builds its table. Its error names the part that
// is wrong (ports[1].listeners[0].hosts[2].rules[0].match.path: ...); the
// caller keeps the table it has.
func compile(s *gatewaypb.Snapshot, b *builder) (*table, error) {
	t := &table{rejected: s.GetRejected(), version: s.GetVersion(), gateway: s.GetGateway(), trustedHops: int(s.GetTrustedHops()),
		maxHeader: int(s.GetMaxRequestHeaderBytes()), ports: map[uint32]*port{}, udp: map[uint32]*port{}, certs: map[string]*certificate{}}
	b.gateway = t.gateway
	if t.maxHeader == 0 {
		t.maxHeader = DefaultMaxRequestHeaderBytes
	}
	if t.maxHeader > maxHeaderCap {
		return nil, fmt.Errorf("max_request_header_bytes: %d is more than the allowed %d", t.maxHeader, maxHeaderCap)
	}
	for i, c := range s.GetCertificates() {
		cert, err := parseCertificate(c)
		if err != nil {
			return nil, fmt.Errorf("certificates[%d] (%s): %w", i, c.GetName(), err)
		}
		if _, dup := t.certs[c.GetName()]; dup {
			return nil, fmt.Errorf("certificates[%d] (%s): name: a second certificate of that name; names must be unique", i, c.GetName())
		}
		t.certs[c.GetName()] = cert
		t.certOrder = append(t.certOrder, cert)
	}
	if c := s.GetBackendClientCertificate(); c != nil {
		cert, err := parseCertificate(c)
		if err != nil {
			return nil, fmt.Errorf("backend_client_certificate (%s): %w", c.GetName(), err)
		}
		t.clientCert, b.clientCert = cert, cert
	}
	for i, p := range s.GetPorts() {
		cp, err := t.compilePort(p, b)
		if err != nil {
			return nil, fmt.Errorf("ports[%d] (%d): %w", i, p.GetPort(), err)
		}
		m := t.ports
		if cp.protocol == gatewaypb.Port_UDP {
			m = t.udp // a UDP port and a TCP one may share a number
		}
		if _, dup := m[cp.number]; dup {
			return nil, fmt.Errorf("ports[%d] (%d): port: a second port of that number and transport; a number takes one TCP port (HTTP, TLS or TCP) and one UDP port", i, p.GetPort())
		}
		m[cp.number] = cp
	}
	return t, nil
}

// maxHeaderCap is the most max_request_header_bytes may be: the servers'
// own bound (http.Server.MaxHeaderBytes), set once per port.
const maxHeaderCap = 1 << 20

func parseCertificate(c *gatewaypb.Certificate) (*certificate, error) {
	if c.GetName() == "" {
		return nil, errors.New("name: empty; a certificate needs the name listeners refer to it by")
	}
	kp, err := tls.X509KeyPair(c.GetCertChain(), c.GetPrivateKey())
	if err != nil {
		return nil, fmt.Errorf("cert_chain, private_key: %w", err)
	}
	if kp.Leaf == nil {
		if kp.Leaf, err = x509.ParseCertificate(kp.Certificate[0]); err != nil {
			return nil, fmt.Errorf("cert_chain: %w", err)
		}
	}
	return &certificate{name: c.GetName(), cert: &kp}, nil
}

func (t *table) compilePort(p *gatewaypb.Port, b *builder) (*port, error) {
	if p.GetPort() == 0 || p.GetPort() > 65535 {
		return nil, fmt.Errorf("port: %d is not a port number (1-65535)", p.GetPort())
	}
	cp := &port{number: p.GetPort(), protocol: p.GetProtocol(), proxyProtocol: p.GetProxyProtocol()}
	if p.GetProtocol() == gatewaypb.Port_TCP && len(p.GetListeners()) != 1 {
		return nil, fmt.Errorf("listeners: a TCP port has exactly one listener (a connection names no host to choose by), not %d", len(p.GetListeners()))
	}
	if p.GetProtocol() == gatewaypb.Port_UDP {
		switch {
		case len(p.GetListeners()) != 1:
			return nil, fmt.Errorf("listeners: a UDP port has exactly one listener (a datagram names no host to choose by), not %d", len(p.GetListeners()))
		case p.GetProxyProtocol():
			return nil, errors.New("proxy_protocol: a UDP port takes no PROXY header (its datagrams carry the client's address)")
		}
	}
	for i, l := range p.GetListeners() {
		cl, err := t.compileListener(p, l, b)
		if err != nil {
			return nil, fmt.Errorf("listeners[%d] (%s): %w", i, l.GetName(), err)
		}
		cp.listeners = append(cp.listeners, cl)
	}
	sort.SliceStable(cp.listeners, func(i, j int) bool {
		return hostnameRank(cp.listeners[i].hostname) < hostnameRank(cp.listeners[j].hostname)
	})
	return cp, nil
}

func (t *table) compileListener(p *gatewaypb.Port, l *gatewaypb.Listener, b *builder) (*listener, error) {
	hn, err := checkHostname(l.GetHostname())
	if err != nil {
		return nil, fmt.Errorf("hostname: %w", err)
	}
	cl := &listener{name: l.GetName(), port: p.GetPort(), hostname: hn, mode: l.GetMode(), scheme: "http"}
	if l.GetUdpRoute() != nil && !(p.GetProtocol() == gatewaypb.Port_UDP && l.GetMode() == gatewaypb.Listener_UDP) {
		return nil, errors.New("udp_route: only UDP listeners have one")
	}
	switch {
	case p.GetProtocol() == gatewaypb.Port_HTTP && l.GetMode() == gatewaypb.Listener_HTTP:
	case p.GetProtocol() == gatewaypb.Port_TLS && l.GetMode() == gatewaypb.Listener_HTTPS:
		cl.scheme = "https"
		if err := t.listenerCerts(cl, l); err != nil {
			return nil, err
		}
		cl.tls.NextProtos = []string{"h2", "http/1.1"}
		if err := clientValidation(cl.tls, l.GetClientValidation()); err != nil {
			return nil, fmt.Errorf("client_validation: %w", err)
		}
	case p.GetProtocol() == gatewaypb.Port_TLS && (l.GetMode() == gatewaypb.Listener_TLS_PASSTHROUGH || l.GetMode() == gatewaypb.Listener_TLS_TERMINATE):
		if len(l.GetHosts()) > 0 {
			return nil, fmt.Errorf("hosts: a %v listener has tls_routes, not hosts", l.GetMode())
		}
		if l.GetMode() == gatewaypb.Listener_TLS_TERMINATE {
			// No ALPN: the decrypted stream is opaque, whatever the client
			// offers.
			if err := t.listenerCerts(cl, l); err != nil {
				return nil, err
			}
		} else if len(l.GetCertificates()) > 0 {
			return nil, errors.New("certificates: a TLS_PASSTHROUGH listener terminates nothing; it has none")
		}
		if l.GetClientValidation() != nil {
			return nil, fmt.Errorf("client_validation: only HTTPS listeners validate client certificates, not %v", l.GetMode())
		}
		for i, r := range l.GetTlsRoutes() {
			cr, err := compileTLSRoute(r, b)
			if err != nil {
				return nil, fmt.Errorf("tls_routes[%d] (%s): %w", i, refLabel(r.GetRoute()), err)
			}
			cl.routes = append(cl.routes, cr)
		}
		sort.SliceStable(cl.routes, func(i, j int) bool {
			return routeRank(cl.routes[i].hostnames) < routeRank(cl.routes[j].hostnames)
		})
		return cl, nil
	case p.GetProtocol() == gatewaypb.Port_TCP && l.GetMode() == gatewaypb.Listener_TCP:
		switch {
		case hn != "":
			return nil, fmt.Errorf("hostname: %q; a TCP listener has none (a connection names no host)", hn)
		case len(l.GetHosts()) > 0 || len(l.GetTlsRoutes()) > 0:
			return nil, errors.New("hosts, tls_routes: a TCP listener has a tcp_route only")
		case len(l.GetCertificates()) > 0 || l.GetClientValidation() != nil:
			return nil, errors.New("certificates, client_validation: a TCP listener terminates no TLS")
		}
		if r := l.GetTcpRoute(); r != nil {
			cr, err := compileTCPRoute(r, b)
			if err != nil {
				return nil, fmt.Errorf("tcp_route (%s): %w", refLabel(r.GetRoute()), err)
			}
			cl.routes = []*tlsRoute{cr}
		}
		return cl, nil
	case p.GetProtocol() == gatewaypb.Port_UDP && l.GetMode() == gatewaypb.Listener_UDP:
		switch {
		case hn != "":
			return nil, fmt.Errorf("hostname: %q; a UDP listener has none (a datagram names no host)", hn)
		case len(l.GetHosts()) > 0 || len(l.GetTlsRoutes()) > 0 || l.GetTcpRoute() != nil:
			return nil, errors.New("hosts, tls_routes, tcp_route: a UDP listener has a udp_route only")
		case len(l.GetCertificates()) > 0 || l.GetClientValidation() != nil:
			return nil, errors.New("certificates, client_validation: a UDP listener terminates no TLS")
		}
		if r := l.GetUdpRoute(); r != nil {
			cr, err := compileUDPRoute(r, b)
			if err != nil {
				return nil, fmt.Errorf("udp_route (%s): %w", refLabel(r.GetRoute()), err)
			}
			cl.routes = []*tlsRoute{cr}
		}
		return cl, nil
	default:
		return nil, fmt.Errorf("mode: %v is not allowed on a port of protocol %v (HTTP ports take HTTP listeners; TLS ports HTTPS, TLS_PASSTHROUGH and TLS_TERMINATE; TCP ports one TCP listener; UDP ports one UDP listener)", l.GetMode(), p.GetProtocol())
	}
	if l.GetTcpRoute() != nil {
		return nil, errors.New("tcp_route: only TCP listeners have one")
	}
	if len(l.GetTlsRoutes()) > 0 {
		return nil, errors.New("tls_routes: only TLS_PASSTHROUGH and TLS_TERMINATE listeners have them")
	}
	if l.GetClientValidation() != nil && l.GetMode() != gatewaypb.Listener_HTTPS {
		return nil, fmt.Errorf("client_validation: only HTTPS listeners validate client certificates, not %v", l.GetMode())
	}
	cl.exact, cl.wild = map[string]*host{}, map[string]*host{}
	for i, h := range l.GetHosts() {
		ch, err := compileHost(t, cl, h, b)
		if err != nil {
			return nil, fmt.Errorf("hosts[%d] (%s): %w", i, h.GetHostname(), err)
		}
		m := cl.exact
		if strings.HasPrefix(ch.hostname, "*.") {
			m = cl.wild
		}
		if _, dup := m[ch.hostname]; dup || (ch.hostname == "" && cl.any != nil) {
			return nil, fmt.Errorf("hosts[%d] (%s): hostname: a second host of that name in the listener", i, h.GetHostname())
		}
		if ch.hostname == "" {
			cl.any = ch
		} else {
			m[ch.hostname] = ch
		}
		cl.hosts = append(cl.hosts, ch)
	}
	sort.SliceStable(cl.hosts, func(i, j int) bool {
		return hostnameRank(cl.hosts[i].hostname) < hostnameRank(cl.hosts[j].hostname)
	})
	return cl, nil
}

// listenerCerts resolves a terminating listener's certificates and builds
// its server configuration.
func (t *table) listenerCerts(cl *listener, l *gatewaypb.Listener) error {
	if len(l.GetCertificates()) == 0 {
		return fmt.Errorf("certificates: empty; a %v listener needs at least one", l.GetMode())
	}
	for i, name := range l.GetCertificates() {
		c := t.certs[name]
		if c == nil {
			return fmt.Errorf("certificates[%d]: %q is not in the snapshot's certificates", i, name)
		}
		cl.certs = append(cl.certs, c)
	}
	cl.tls = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: cl.certificate}
	return nil
}

// clientValidation makes an HTTPS listener's handshake ask for a client
// certificate (the Gateway's frontend validation). AllowValidOnly: the
// handshake fails without one that chains to the CAs. Insecure fallback:
// asked for, not required, and not verified, so that a missing or
// untrusted certificate is served alike (the spec leaves authorization to
// the backend in that mode).
func clientValidation(cfg *tls.Config, cv *gatewaypb.ClientValidation) error {
	if cv == nil {
		return nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(cv.GetCaCertificates()) {
		return errors.New("ca_certificates: no PEM certificate (a listener that validates clients needs at least one CA)")
	}
	cfg.ClientCAs = pool
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	if cv.GetInsecureFallback() {
		cfg.ClientAuth = tls.RequestClientCert
	}
	return nil
}

// certificate picks the listener's certificate for a ClientHello: the
// first that supports it (its names, signature schemes and curves), else
// the first, whose failure the client then reports.
func (l *listener) certificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	for _, c := range l.certs {
		if hello.SupportsCertificate(c.cert) == nil {
			return c.cert, nil
		}
	}
	return l.certs[0].cert, nil
}

func compileHost(t *table, l *listener, h *gatewaypb.Host, b *builder) (*host, error) {
	hn, err := checkHostname(h.GetHostname())
	if err != nil {
		return nil, fmt.Errorf("hostname: %w", err)
	}
	ch := &host{hostname: hn}
	for i, r := range h.GetRules() {
		cr, err := compileRule(t, l, r, b)
		if err != nil {
			return nil, fmt.Errorf("rules[%d] (%s): %w", i, refLabel(r.GetRoute()), err)
		}
		ch.rules = append(ch.rules, cr)
	}
	return ch, nil
}

func compileTLSRoute(r *gatewaypb.TLSRoute, b *builder) (*tlsRoute, error) {
	var hostnames []string
	for i, h := range r.GetHostnames() {
		hn, err := checkHostname(h)
		if err != nil {
			return nil, fmt.Errorf("hostnames[%d]: %w", i, err)
		}
		hostnames = append(hostnames, hn)
	}
	cr, err := compileStreamRoute("TLS", r.GetRoute(), r.GetBackends(), b)
	if cr != nil {
		cr.hostnames = hostnames
	}
	return cr, err
}

func compileTCPRoute(r *gatewaypb.TCPRoute, b *builder) (*tlsRoute, error) {
	return compileStreamRoute("TCP", r.GetRoute(), r.GetBackends(), b)
}

func compileUDPRoute(r *gatewaypb.UDPRoute, b *builder) (*tlsRoute, error) {
	return compileStreamRoute("UDP", r.GetRoute(), r.GetBackends(), b)
}

// compileStreamRoute compiles the backends of a TLS, TCP or UDP route
// (kind), which take no filters; a UDP route's no TLS either (no DTLS).
func compileStreamRoute(kind string, ref *gatewaypb.RouteRef, bs []*gatewaypb.Backend, b *builder) (*tlsRoute, error) {
	cr := &tlsRoute{ref: refLabel(ref)}
	for i, be := range bs {
		switch {
		case len(be.GetFilters()) > 0:
			return nil, fmt.Errorf("backends[%d].filters: a %s route's backend takes no filters", i, kind)
		case kind == "UDP" && be.GetTls() != nil:
			return nil, fmt.Errorf("backends[%d].tls: a UDP route's backend is sent plain datagrams (no DTLS)", i)
		}
		cb, err := b.backend(be)
		if err != nil {
			return nil, fmt.Errorf("backends[%d] (%s): %w", i, be.GetName(), err)
		}
		cr.backends = append(cr.backends, cb)
		cr.total += uint64(cb.weight)
	}
	return cr, nil
}

// refLabel is a RouteRef as the route label: kind/namespace/name/rule.
func refLabel(r *gatewaypb.RouteRef) string {
	return r.GetKind() + "/" + r.GetNamespace() + "/" + r.GetName() + "/" + r.GetRule()
}

// checkHostname validates a listener, host or route hostname and returns
// it in lower case without a trailing dot.
func checkHostname(h string) (string, error) {
	h = strings.TrimSuffix(strings.ToLower(h), ".")
	if h == "" {
		return "", nil
	}
	name := strings.TrimPrefix(h, "*.")
	if strings.Contains(name, "*") {
		return "", fmt.Errorf("%q: a wildcard is allowed only as the whole first label (*.example.com)", h)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return "", fmt.Errorf("%q: labels must have 1 to 63 characters", h)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return "", fmt.Errorf("%q: %q is not allowed in a hostname (letters, digits, '-' and '.')", h, c)
			}
		}
	}
	return h, nil
}

// hostnameRank orders hostnames as they are matched: exact names first (in
// the order given), then wildcards, the longest suffix first, then "".
func hostnameRank(h string) int {
	switch {
	case h == "":
		return 1 << 20
	case strings.HasPrefix(h, "*."):
		return 1<<10 - len(h)
	}
	return 0
}

// routeRank is a TLS route's rank: that of its most specific hostname.
func routeRank(hs []string) int {
	r := hostnameRank("")
	for _, h := range hs {
		r = min(r, hostnameRank(h))
	}
	return r
}

// hostMatches says whether hostname pattern h ("", exact or "*.suffix")
// matches the request's host (lower case, no port). A wildcard matches one
// label or more before its suffix, never the suffix alone.
func hostMatches(h, name string) bool {
	switch {
	case h == "":
		return true
	case strings.HasPrefix(h, "*."):
		return len(name) > len(h)-1 && strings.HasSuffix(name, h[1:])
	}
	return h == name
}

// listenerFor is the first listener of the port whose hostname matches
// name and whose mode is one of modes.
func (p *port) listenerFor(name string, modes ...gatewaypb.Listener_Mode) *listener {
	for _, l := range p.listeners {
		if hostMatches(l.hostname, name) {
			for _, m := range modes {
				if l.mode == m {
					return l
				}
			}
		}
	}
	return nil
}

// hostFor is the listener's first Host matching name in match order: the
// exact name, else the wildcard of the longest suffix (one label or more
// before it), else the host of any name.
func (l *listener) hostFor(name string) *host {
	if h := l.exact[name]; h != nil {
		return h
	}
	if len(l.wild) > 0 {
		var buf [256]byte
		for i := strings.IndexByte(name, '.'); i >= 0; {
			// "*" + name[i:] without allocating (names are < 256 bytes).
			if k := append(append(buf[:0], '*'), name[i:]...); len(k) <= len(buf) {
				if h := l.wild[string(k)]; h != nil {
					return h
				}
			}
			j := strings.IndexByte(name[i+1:], '.')
			if j < 0 {
				break
			}
			i += 1 + j
		}
	}
	return l.any
}

// routeFor is the TLS listener's first TLS route matching sni.
func (l *listener) routeFor(sni string) *tlsRoute {
	for _, r := range l.routes {
		if len(r.hostnames) == 0 {
			return r
		}
		for _, h := range r.hostnames {
			if hostMatches(h, sni) {
				return r
			}
		}
	}
	return nil
}

// requestHost is r's host as listeners and hosts match it: lower case,
// without port or trailing dot.
func requestHost(h string) string {
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.HasSuffix(h, "]") {
		h = h[:i]
	}
	h = strings.TrimSuffix(h, ".")
	for i := 0; i < len(h); i++ {
		if c := h[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(h)
		}
	}
	return h
}

// A rule is a compiled Rule: its match and the handler that serves it
// (filters, then a backend picked by weight).
type rule struct {
	ref      string // the route label, kind/namespace/name/rule
	match    *routematch.Matcher
	serve    http.Handler
	backends []*backend
	total    uint64 // the sum of the backends' weights
	request  time.Duration
	perTry   time.Duration
	retry    *retryPolicy
	grpc     bool
	session  *session
	// noBackend is the metrics' route key of a request that got no backend.
	noBackend string
	listener  *listener
	prefix    string // the PREFIX match's value, for ReplacePrefixMatch filters
	loopOK    bool   // served on the event loops (loopRouter): no filters, session, retry or timeouts
}

type retryPolicy struct {
	attempts int
	codes    map[int]bool
	backoff  time.Duration
}

func compileRule(t *table, l *listener, r *gatewaypb.Rule, b *builder) (*rule, error) {
	m, err := routematch.Compile(r.GetMatch())
	if err != nil {
		return nil, fmt.Errorf("match.%w", err)
	}
	cr := &rule{ref: refLabel(r.GetRoute()), match: m, grpc: r.GetGrpc(), listener: l,
		request: r.GetTimeouts().GetRequest().AsDuration(), perTry: r.GetTimeouts().GetBackendRequest().AsDuration()}
	if r.GetMatch().GetPath().GetType() == gatewaypb.PathMatch_PREFIX {
		cr.prefix = r.GetMatch().GetPath().GetValue()
	}
	if cr.request < 0 || cr.perTry < 0 {
		return nil, errors.New("timeouts: durations must not be negative")
	}
	if rt := r.GetRetry(); rt != nil {
		cr.retry = &retryPolicy{attempts: int(rt.GetAttempts()), codes: map[int]bool{}, backoff: rt.GetBackoff().AsDuration()}
		for i, c := range rt.GetCodes() {
			if c < 400 || c > 599 {
				return nil, fmt.Errorf("retry.codes[%d]: %d is not retryable (400-599)", i, c)
			}
			cr.retry.codes[int(c)] = true
		}
		if cr.retry.backoff < 0 {
			return nil, errors.New("retry.backoff: must not be negative")
		}
	}
	if sp := r.GetSessionPersistence(); sp != nil {
		if cr.session, err = compileSession(sp, cr.ref); err != nil {
			return nil, fmt.Errorf("session_persistence.%w", err)
		}
	}
	cr.noBackend = metrics.GatewayRoute(t.gateway, l.name, cr.ref, "")
	for i, be := range r.GetBackends() {
		cb, err := b.backend(be)
		if err != nil {
			return nil, fmt.Errorf("backends[%d] (%s): %w", i, be.GetName(), err)
		}
		if cb.protocol != gatewaypb.Backend_PROTOCOL_UNSPECIFIED && cr.grpc && cb.protocol != gatewaypb.Backend_H2C {
			return nil, fmt.Errorf("backends[%d] (%s).protocol: %v; a GRPCRoute's backends speak H2C", i, be.GetName(), cb.protocol)
		}
		cb.h2 = cb.protocol == gatewaypb.Backend_H2C || cr.grpc
		cb.key = metrics.GatewayRoute(t.gateway, l.name, cr.ref, cb.label())
		if cb.serve, err = b.backendFilters(cr, be.GetFilters(), cb); err != nil {
			return nil, fmt.Errorf("backends[%d] (%s).%w", i, be.GetName(), err)
		}
		cr.backends = append(cr.backends, cb)
		cr.total += uint64(cb.weight)
	}
	if cr.serve, err = b.ruleFilters(cr, r.GetFilters()); err != nil {
		return nil, err
	}
	cr.loopOK = len(r.GetFilters()) == 0 && cr.session == nil && cr.retry == nil && cr.perTry == 0 && cr.request == 0
	for i, be := range r.GetBackends() {
		cb := cr.backends[i]
		// An HTTP/2 backend (H2C, a GRPCRoute's) takes the HTTP/2
		// requests relayed on the loops (loopRouter).
		cb.loopOK = len(be.GetFilters()) == 0 && (cb.protocol == gatewaypb.Backend_PROTOCOL_UNSPECIFIED || cb.protocol == gatewaypb.Backend_H2C) && be.GetTls() == nil
	}
	return cr, nil
}

// rule finds the first rule of h matching r.
func (h *host) rule(r *http.Request) *rule {
	for _, rl := range h.rules {
		if rl.match.Matches(r) {
			return rl
		}
	}
	return nil
}
