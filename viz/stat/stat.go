// Package stat computes golden metrics (success rate, requests per second,
// latency percentiles, open TCP connections) from two scrapes of proxies'
// /metrics, the way Prometheus's rate() and histogram_quantile() would over
// the same window. It is what `meridian viz stat` shows.
package stat

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The proxy's metrics this package reads (proxy/metrics).
const (
	responseTotal = "response_total"
	latencyMS     = "response_latency_ms"
	tcpOpen       = "tcp_open_connections"
)

// Scrape is one proxy's metrics at one moment.
type Scrape struct {
	Time     time.Time
	Families map[string]*dto.MetricFamily
}

// Parse reads a /metrics body (Prometheus text format) taken at at.
func Parse(r io.Reader, at time.Time) (Scrape, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return Scrape{}, fmt.Errorf("parsing the proxy's metrics: %w", err)
	}
	return Scrape{Time: at, Families: fams}, nil
}

// Golden are golden metrics summed over proxies, for one direction of
// their traffic: "inbound" (requests the workload served) or "outbound"
// (requests it made).
type Golden struct {
	Direction string
	// Match, when set, keeps only the series it accepts (one route, one
	// client): see Group.
	Match func(*dto.Metric) bool

	Requests  float64 // responses in the window (each attempt of a retried request counts)
	Successes float64 // of which successes (not 5xx, gRPC OK, not broken off)
	rps       float64 // each proxy's responses over its own window, summed
	bounds    []float64
	buckets   []float64 // latency samples per bucket (not cumulative), +Inf last
	TCPConns  float64   // connections open at the end of the window (inbound: accepted)
	Proxies   int       // proxies added
}

// NewGolden returns empty metrics for direction.
func NewGolden(direction string) *Golden { return &Golden{Direction: direction} }

// Add adds what one proxy did between two of its scrapes. A series that
// went down was reset (the proxy restarted): its value after counts whole,
// as rate() counts it.
func (g *Golden) Add(before, after Scrape) {
	g.Proxies++
	dt := after.Time.Sub(before.Time).Seconds()
	var n float64
	for _, m := range g.series(after, responseTotal) {
		d := delta(counter(m), counter(find(before, responseTotal, m)))
		n += d
		if label(m, "classification") == "success" {
			g.Successes += d
		}
	}
	g.Requests += n
	if dt > 0 {
		g.rps += n / dt
	}
	for _, m := range g.series(after, latencyMS) {
		g.addHistogram(m.GetHistogram(), find(before, latencyMS, m).GetHistogram())
	}
	for _, m := range g.series(after, tcpOpen) {
		if label(m, "peer") == "src" && g.Direction == "inbound" || label(m, "peer") == "dst" && g.Direction == "outbound" {
			g.TCPConns += m.GetGauge().GetValue()
		}
	}
}

// RPS is the responses per second over the window.
func (g *Golden) RPS() float64 { return g.rps }

// SuccessRate is the share of successful responses; false without any.
func (g *Golden) SuccessRate() (float64, bool) {
	if g.Requests == 0 {
		return 0, false
	}
	return g.Successes / g.Requests, true
}

// Quantile is the q-quantile (0 < q < 1) of the latency to response headers,
// in milliseconds, interpolated within its bucket as histogram_quantile()
// does; false without any response. A quantile in the last, unbounded
// bucket is the highest bound.
func (g *Golden) Quantile(q float64) (float64, bool) {
	var total float64
	for _, c := range g.buckets {
		total += c
	}
	if total == 0 {
		return 0, false
	}
	rank := q * total
	var cum, lower float64
	for i, c := range g.buckets {
		if i == len(g.bounds) {
			return g.bounds[len(g.bounds)-1], true
		}
		upper := g.bounds[i]
		if cum+c >= rank && c > 0 {
			return lower + (upper-lower)*(rank-cum)/c, true
		}
		cum += c
		lower = upper
	}
	return g.bounds[len(g.bounds)-1], true
}

func (g *Golden) addHistogram(after, before *dto.Histogram) {
	if after == nil {
		return
	}
	bs := finite(after.GetBucket())
	if g.bounds == nil {
		g.bounds = make([]float64, len(bs))
		for i, b := range bs {
			g.bounds[i] = b.GetUpperBound()
		}
		g.buckets = make([]float64, len(bs)+1)
	}
	if len(bs) != len(g.bounds) {
		return // another proxy version's buckets: not comparable
	}
	reset := before == nil || before.GetSampleCount() > after.GetSampleCount()
	var bsBefore []*dto.Bucket
	if !reset {
		bsBefore = finite(before.GetBucket())
	}
	cumBefore := func(i int) float64 {
		if i >= len(bsBefore) {
			return 0
		}
		return float64(bsBefore[i].GetCumulativeCount())
	}
	countBefore := 0.0
	if !reset {
		countBefore = float64(before.GetSampleCount())
	}
	var prev float64
	for i, b := range bs {
		cum := float64(b.GetCumulativeCount()) - cumBefore(i)
		g.buckets[i] += cum - prev
		prev = cum
	}
	g.buckets[len(bs)] += float64(after.GetSampleCount()) - countBefore - prev
}

// finite drops the +Inf bucket, which the text format spells out; the
// sample count is that bucket's cumulative count.
func finite(bs []*dto.Bucket) []*dto.Bucket {
	if n := len(bs); n > 0 && math.IsInf(bs[n-1].GetUpperBound(), 1) {
		return bs[:n-1]
	}
	return bs
}

// series are the series of name in s whose direction is g's.
func (g *Golden) series(s Scrape, name string) []*dto.Metric {
	f := s.Families[name]
	if f == nil {
		return nil
	}
	var out []*dto.Metric
	for _, m := range f.GetMetric() {
		if !inDirection(m, g.Direction) {
			continue
		}
		// The kubelet's probes are not the workload's traffic: left out
		// unless Match asks for them (Group keeps them under their route).
		if g.Match == nil && label(m, "route") == RouteProbe || g.Match != nil && !g.Match(m) {
			continue
		}
		out = append(out, m)
	}
	return out
}

// inDirection says whether m is traffic of direction. A gateway proxy's
// request series are outbound (they leave it for backends) and carry its
// Gateway's name (the gateway label, proxy/metrics.NewGateway): each is
// also a request it served to a client from outside, so they count as
// inbound too, and the gateway shows like any workload.
func inDirection(m *dto.Metric, direction string) bool {
	d := label(m, "direction")
	return d == direction || direction == "inbound" && d == "outbound" && label(m, GatewayLabel) != ""
}

// GatewayLabel names the Gateway on a gateway proxy's request series.
const GatewayLabel = "gateway"

// RouteProbe is the route label the inbound proxy gives the kubelet's
// probes (proxy/metrics.RouteProbe).
const RouteProbe = "probe"

// Pair is one proxy's two scrapes, at the start and at the end of a window.
type Pair struct{ Before, After Scrape }

// Group splits the golden metrics of direction by the values of labels
// (e.g. "route", or "client_id" and "tls"): one Golden per combination that
// has a response in any proxy's window. Keys join the values with "|".
func Group(pairs []Pair, direction string, labels ...string) map[string]*Golden {
	key := func(m *dto.Metric) string {
		vs := make([]string, len(labels))
		for i, l := range labels {
			vs[i] = label(m, l)
		}
		return strings.Join(vs, "|")
	}
	keys := map[string]bool{}
	for _, p := range pairs {
		all := NewGolden(direction)
		all.Match = func(*dto.Metric) bool { return true } // the kubelet's probes included
		for _, m := range all.series(p.After, responseTotal) {
			if delta(counter(m), counter(find(p.Before, responseTotal, m))) > 0 {
				keys[key(m)] = true
			}
		}
	}
	out := map[string]*Golden{}
	for k := range keys {
		g := NewGolden(direction)
		g.Match = func(m *dto.Metric) bool { return key(m) == k }
		for _, p := range pairs {
			g.Add(p.Before, p.After)
		}
		out[k] = g
	}
	return out
}

// find is the series of name in s with m's labels, or nil.
func find(s Scrape, name string, m *dto.Metric) *dto.Metric {
	f := s.Families[name]
	if f == nil {
		return nil
	}
	key := labelKey(m)
	for _, o := range f.GetMetric() {
		if labelKey(o) == key {
			return o
		}
	}
	return nil
}

func labelKey(m *dto.Metric) string {
	var parts []string
	for _, l := range m.GetLabel() {
		parts = append(parts, l.GetName()+"="+l.GetValue())
	}
	slices.Sort(parts)
	return strings.Join(parts, "\x00")
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func counter(m *dto.Metric) float64 {
	switch {
	case m == nil:
		return 0
	case m.Counter == nil && m.Untyped != nil:
		return m.GetUntyped().GetValue()
	}
	return m.GetCounter().GetValue()
}

func delta(after, before float64) float64 {
	if after < before {
		return after
	}
	return after - before
}

// Format helpers for tables: "-" when there is nothing to show.

// Percent formats a rate as "97.50%".
func Percent(v float64, ok bool) string {
	if !ok {
		return "-"
	}
	return fmt.Sprintf("%.2f%%", 100*v)
}

// Millis formats a latency as "12ms" (or "0.5ms" below 1ms).
func Millis(v float64, ok bool) string {
	switch {
	case !ok:
		return "-"
	case math.Round(v*10) < 10: // 0.96 is "1ms", not "1.0ms"
		return fmt.Sprintf("%.1fms", v)
	}
	return fmt.Sprintf("%.0fms", math.Round(v))
}
