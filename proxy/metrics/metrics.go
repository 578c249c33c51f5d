// Package metrics holds the proxy's golden metrics, named and labelled like
// Linkerd's proxy metrics so existing dashboards and queries carry over.
package metrics

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Latency buckets in milliseconds, the same bounds Linkerd's proxy uses.
var latencyBuckets = []float64{1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500,
	1000, 2000, 3000, 4000, 5000, 10000, 20000, 30000, 40000, 50000}

// Registry is one proxy's metrics. Each proxy owns one, so several proxies in
// one process (the demo, tests) keep separate numbers.
type Registry struct {
	reg *prometheus.Registry

	requests    *prometheus.CounterVec
	responses   *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	unavailable *prometheus.CounterVec
	ejections   *prometheus.CounterVec
	retries     *prometheus.CounterVec
	shed        *prometheus.CounterVec
	authzDeny   *prometheus.CounterVec
	clientErr   *prometheus.CounterVec

	tcpOpen  *prometheus.CounterVec
	tcpClose *prometheus.CounterVec
	tcpConns *prometheus.GaugeVec
	tcpRead  *prometheus.CounterVec
	tcpWrite *prometheus.CounterVec

	connRefused *prometheus.CounterVec
	udpDropped  *prometheus.CounterVec

	// gateway: the request metrics carry gateway, listener and backend
	// labels, read from the route label (NewGateway, GatewayRoute).
	gateway bool

	// series are the request label sets resolved so far (seriesOf).
	seriesMu sync.RWMutex
	series   map[Request]*resolvedSeries
}

var (
	reqLabels  = []string{"direction", "authority", "target_addr", "route", "tls", "client_id", "server_id"}
	respLabels = []string{"direction", "authority", "target_addr", "route", "tls", "client_id", "server_id", "status_code", "grpc_status", "classification", "error"}
	latLabels  = []string{"direction", "authority", "target_addr", "route", "tls", "client_id", "server_id", "status_code"}
	tcpLabels  = []string{"direction", "peer", "target_addr", "tls", "client_id", "server_id"}
)

// New builds a registry with the golden metrics and the Go runtime/process collectors.
func New() *Registry { return newRegistry(false) }

// NewGateway builds the registry of a gateway proxy: the request metrics
// (request_total, response_total, response_latency_ms, retry_total) carry
// the labels gateway, listener, route and backend besides the others, taken
// apart from the Request's Route, which the gateway sets to GatewayRoute's
// key. (The labels travel inside Route so that the per-request state,
// Request in httpproxy.Exchange, does not grow.)
func NewGateway() *Registry { return newRegistry(true) }

func newRegistry(gateway bool) *Registry {
	r := &Registry{reg: prometheus.NewRegistry(), gateway: gateway, series: map[Request]*resolvedSeries{}}
	req, resp, lat, retry := reqLabels, respLabels, latLabels, []string{"direction", "authority", "route", "outcome"}
	if gateway {
		req, resp, lat, retry = append(gwLabels, req...), append(gwLabels, resp...), append(gwLabels, lat...), append(gwLabels, retry...)
	}
	r.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "request_total", Help: "Requests sent (outbound) or received (inbound)."}, req)
	r.responses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "response_total", Help: "Responses, classified as success or failure."}, resp)
	r.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "response_latency_ms", Help: "Time from request to response headers, in milliseconds.",
		Buckets: latencyBuckets}, lat)
	r.unavailable = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "endpoint_unavailable_total", Help: "Requests failed fast because no endpoint could take them."},
		[]string{"direction", "authority", "reason"})
	r.ejections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "endpoint_ejections_total", Help: "Endpoints ejected from balancing after consecutive failures (failure accrual), by the reason of the last one."},
		[]string{"direction", "authority", "reason"})
	r.tcpOpen = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tcp_open_total", Help: "TCP connections opened."}, tcpLabels)
	r.tcpClose = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tcp_close_total", Help: "TCP connections closed."}, append(tcpLabels, "classification"))
	r.tcpConns = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tcp_open_connections", Help: "TCP connections currently open."}, tcpLabels)
	r.tcpRead = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tcp_read_bytes_total", Help: "Bytes read from TCP connections."}, tcpLabels)
	r.tcpWrite = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tcp_write_bytes_total", Help: "Bytes written to TCP connections."}, tcpLabels)
	r.retries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "retry_total", Help: "Retry decisions for retryable routes: retried, budget_exhausted or body_too_large."},
		retry)
	r.shed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "request_shed_total", Help: "Requests refused at once (503, gRPC UNAVAILABLE) because the proxy had its maximum in flight."},
		[]string{"direction"})
	r.authzDeny = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "inbound_authz_deny_total", Help: "Inbound requests (protocol http) and connections (protocol tcp) the default inbound policy refused."},
		[]string{"protocol", "policy", "target_port", "tls", "client_id"})
	r.connRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tcp_connections_refused_total", Help: "Connections a listener accepted and closed at once (reason max_connections: it held its maximum open)."},
		[]string{"direction", "reason"})
	r.reg.MustRegister(r.connRefused)
	r.udpDropped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "udp_datagrams_dropped_total", Help: "Client datagrams a UDP port dropped (reason no_route: no route or no valid backend; no_endpoint: the backend resolved to none; max_sessions: the port held its maximum sessions)."},
		[]string{"port", "reason"})
	r.reg.MustRegister(r.udpDropped)
	r.clientErr = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "request_client_error_total", Help: "Requests that failed by their client's doing (bad_request: a malformed or truncated body; canceled: the client went away before the response ended), not counted in response_total."},
		[]string{"direction", "authority", "reason"})
	r.reg.MustRegister(r.requests, r.responses, r.latency, r.unavailable, r.ejections, r.retries, r.shed, r.authzDeny, r.clientErr,
		r.tcpOpen, r.tcpClose, r.tcpConns, r.tcpRead, r.tcpWrite,
		//lint:ignore SA1019 the same functions as package collectors', which would link database/sql into the proxy
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return r
}

// Handler serves the registry in the Prometheus text format.
func (r *Registry) Handler() http.Handler {
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{})
}

// Gatherer exposes the registry to tests and in-process consumers.
func (r *Registry) Gatherer() prometheus.Gatherer { return r.reg }

// Request identifies one request's metric series.
type Request struct {
	Direction string // "inbound" or "outbound"
	Authority string
	Target    string // endpoint address, empty when none was chosen
	Route     string // profile route name, empty when none matched
	// TLS is "true" when the hop to the peer proxy is mutual TLS, else the
	// reason it is not: TLSNoLocalIdentity, TLSNotProvidedByRemote,
	// TLSNotProvidedByServiceDiscovery.
	TLS      string
	ClientID string // inbound: the client proxy's SPIFFE ID over mTLS
	ServerID string // outbound: the server proxy's SPIFFE ID over mTLS
}

// RouteProbe is the route label of an inbound request that is one of the
// pod's kubelet probes (a probe path of authz.Config.Probes, unauthenticated):
// as Linkerd labels its probe route, so that views can show probes as
// probes and keep them out of the workload's figures.
const RouteProbe = "probe"

// Values of the tls label.
const (
	TLSTrue = "true"
	// TLSNoLocalIdentity: this proxy has no identity (mTLS is off).
	TLSNoLocalIdentity = "no_local_identity"
	// TLSNotProvidedByRemote: inbound, the client did not speak mTLS.
	TLSNotProvidedByRemote = "not_provided_by_remote"
	// TLSNotProvidedByServiceDiscovery: outbound, the endpoint is not meshed.
	TLSNotProvidedByServiceDiscovery = "not_provided_by_service_discovery"
	// TLSLoopback: the hop between the application and its own proxy
	// (tcp_* only: outbound accepted, inbound opened), never TLS.
	TLSLoopback = "loopback"
)

// gwLabels are the gateway registry's extra labels, first.
var gwLabels = []string{"gateway", "listener", "backend"}

// gatewaySep separates GatewayRoute's parts: no Kubernetes name, listener
// name or authority contains it.
const gatewaySep = "|"

// GatewayRoute is the Route of a gateway's Request: gateway
// ("namespace/name"), listener (its name), route ("kind/namespace/name/rule")
// and backend ("namespace/service:port"). A NewGateway registry labels the
// request's series with each part; another shows it as the route.
func GatewayRoute(gateway, listener, route, backend string) string {
	return gateway + gatewaySep + listener + gatewaySep + route + gatewaySep + backend
}

// splitGateway takes GatewayRoute's key apart (without allocating).
func splitGateway(key string) (gateway, listener, route, backend string) {
	gateway, rest, _ := strings.Cut(key, gatewaySep)
	listener, rest, _ = strings.Cut(rest, gatewaySep)
	route, backend, _ = strings.Cut(rest, gatewaySep)
	return
}

// RequestStarted counts a request.
func (r *Registry) RequestStarted(q Request) {
	r.seriesOf(q).requests.Inc()
}

// Response is the outcome of one request.
type Response struct {
	Status     int    // HTTP status; 0 when the request failed before a response
	GRPCStatus string // grpc-status, empty for non-gRPC
	Error      string // short reason when no response came (e.g. "connect", "timeout")
	Latency    time.Duration
}

// Failure reports whether a response counts against the success rate: a 5xx,
// a gRPC status other than OK, or no response at all.
func (o Response) Failure() bool {
	return o.Status == 0 || o.Status >= 500 || o.Error != "" || (o.GRPCStatus != "" && o.GRPCStatus != "0")
}

// ResponseDone counts a response and its latency.
func (r *Registry) ResponseDone(q Request, o Response) {
	rs := r.seriesOf(q).response(r, q, o)
	rs.count.Inc()
	rs.latency.Observe(float64(o.Latency) / float64(time.Millisecond))
}

// resolvedSeries is one Request's label set resolved once: its request_total
// counter and the response_total and response_latency_ms series of the
// outcomes seen so far. Resolving a label set hashes every value (FNV, byte
// by byte: authorities, addresses, SPIFFE IDs) and allocates the variadic
// slice, three times per request; a request of a known label set costs one
// map lookup instead. The vectors never delete a series, so a resolved one
// stays the one exported.
type resolvedSeries struct {
	requests prometheus.Counter
	// responses is copy-on-write: read without a lock, appended under mu.
	responses atomic.Pointer[[]responseSeries]
	mu        sync.Mutex
}

// responseKey is what a response adds to its request's labels.
type responseKey struct {
	status       int
	grpc, errStr string
}

type responseSeries struct {
	key     responseKey
	count   prometheus.Counter
	latency prometheus.Observer
}

// maxResponseSeries bounds a series' cached outcomes (usually one or two:
// 200, and a failure or two); beyond it outcomes are resolved each time.
const maxResponseSeries = 16

// seriesOf returns q's resolved series, resolving it the first time.
func (r *Registry) seriesOf(q Request) *resolvedSeries {
	r.seriesMu.RLock()
	s := r.series[q]
	r.seriesMu.RUnlock()
	if s != nil {
		return s
	}
	s = &resolvedSeries{requests: r.requests.With(r.requestLabels(q))}
	r.seriesMu.Lock()
	if old := r.series[q]; old != nil {
		s = old
	} else {
		r.series[q] = s
	}
	r.seriesMu.Unlock()
	return s
}

// requestLabels are q's labels, the gateway's taken apart from its Route.
func (r *Registry) requestLabels(q Request) prometheus.Labels {
	l := prometheus.Labels{"direction": q.Direction, "authority": q.Authority, "target_addr": q.Target,
		"route": q.Route, "tls": q.TLS, "client_id": q.ClientID, "server_id": q.ServerID}
	if r.gateway {
		l["gateway"], l["listener"], l["route"], l["backend"] = splitGateway(q.Route)
	}
	return l
}

// response returns the series of o's outcome, resolving it the first time.
func (s *resolvedSeries) response(r *Registry, q Request, o Response) responseSeries {
	k := responseKey{status: o.Status, grpc: o.GRPCStatus, errStr: o.Error}
	if p := s.responses.Load(); p != nil {
		for _, rs := range *p {
			if rs.key == k {
				return rs
			}
		}
	}
	class := "success"
	if o.Failure() {
		class = "failure"
	}
	code := ""
	if o.Status != 0 {
		code = strconv.Itoa(o.Status)
	}
	l := r.requestLabels(q)
	l["status_code"] = code
	rs := responseSeries{key: k, latency: r.latency.With(l)}
	l["grpc_status"], l["classification"], l["error"] = o.GRPCStatus, class, o.Error
	rs.count = r.responses.With(l)
	s.mu.Lock()
	defer s.mu.Unlock()
	var cur []responseSeries
	if p := s.responses.Load(); p != nil {
		cur = *p
	}
	if len(cur) < maxResponseSeries {
		next := append(cur[:len(cur):len(cur)], rs)
		s.responses.Store(&next)
	}
	return rs
}

// Retry counts a retry decision for a request on a retryable route.
func (r *Registry) Retry(q Request, outcome string) {
	if r.gateway {
		g, l, rt, b := splitGateway(q.Route)
		r.retries.WithLabelValues(g, l, b, q.Direction, q.Authority, rt, outcome).Inc()
		return
	}
	r.retries.WithLabelValues(q.Direction, q.Authority, q.Route, outcome).Inc()
}

// InFlight exports n, the number of requests direction is handling, read
// at each scrape.
func (r *Registry) InFlight(direction string, n func() int64) {
	r.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "request_in_flight", Help: "HTTP requests and gRPC streams the proxy is handling now.",
		ConstLabels: prometheus.Labels{"direction": direction},
	}, func() float64 { return float64(n()) }))
}

// Identity exports the workload certificate's state, read at each scrape:
// its expiry (Unix seconds; 0 before the first certificate), the
// certificates obtained and the failed attempts to obtain one.
func (r *Registry) Identity(expiry func() time.Time, renewals, failures func() int64) {
	r.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "identity_cert_expiration_timestamp_seconds", Help: "When the proxy's workload certificate expires (Unix time); 0 before the first.",
		}, func() float64 {
			if e := expiry(); !e.IsZero() {
				return float64(e.UnixNano()) / 1e9
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "identity_cert_refresh_count", Help: "Workload certificates obtained from the identity service.",
		}, func() float64 { return float64(renewals()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "identity_cert_refresh_failures_total", Help: "Failed attempts to obtain a workload certificate (retried with backoff).",
		}, func() float64 { return float64(failures()) }),
	)
}

// Shed counts a request refused because direction had its maximum in flight.
func (r *Registry) Shed(direction string) { r.shed.WithLabelValues(direction).Inc() }

// AuthzDenied counts an inbound request ("http") or connection ("tcp")
// refused by policy.
func (r *Registry) AuthzDenied(protocol, policy string, port uint16, tls, clientID string) {
	r.authzDeny.WithLabelValues(protocol, policy, strconv.Itoa(int(port)), tls, clientID).Inc()
}

// Ejection counts an endpoint of authority ejected by failure accrual
// (again after a failed probe included); reason is the last failure's.
func (r *Registry) Ejection(direction, authority, reason string) {
	r.ejections.WithLabelValues(direction, authority, reason).Inc()
}

// EjectedEndpoints exposes endpoint_ejected: how many endpoints of each
// authority are ejected now in direction, as n reports them (authority →
// count) at scrape time, so that a destination dropped from the proxy's
// cache leaves no stale series.
func (r *Registry) EjectedEndpoints(direction string, n func() map[string]int) {
	r.reg.MustRegister(ejectedCollector{
		desc: prometheus.NewDesc("endpoint_ejected", "Endpoints ejected from balancing now (failure accrual), by authority.",
			[]string{"authority"}, prometheus.Labels{"direction": direction}),
		n: n,
	})
}

type ejectedCollector struct {
	desc *prometheus.Desc
	n    func() map[string]int
}

func (c ejectedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c ejectedCollector) Collect(ch chan<- prometheus.Metric) {
	for authority, v := range c.n() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(v), authority)
	}
}

// Unavailable counts a request failed fast for want of an endpoint.
func (r *Registry) Unavailable(direction, authority, reason string) {
	r.unavailable.WithLabelValues(direction, authority, reason).Inc()
}

// ClientError counts a request that failed by its client's doing, which
// must not count against the application's success rate.
func (r *Registry) ClientError(direction, authority, reason string) {
	r.clientErr.WithLabelValues(direction, authority, reason).Inc()
}

// Values of the peer label.
const (
	PeerSrc = "src" // a connection the proxy accepted
	PeerDst = "dst" // a connection the proxy opened
)

// ConnLabels name a TCP connection's series.
type ConnLabels struct {
	Direction string // "inbound" or "outbound"
	Peer      string // PeerSrc or PeerDst
	Target    string // the endpoint's host:port (PeerDst); empty for accepted connections
	// TLS is TLSTrue when the connection is mutual TLS with a peer proxy,
	// else the reason it is not (TLSLoopback for the hop between the
	// application and its own proxy).
	TLS string
	// PeerID is the SPIFFE ID of the proxy at the other end over mTLS: the
	// client_id label of an accepted connection, the server_id label of a
	// connection the proxy opened. Empty without mTLS.
	PeerID string
}

func (l ConnLabels) values() []string {
	clientID, serverID := l.PeerID, ""
	if l.Peer != PeerSrc {
		clientID, serverID = "", l.PeerID
	}
	return []string{l.Direction, l.Peer, l.Target, l.TLS, clientID, serverID}
}

// Conn meters c under l from now on: it is counted open at once.
func (r *Registry) Conn(c net.Conn, l ConnLabels) *Conn {
	mc := &Conn{Conn: c, r: r, labels: l}
	mc.mu.Lock()
	mc.openLocked()
	mc.mu.Unlock()
	return mc
}

// PendingConn meters c before its TLS labels are known (an accepted
// connection before protocol detection and the mTLS handshake). Nothing is
// counted, and no series exists, until Identify settles the labels: then
// the connection is counted open and the bytes it moved so far are added.
// Closed before that, it is counted under l as given.
func (r *Registry) PendingConn(c net.Conn, l ConnLabels) *Conn {
	return &Conn{Conn: c, r: r, labels: l}
}

// Conn is a metered connection: its lifetime and bytes are counted in one
// set of series, whose labels never change once the connection is counted.
type Conn struct {
	net.Conn
	r      *Registry
	failed atomic.Bool
	// series is nil while the connection is pending.
	series atomic.Pointer[connSeries]

	mu      sync.Mutex // guards what follows, and the transition to counted
	labels  ConnLabels
	pending [2]int64 // bytes read and written while pending
	closed  bool
}

type connSeries struct {
	lv          []string
	read, write prometheus.Counter
}

// Identify settles a pending connection's tls label and peer identity (see
// ConnLabels.PeerID) and counts it. It reports false, changing nothing, when
// the connection was counted already (Conn, an earlier Identify, or Close).
func (c *Conn) Identify(tls, peerID string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.series.Load() != nil {
		return false
	}
	c.labels.TLS, c.labels.PeerID = tls, peerID
	c.openLocked()
	return true
}

// openLocked counts the connection open under its labels, once.
func (c *Conn) openLocked() *connSeries {
	if s := c.series.Load(); s != nil {
		return s
	}
	r, lv := c.r, c.labels.values()
	s := &connSeries{lv: lv, read: r.tcpRead.WithLabelValues(lv...), write: r.tcpWrite.WithLabelValues(lv...)}
	r.tcpOpen.WithLabelValues(lv...).Inc()
	r.tcpConns.WithLabelValues(lv...).Inc()
	if n := c.pending[0]; n > 0 {
		s.read.Add(float64(n))
	}
	if n := c.pending[1]; n > 0 {
		s.write.Add(float64(n))
	}
	c.pending = [2]int64{}
	c.series.Store(s)
	return s
}

// count adds n bytes read (dir 0) or written (dir 1).
func (c *Conn) count(dir, n int) {
	if n <= 0 {
		return
	}
	s := c.series.Load()
	if s == nil {
		c.mu.Lock()
		if s = c.series.Load(); s == nil {
			c.pending[dir] += int64(n)
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
	}
	if dir == 0 {
		s.read.Add(float64(n))
	} else {
		s.write.Add(float64(n))
	}
}

func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.count(0, n)
	if err != nil {
		c.noteErr(err)
	}
	return n, err
}

func (c *Conn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.count(1, n)
	if err != nil {
		c.noteErr(err)
	}
	return n, err
}

// WriteRead is the connection's WriteRead (rawconn's: a request written
// and its answer read with one wait, no read tried before it can succeed),
// counted as Write and Read are; a connection without one gets Write, then
// Read.
func (c *Conn) WriteRead(w, r []byte) (int, error) {
	wr, ok := c.Conn.(interface {
		WriteRead(w, r []byte) (int, error)
	})
	if !ok {
		if _, err := c.Write(w); err != nil {
			return 0, err
		}
		return c.Read(r)
	}
	n, err := wr.WriteRead(w, r)
	if oe, ok := err.(*net.OpError); !ok || oe.Op != "write" {
		c.count(1, len(w)) // written whole: only a "write" error stops it
	}
	c.count(0, n)
	if err != nil {
		c.noteErr(err)
	}
	return n, err
}

// noteErr marks the connection failed unless err is an orderly end: EOF,
// a close by the proxy itself, or a deadline the proxy set (protocol
// detection, idle timeouts). A reset or a broken pipe is a failure.
func (c *Conn) noteErr(err error) {
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) {
		return
	}
	c.failed.Store(true)
}

// NetConn is the connection underneath, as crypto/tls.Conn's is: a client
// pool looks at its socket (proxy/httpproxy/h1client).
func (c *Conn) NetConn() net.Conn { return c.Conn }

// CloseWrite keeps half-close working through the wrapper.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Count adds bytes read and written outside Read and Write: for a
// connection served by an event loop, whose Conn wraps no live net.Conn.
func (c *Conn) Count(read, written int) {
	c.count(0, read)
	c.count(1, written)
}

// MarkFailed records that the connection ended in an error rather than a
// clean close (e.g. its mTLS handshake failed).
func (c *Conn) MarkFailed() { c.failed.Store(true) }

// Close closes the connection and counts it closed, once, under the labels
// it was counted open with (a pending connection is counted open first).
func (c *Conn) Close() error {
	err := c.Conn.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return err
	}
	c.closed = true
	s := c.openLocked()
	class := "success"
	if c.failed.Load() {
		class = "failure"
	}
	c.r.tcpClose.WithLabelValues(append(s.lv[:len(s.lv):len(s.lv)], class)...).Inc()
	c.r.tcpConns.WithLabelValues(s.lv...).Dec()
	return err
}

// Unwrap gives access to the underlying connection (e.g. for SO_ORIGINAL_DST).
func (c *Conn) Unwrap() net.Conn { return c.Conn }

// ConnRefused counts a connection direction's listener closed at accept.
func (r *Registry) ConnRefused(direction, reason string) {
	r.connRefused.WithLabelValues(direction, reason).Inc()
}

// UDPDropped counts a client datagram a UDP port dropped.
func (r *Registry) UDPDropped(port uint32, reason string) {
	r.udpDropped.WithLabelValues(strconv.FormatUint(uint64(port), 10), reason).Inc()
}

// PortListeners exports, at each scrape, the connections each of the
// gateway's ports holds open (open: by port number, the ports open now)
// and the bound of each (max; 0: none), as Listener does for the sidecar's
// two listeners, with a port label. Refusals are counted by ConnRefused.
func (r *Registry) PortListeners(direction string, open func() map[uint32]int64, max int64) {
	r.reg.MustRegister(portListeners{
		open: prometheus.NewDesc("tcp_listener_open_connections", "Connections a listener has accepted and not yet closed.",
			[]string{"port"}, prometheus.Labels{"direction": direction}),
		max: prometheus.NewDesc("tcp_listener_max_connections", "The most connections a listener holds open (0: no bound); more are refused.",
			[]string{"port"}, prometheus.Labels{"direction": direction}),
		read: open, bound: float64(max),
	})
}

// UDPSessions exports, at each scrape, the sessions each of the gateway's
// UDP ports holds (open: by port number, the UDP ports open now) and the
// bound of each (max; 0: none). Datagrams refused beyond it are counted by
// UDPDropped (reason max_sessions).
func (r *Registry) UDPSessions(open func() map[uint32]int64, max int64) {
	r.reg.MustRegister(portListeners{
		open: prometheus.NewDesc("udp_sessions_open", "UDP sessions (client addresses with an upstream socket) a port holds.",
			[]string{"port"}, nil),
		max: prometheus.NewDesc("udp_max_sessions", "The most UDP sessions a port holds (0: no bound); a new client's datagrams beyond it are dropped.",
			[]string{"port"}, nil),
		read: open, bound: float64(max),
	})
}

type portListeners struct {
	open, max *prometheus.Desc
	read      func() map[uint32]int64
	bound     float64
}

func (p portListeners) Describe(ch chan<- *prometheus.Desc) { ch <- p.open; ch <- p.max }

func (p portListeners) Collect(ch chan<- prometheus.Metric) {
	for port, n := range p.read() {
		l := strconv.FormatUint(uint64(port), 10)
		ch <- prometheus.MustNewConstMetric(p.open, prometheus.GaugeValue, float64(n), l)
		ch <- prometheus.MustNewConstMetric(p.max, prometheus.GaugeValue, p.bound, l)
	}
}

// Listener exports, at each scrape, the connections direction's listener
// holds open (open) and its bound (max; 0: none). Unlike
// tcp_open_connections they include connections still in protocol
// detection and HTTP connections, whatever their labels.
func (r *Registry) Listener(direction string, open func() int64, max int64) {
	r.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tcp_listener_open_connections", Help: "Connections a listener has accepted and not yet closed.",
		ConstLabels: prometheus.Labels{"direction": direction},
	}, func() float64 { return float64(open()) }))
	r.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tcp_listener_max_connections", Help: "The most connections a listener holds open (0: no bound); more are refused.",
		ConstLabels: prometheus.Labels{"direction": direction},
	}, func() float64 { return float64(max) }))
}
