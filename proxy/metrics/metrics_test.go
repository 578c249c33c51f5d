package metrics

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/meridian-mesh/meridian/proxy/internal/rawconn"
)

func TestFailureClassification(t *testing.T) {
	for _, c := range []struct {
		name    string
		r       Response
		failure bool
	}{
		{"200", Response{Status: 200}, false},
		{"204", Response{Status: 204}, false},
		{"301", Response{Status: 301}, false},
		{"404 is the client's problem", Response{Status: 404}, false},
		{"429", Response{Status: 429}, false},
		{"500", Response{Status: 500}, true},
		{"502", Response{Status: 502}, true},
		{"503", Response{Status: 503}, true},
		{"599", Response{Status: 599}, true},
		{"grpc OK", Response{Status: 200, GRPCStatus: "0"}, false},
		{"grpc NOT_FOUND", Response{Status: 200, GRPCStatus: "5"}, true},
		{"grpc UNAVAILABLE", Response{Status: 200, GRPCStatus: "14"}, true},
		{"grpc CANCELLED", Response{Status: 200, GRPCStatus: "1"}, true},
		{"connection error", Response{Error: "connect"}, true},
		{"no response", Response{}, true},
		{"stream broke after a 200", Response{Status: 200, Error: "stream"}, true},
		{"grpc OK but the stream broke", Response{Status: 200, GRPCStatus: "0", Error: "stream"}, true},
	} {
		if got := c.r.Failure(); got != c.failure {
			t.Errorf("%s: Failure() = %v, want %v", c.name, got, c.failure)
		}
	}
}

func gather(t *testing.T, r *Registry) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// series returns the one series of name whose labels are exactly lbls.
func series(t *testing.T, fams map[string]*dto.MetricFamily, name string, lbls map[string]string) *dto.Metric {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("no %s", name)
	}
next:
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(lbls) {
			continue
		}
		for _, lp := range m.GetLabel() {
			if v, ok := lbls[lp.GetName()]; !ok || v != lp.GetValue() {
				continue next
			}
		}
		return m
	}
	t.Fatalf("no %s%v among %v", name, lbls, f.GetMetric())
	return nil
}

func TestRequestMetrics(t *testing.T) {
	r := New()
	q := Request{Direction: "outbound", Authority: "web.test:80", Target: "10.0.0.1:8080"}
	r.RequestStarted(q)
	r.RequestStarted(q)
	r.RequestStarted(q)
	r.ResponseDone(q, Response{Status: 200, Latency: 3 * time.Millisecond})
	r.ResponseDone(q, Response{Status: 503, Latency: 250 * time.Millisecond})
	r.ResponseDone(q, Response{Error: "connect", Latency: time.Millisecond})
	g := Request{Direction: "inbound", Authority: "grpc.test:80", Target: "127.0.0.1:9000"}
	r.RequestStarted(g)
	r.ResponseDone(g, Response{Status: 200, GRPCStatus: "5", Latency: time.Millisecond})
	r.Unavailable("outbound", "empty.test:80", "no_endpoints")

	fams := gather(t, r)
	base := map[string]string{"direction": "outbound", "authority": "web.test:80", "target_addr": "10.0.0.1:8080", "route": "", "tls": "", "client_id": "", "server_id": ""}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	if v := series(t, fams, "request_total", base).GetCounter().GetValue(); v != 3 {
		t.Errorf("request_total = %v, want 3", v)
	}
	for _, c := range []struct {
		lbls map[string]string
	}{
		{with("status_code", "200", "grpc_status", "", "classification", "success", "error", "")},
		{with("status_code", "503", "grpc_status", "", "classification", "failure", "error", "")},
		{with("status_code", "", "grpc_status", "", "classification", "failure", "error", "connect")},
	} {
		if v := series(t, fams, "response_total", c.lbls).GetCounter().GetValue(); v != 1 {
			t.Errorf("response_total%v = %v, want 1", c.lbls, v)
		}
	}
	h := series(t, fams, "response_latency_ms", with("status_code", "503")).GetHistogram()
	if h.GetSampleCount() != 1 || h.GetSampleSum() != 250 {
		t.Errorf("response_latency_ms{503}: count %d sum %v, want 1 and 250 (ms)", h.GetSampleCount(), h.GetSampleSum())
	}
	for _, b := range h.GetBucket() {
		want := uint64(0)
		if b.GetUpperBound() >= 300 {
			want = 1
		}
		if b.GetCumulativeCount() != want {
			t.Errorf("bucket le=%v holds %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
		}
	}
	grpcLbls := map[string]string{"direction": "inbound", "authority": "grpc.test:80", "target_addr": "127.0.0.1:9000", "route": "", "tls": "", "client_id": "", "server_id": "",
		"status_code": "200", "grpc_status": "5", "classification": "failure", "error": ""}
	if v := series(t, fams, "response_total", grpcLbls).GetCounter().GetValue(); v != 1 {
		t.Errorf("response_total for NOT_FOUND = %v, want 1", v)
	}
	if v := series(t, fams, "endpoint_unavailable_total", map[string]string{"direction": "outbound", "authority": "empty.test:80", "reason": "no_endpoints"}).GetCounter().GetValue(); v != 1 {
		t.Errorf("endpoint_unavailable_total = %v, want 1", v)
	}
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	c.SetDeadline(deadline)
	s.SetDeadline(deadline)
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// tcpLbls is the full label set of a tcp_* series (classification aside).
func tcpLbls(direction, peer, target, tls, clientID, serverID string, kv ...string) map[string]string {
	m := map[string]string{"direction": direction, "peer": peer, "target_addr": target, "tls": tls, "client_id": clientID, "server_id": serverID}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func TestConnMetrics(t *testing.T) {
	r := New()
	lbls := tcpLbls("inbound", "src", "", "not_provided_by_remote", "", "")
	client, server := tcpPair(t)
	mc := r.Conn(server, ConnLabels{Direction: "inbound", Peer: PeerSrc, TLS: TLSNotProvidedByRemote})

	if _, err := client.Write([]byte("hello, proxy")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 12)
	if _, err := io.ReadFull(mc, buf); err != nil {
		t.Fatal(err)
	}
	if _, err := mc.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	// Half-close passes through the wrapper.
	if err := mc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(client)
	if err != nil || string(got) != "hi" {
		t.Fatalf("client read %q, %v after the half-close", got, err)
	}
	if mc.Unwrap() != server {
		t.Error("Unwrap does not return the wrapped connection")
	}
	if mc.Identify(TLSTrue, "spiffe://cluster.local/ns/a/sa/b") {
		t.Error("Identify relabelled a connection already counted")
	}

	fams := gather(t, r)
	for name, want := range map[string]float64{
		"tcp_open_total": 1, "tcp_open_connections": 1, "tcp_read_bytes_total": 12, "tcp_write_bytes_total": 2,
	} {
		m := series(t, fams, name, lbls)
		if v := m.GetCounter().GetValue() + m.GetGauge().GetValue(); v != want {
			t.Errorf("%s = %v, want %v", name, v, want)
		}
		if n := len(fams[name].GetMetric()); n != 1 {
			t.Errorf("%s has %d series, want 1", name, n)
		}
	}
	client.Close()
	if _, err := mc.Read(buf); err != io.EOF {
		t.Fatalf("read after the peer closed: %v", err)
	}
	mc.Close()
	mc.Close() // counted once
	fams = gather(t, r)
	if v := series(t, fams, "tcp_close_total", tcpLbls("inbound", "src", "", "not_provided_by_remote", "", "", "classification", "success")).GetCounter().GetValue(); v != 1 {
		t.Errorf("tcp_close_total{success} = %v, want 1", v)
	}
	if v := series(t, fams, "tcp_open_connections", lbls).GetGauge().GetValue(); v != 0 {
		t.Errorf("tcp_open_connections = %v after close, want 0", v)
	}
}

// WriteRead (a request and its answer's first read, rawconn's) is counted
// as a Write and a Read, and is Write then Read over a connection without
// it.
func TestConnWriteRead(t *testing.T) {
	for _, raw := range []bool{false, true} {
		r := New()
		client, server := tcpPair(t)
		var nc net.Conn = client
		if raw {
			nc = rawconn.Wrap(client)
		}
		mc := r.Conn(nc, ConnLabels{Direction: "outbound", Peer: PeerDst, Target: "10.0.0.1:80", TLS: TLSNoLocalIdentity})
		go func() {
			b := make([]byte, 5)
			if _, err := io.ReadFull(server, b); err == nil && string(b) == "hello" {
				server.Write([]byte("pong"))
			}
		}()
		buf := make([]byte, 16)
		got := ""
		n, err := mc.WriteRead([]byte("hello"), buf)
		for got += string(buf[:n]); err == nil && len(got) < 4; got += string(buf[:n]) {
			n, err = mc.Read(buf)
		}
		if got != "pong" {
			t.Fatalf("raw %v: answer %q, %v", raw, got, err)
		}
		fams := gather(t, r)
		lbls := tcpLbls("outbound", "dst", "10.0.0.1:80", "no_local_identity", "", "")
		for name, want := range map[string]float64{"tcp_read_bytes_total": 4, "tcp_write_bytes_total": 5} {
			if v := series(t, fams, name, lbls).GetCounter().GetValue(); v != want {
				t.Errorf("raw %v: %s = %v, want %v", raw, name, v, want)
			}
		}
		mc.Close()
	}
}

// A pending connection has no series until Identify; then it is counted
// once, under the identified labels, with the bytes it moved before.
func TestPendingConnIdentified(t *testing.T) {
	r := New()
	client, server := tcpPair(t)
	const web = "spiffe://cluster.local/ns/emojivoto/sa/web"
	mc := r.PendingConn(server, ConnLabels{Direction: "inbound", Peer: PeerSrc, TLS: TLSNotProvidedByRemote})

	client.Write([]byte("hello")) // the ClientHello, say
	buf := make([]byte, 5)
	if _, err := io.ReadFull(mc, buf); err != nil {
		t.Fatal(err)
	}
	mc.Write([]byte("hi"))
	fams := gather(t, r)
	for _, name := range []string{"tcp_open_total", "tcp_open_connections", "tcp_read_bytes_total", "tcp_write_bytes_total", "tcp_close_total"} {
		if f, ok := fams[name]; ok && len(f.GetMetric()) > 0 {
			t.Errorf("%s has a series before the connection is identified: %v", name, f.GetMetric())
		}
	}

	if !mc.Identify(TLSTrue, web) {
		t.Fatal("Identify of a pending connection reported false")
	}
	if mc.Identify(TLSNotProvidedByRemote, "") {
		t.Fatal("a second Identify changed the labels")
	}
	client.Write([]byte("more"))
	if _, err := io.ReadFull(mc, buf[:4]); err != nil {
		t.Fatal(err)
	}
	lbls := tcpLbls("inbound", "src", "", "true", web, "")
	fams = gather(t, r)
	for name, want := range map[string]float64{
		"tcp_open_total": 1, "tcp_open_connections": 1, "tcp_read_bytes_total": 9, "tcp_write_bytes_total": 2,
	} {
		m := series(t, fams, name, lbls)
		if v := m.GetCounter().GetValue() + m.GetGauge().GetValue(); v != want {
			t.Errorf("%s = %v, want %v", name, v, want)
		}
		if n := len(fams[name].GetMetric()); n != 1 {
			t.Errorf("%s has %d series, want only the identified one", name, n)
		}
	}
	mc.Close()
	fams = gather(t, r)
	if v := series(t, fams, "tcp_close_total", tcpLbls("inbound", "src", "", "true", web, "", "classification", "success")).GetCounter().GetValue(); v != 1 {
		t.Errorf("tcp_close_total = %v, want 1", v)
	}
	if v := series(t, fams, "tcp_open_connections", lbls).GetGauge().GetValue(); v != 0 {
		t.Errorf("tcp_open_connections = %v after close, want 0", v)
	}
}

// A pending connection closed before it is identified (a failed handshake)
// is counted under the labels it was given, open and closed at once.
func TestPendingConnClosedUnidentified(t *testing.T) {
	r := New()
	client, server := tcpPair(t)
	mc := r.PendingConn(server, ConnLabels{Direction: "inbound", Peer: PeerSrc, TLS: TLSNotProvidedByRemote})
	client.Write([]byte("junk"))
	io.ReadFull(mc, make([]byte, 4))
	mc.MarkFailed()
	mc.Close()
	if mc.Identify(TLSTrue, "spiffe://cluster.local/ns/a/sa/b") {
		t.Fatal("Identify after Close relabelled the connection")
	}
	lbls := tcpLbls("inbound", "src", "", "not_provided_by_remote", "", "")
	fams := gather(t, r)
	for name, want := range map[string]float64{
		"tcp_open_total": 1, "tcp_open_connections": 0, "tcp_read_bytes_total": 4,
	} {
		m := series(t, fams, name, lbls)
		if v := m.GetCounter().GetValue() + m.GetGauge().GetValue(); v != want {
			t.Errorf("%s = %v, want %v", name, v, want)
		}
	}
	if v := series(t, fams, "tcp_close_total", tcpLbls("inbound", "src", "", "not_provided_by_remote", "", "", "classification", "failure")).GetCounter().GetValue(); v != 1 {
		t.Errorf("tcp_close_total{failure} = %v, want 1", v)
	}
}

// The peer's identity is client_id on an accepted connection and
// server_id on one the proxy opened.
func TestConnPeerIDLabel(t *testing.T) {
	r := New()
	const emoji = "spiffe://cluster.local/ns/emojivoto/sa/emoji"
	_, s := tcpPair(t)
	mc := r.Conn(s, ConnLabels{Direction: "outbound", Peer: PeerDst, Target: "10.0.0.1:4143", TLS: TLSTrue, PeerID: emoji})
	mc.Close()
	fams := gather(t, r)
	series(t, fams, "tcp_open_total", tcpLbls("outbound", "dst", "10.0.0.1:4143", "true", "", emoji))
}

// Bytes moved while Identify runs are counted exactly once (and the race
// detector sees no race).
func TestPendingConnConcurrentIdentify(t *testing.T) {
	r := New()
	client, server := tcpPair(t)
	mc := r.PendingConn(server, ConnLabels{Direction: "inbound", Peer: PeerSrc, TLS: TLSNotProvidedByRemote})
	const total = 1 << 20
	go func() {
		client.Write(make([]byte, total))
		client.CloseWrite()
	}()
	started, done := make(chan struct{}), make(chan int64)
	go func() {
		buf := make([]byte, 4096)
		var n int64
		for {
			k, err := mc.Read(buf)
			if n == 0 && k > 0 {
				close(started) // some bytes are pending now
			}
			n += int64(k)
			if err != nil {
				break
			}
		}
		done <- n
	}()
	<-started
	mc.Identify(TLSTrue, "spiffe://cluster.local/ns/a/sa/b")
	if n := <-done; n != total {
		t.Fatalf("read %d bytes, want %d", n, total)
	}
	mc.Close()
	fams := gather(t, r)
	if v := series(t, fams, "tcp_read_bytes_total", tcpLbls("inbound", "src", "", "true", "spiffe://cluster.local/ns/a/sa/b", "")).GetCounter().GetValue(); v != total {
		t.Errorf("tcp_read_bytes_total = %v, want %v", v, total)
	}
}

// A connection the peer resets closes as a failure; the proxy's own
// deadlines do not make one.
func TestConnResetIsFailure(t *testing.T) {
	r := New()
	client, server := tcpPair(t)
	mc := r.Conn(client, ConnLabels{Direction: "outbound", Peer: PeerDst, Target: "10.0.0.1:80", TLS: TLSNoLocalIdentity})

	mc.SetReadDeadline(time.Now().Add(-time.Second)) // as protocol detection times out
	if _, err := mc.Read(make([]byte, 1)); err == nil {
		t.Fatal("read past its deadline succeeded")
	}
	mc.SetReadDeadline(time.Now().Add(10 * time.Second))

	server.SetLinger(0)
	server.Close() // RST
	if _, err := mc.Read(make([]byte, 1)); err == nil || err == io.EOF {
		t.Fatalf("read from a reset connection: %v, want a reset error", err)
	}
	mc.Close()
	fams := gather(t, r)
	m := series(t, fams, "tcp_close_total", tcpLbls("outbound", "dst", "10.0.0.1:80", "no_local_identity", "", "", "classification", "failure"))
	if v := m.GetCounter().GetValue(); v != 1 {
		t.Errorf("tcp_close_total{failure} = %v, want 1", v)
	}
	if f := fams["tcp_close_total"]; len(f.GetMetric()) != 1 {
		t.Errorf("tcp_close_total has %d series, want only the failure", len(f.GetMetric()))
	}
}

// Each registry is separate, so that several proxies in one process keep
// their own numbers.
func TestRegistriesAreSeparate(t *testing.T) {
	a, b := New(), New()
	a.RequestStarted(Request{Direction: "outbound", Authority: "x:80"})
	if f, ok := gather(t, b)["request_total"]; ok && len(f.GetMetric()) > 0 {
		t.Error("a request counted in one registry shows in another")
	}
	var sb strings.Builder
	for name := range gather(t, a) {
		sb.WriteString(name + " ")
	}
	if !strings.Contains(sb.String(), "request_total") {
		t.Errorf("request_total missing from %s", sb.String())
	}
}

// TestResolvedSeries: requests of a label set already seen are counted in
// the same series as the first (resolved once, seriesOf), every outcome in
// its own, also past the per-series cache of outcomes; concurrent requests
// lose no count; and a known label set costs no allocation.
func TestResolvedSeries(t *testing.T) {
	r := New()
	q := Request{Direction: "outbound", Authority: "web.test:80", Target: "10.0.0.1:8080", TLS: TLSTrue, ServerID: "spiffe://cluster.local/ns/a/sa/web"}
	const workers, each = 8, 250
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				r.RequestStarted(q)
				// 40 statuses, more than maxResponseSeries.
				r.ResponseDone(q, Response{Status: 200 + (w*each+i)%40, Latency: time.Millisecond})
			}
		}()
	}
	wg.Wait()
	fams := gather(t, r)
	base := map[string]string{"direction": "outbound", "authority": "web.test:80", "target_addr": "10.0.0.1:8080", "route": "", "tls": "true", "client_id": "", "server_id": "spiffe://cluster.local/ns/a/sa/web"}
	if v := series(t, fams, "request_total", base).GetCounter().GetValue(); v != workers*each {
		t.Errorf("request_total = %v, want %v", v, workers*each)
	}
	for code := 200; code < 240; code++ {
		l := map[string]string{"status_code": strconv.Itoa(code), "grpc_status": "", "classification": "success", "error": ""}
		for k, v := range base {
			l[k] = v
		}
		if v := series(t, fams, "response_total", l).GetCounter().GetValue(); v != workers*each/40 {
			t.Errorf("response_total{status_code=%d} = %v, want %v", code, v, workers*each/40)
		}
		delete(l, "grpc_status")
		delete(l, "classification")
		delete(l, "error")
		if n := series(t, fams, "response_latency_ms", l).GetHistogram().GetSampleCount(); n != workers*each/40 {
			t.Errorf("response_latency_ms{status_code=%d} count = %v, want %v", code, n, workers*each/40)
		}
	}
	// A label set of its own: q's cached outcomes are whichever 16 of the 40
	// came first.
	q.Target = "10.0.0.2:8080"
	ok := Response{Status: 200, Latency: time.Millisecond}
	if n := testing.AllocsPerRun(100, func() { r.RequestStarted(q); r.ResponseDone(q, ok) }); n != 0 {
		t.Errorf("a request of a known label set allocates %v times, want 0", n)
	}
}

// BenchmarkRequestMetrics is what one request's metrics cost a proxy: its
// request_total, and its response's response_total and latency.
func BenchmarkRequestMetrics(b *testing.B) {
	r := New()
	q := Request{Direction: "outbound", Authority: "web.default.svc.cluster.local:80", Target: "10.244.1.17:8080", TLS: TLSTrue, ServerID: "spiffe://cluster.local/ns/default/sa/web"}
	o := Response{Status: 200, Latency: 3 * time.Millisecond}
	b.ReportAllocs()
	for b.Loop() {
		r.RequestStarted(q)
		r.ResponseDone(q, o)
	}
}
