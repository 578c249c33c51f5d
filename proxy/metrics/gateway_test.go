package metrics

import (
	"testing"
	"time"
)

// A gateway registry labels request metrics with the parts of the
// request's GatewayRoute; a sidecar's keeps its labels and shows a Route as is.
func TestGatewayLabels(t *testing.T) {
	key := GatewayRoute("ns/gw", "https", "HTTPRoute/ns/web/0", "ns/web:80")
	q := Request{Direction: "outbound", Authority: "web.ns.svc:80", Target: "10.0.0.1:8080", Route: key, TLS: TLSTrue}
	for _, c := range []struct {
		name string
		r    *Registry
		want map[string]string
	}{
		{"gateway", NewGateway(), map[string]string{"gateway": "ns/gw", "listener": "https", "route": "HTTPRoute/ns/web/0", "backend": "ns/web:80", "authority": "web.ns.svc:80"}},
		{"sidecar", New(), map[string]string{"route": key, "authority": "web.ns.svc:80"}},
	} {
		c.r.RequestStarted(q)
		c.r.ResponseDone(q, Response{Status: 200, Latency: time.Millisecond})
		c.r.Retry(q, "retried")
		fams, err := c.r.Gatherer().Gather()
		if err != nil {
			t.Fatal(err)
		}
		seen := 0
		for _, f := range fams {
			switch f.GetName() {
			case "request_total", "response_total", "response_latency_ms", "retry_total":
			default:
				continue
			}
			for _, m := range f.GetMetric() {
				got := map[string]string{}
				for _, l := range m.GetLabel() {
					got[l.GetName()] = l.GetValue()
				}
				for k, v := range c.want {
					if got[k] != v {
						t.Errorf("%s: %s{%s=%q}, want %q", c.name, f.GetName(), k, got[k], v)
					}
				}
				if _, ok := got["gateway"]; ok != (c.name == "gateway") {
					t.Errorf("%s: %s has a gateway label: %v", c.name, f.GetName(), ok)
				}
				seen++
			}
		}
		if seen != 4 {
			t.Errorf("%s: %d series, want 4", c.name, seen)
		}
	}
}
