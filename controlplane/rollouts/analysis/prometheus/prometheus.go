// Package prometheus is the analysis provider that runs a PromQL query
// against a Prometheus server's HTTP API (/api/v1/query), as Argo Rollouts'
// prometheus provider does: a vector gives `result` as a list of its
// samples' values, a scalar as a number.
package prometheus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/analysis"
)

// Metadata keys on a measurement (Argo's).
const (
	ResolvedQueryKey = "ResolvedPrometheusQuery"
	WarningsKey      = "warnings"
)

// DefaultTimeout is a query's timeout without `timeout` (Argo's).
const DefaultTimeout = 30 * time.Second

// Provider queries Prometheus. The zero value is ready; Now, when set, is
// the evaluation time of queries (tests).
type Provider struct {
	Now func() time.Time

	once             sync.Once
	secure, insecure *http.Transport // shared, so connections are reused
}

var _ analysis.Provider = (*Provider)(nil)

// CloseIdleConnections closes the connections kept alive between
// measurements (the runner stops).
func (p *Provider) CloseIdleConnections() {
	p.transports()
	p.secure.CloseIdleConnections()
	p.insecure.CloseIdleConnections()
}

func (p *Provider) transports() {
	p.once.Do(func() {
		p.secure = http.DefaultTransport.(*http.Transport).Clone()
		p.insecure = http.DefaultTransport.(*http.Transport).Clone()
		p.insecure.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the metric's insecure: true asks for it
	})
}

// headers adds the metric's headers to every request.
type headers struct {
	next http.RoundTripper
	h    []v1alpha1.WebMetricHeader
}

func (t headers) RoundTrip(r *http.Request) (*http.Response, error) {
	if len(t.h) > 0 {
		r = r.Clone(r.Context())
		for _, h := range t.h {
			r.Header.Set(h.Key, h.Value)
		}
	}
	return t.next.RoundTrip(r)
}

// Measure runs the metric's query once.
func (p *Provider) Measure(ctx context.Context, _ *v1alpha1.AnalysisRun, metric v1alpha1.Metric, _ *v1alpha1.Measurement) (analysis.Result, error) {
	pm := metric.Provider.Prometheus
	if pm == nil {
		return analysis.Result{}, fmt.Errorf("metric %s has no prometheus provider", metric.Name)
	}
	if pm.Address == "" {
		return analysis.Result{}, errors.New("provider.prometheus.address is not set: give the Prometheus server's URL")
	}
	if u, err := url.Parse(pm.Address); err != nil || u.Scheme == "" || u.Host == "" {
		return analysis.Result{}, fmt.Errorf("provider.prometheus.address %q is not a URL (such as http://prometheus.monitoring:9090)", pm.Address)
	}
	if pm.Query == "" {
		return analysis.Result{}, errors.New("provider.prometheus.query is not set")
	}
	timeout := DefaultTimeout
	if pm.Timeout != nil {
		if *pm.Timeout <= 0 {
			return analysis.Result{}, fmt.Errorf("provider.prometheus.timeout %d: must be a positive number of seconds", *pm.Timeout)
		}
		timeout = time.Duration(*pm.Timeout) * time.Second
	}
	p.transports()
	var rt http.RoundTripper = p.secure
	if pm.Insecure {
		rt = p.insecure
	}
	client, err := api.NewClient(api.Config{Address: pm.Address, RoundTripper: headers{next: rt, h: pm.Headers}})
	if err != nil {
		return analysis.Result{}, fmt.Errorf("provider.prometheus.address %q: %w", pm.Address, err)
	}
	now := time.Now()
	if p.Now != nil {
		now = p.Now()
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	value, warnings, _, err := promv1.NewAPI(client).Query(ctx, pm.Query, now)
	if err != nil {
		return analysis.Result{}, fmt.Errorf("prometheus query %q at %s: %w", pm.Query, pm.Address, err)
	}
	r, err := result(value)
	if err != nil {
		return analysis.Result{}, err
	}
	r.Metadata = map[string]string{ResolvedQueryKey: pm.Query}
	if len(warnings) > 0 {
		// As Argo: "w1", "w2".
		q := make([]string, len(warnings))
		for i, w := range warnings {
			q[i] = `"` + w + `"`
		}
		r.Metadata[WarningsKey] = strings.Join(q, ", ")
	}
	return r, nil
}

// result is Argo's processResponse: a scalar is a number, a vector the list
// of its values (empty when the query matched nothing; NaN kept as NaN,
// for isNaN / default in the conditions); a matrix or a string is an error.
func result(v model.Value) (analysis.Result, error) {
	switch x := v.(type) {
	case *model.Scalar:
		return analysis.Result{Value: float64(x.Value), Text: x.Value.String()}, nil
	case model.Vector:
		vals := make([]float64, 0, len(x))
		texts := make([]string, 0, len(x))
		for _, s := range x {
			if s == nil {
				continue
			}
			vals = append(vals, float64(s.Value))
			texts = append(texts, s.Value.String())
		}
		return analysis.Result{Value: vals, Text: "[" + strings.Join(texts, ",") + "]"}, nil
	case nil:
		return analysis.Result{}, errors.New("prometheus gave no result")
	}
	return analysis.Result{}, fmt.Errorf("prometheus result type %s is not supported: the query must give a vector or a scalar", v.Type())
}
