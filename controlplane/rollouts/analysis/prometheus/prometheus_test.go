package prometheus

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/analysis"
)

// server speaks Prometheus's HTTP API (/api/v1/query) on a real socket,
// answering each query with the body of its entry in answers.
func server(t *testing.T, answers map[string]string) (*httptest.Server, *sync.Map) {
	t.Helper()
	seen := &sync.Map{} // query → the request's X-Scope-OrgID
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/query" {
			http.NotFound(w, r)
			return
		}
		if err := r.ParseForm(); err != nil {
			t.Error(err)
		}
		q := r.Form.Get("query")
		seen.Store(q, r.Header.Get("X-Scope-OrgID"))
		body, ok := answers[q]
		if !ok {
			w.WriteHeader(http.StatusBadRequest)
			body = `{"status":"error","errorType":"bad_data","error":"1:1: parse error: unexpected"}`
		}
		if strings.HasPrefix(body, "SLOW") {
			time.Sleep(1500 * time.Millisecond)
			body = body[4:]
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv, seen
}

func metric(addr, query, cond string) v1alpha1.Metric {
	return v1alpha1.Metric{Name: "m", SuccessCondition: cond, Provider: v1alpha1.MetricProvider{Prometheus: &v1alpha1.PrometheusMetric{
		Address: addr, Query: query, Headers: []v1alpha1.WebMetricHeader{{Key: "X-Scope-OrgID", Value: "tenant-1"}}}}}
}

func TestPrometheusResults(t *testing.T) {
	srv, seen := server(t, map[string]string{
		"vector":  `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"pod":"a"},"value":[1700000000,"0.99"]},{"metric":{"pod":"b"},"value":[1700000000,"0.5"]}]}}`,
		"empty":   `{"status":"success","data":{"resultType":"vector","result":[]}}`,
		"scalar":  `{"status":"success","data":{"resultType":"scalar","result":[1700000000,"42"]}}`,
		"nan":     `{"status":"success","data":{"resultType":"scalar","result":[1700000000,"NaN"]}}`,
		"matrix":  `{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1700000000,"1"]]}]}}`,
		"warned":  `{"status":"success","warnings":["too many series"],"data":{"resultType":"scalar","result":[1700000000,"1"]}}`,
		"slow":    `SLOW{"status":"success","data":{"resultType":"scalar","result":[1700000000,"1"]}}`,
		"nanvec":  `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"NaN"]}]}}`,
		"ignored": `{}`,
	})
	p := &Provider{}
	one := int64(1)
	for _, tc := range []struct {
		query, cond string
		timeout     *int64
		text        string
		phase       v1alpha1.AnalysisPhase
		err         string
	}{
		{query: "vector", cond: "result[0] >= 0.95", text: "[0.99,0.5]", phase: v1alpha1.AnalysisPhaseSuccessful},
		{query: "vector", cond: "all(result, {# >= 0.95})", text: "[0.99,0.5]", phase: v1alpha1.AnalysisPhaseFailed},
		{query: "scalar", cond: "result > 40", text: "42", phase: v1alpha1.AnalysisPhaseSuccessful},
		// Argo: an empty vector is [], and result[0] is an error.
		{query: "empty", cond: "len(result) == 0", text: "[]", phase: v1alpha1.AnalysisPhaseSuccessful},
		{query: "empty", cond: "result[0] > 1", text: "[]", phase: v1alpha1.AnalysisPhaseError},
		// NaN stays NaN: the comparison is false, isNaN sees it.
		{query: "nan", cond: "result > 0.9", text: "NaN", phase: v1alpha1.AnalysisPhaseFailed},
		{query: "nanvec", cond: "isNaN(result[0])", text: "[NaN]", phase: v1alpha1.AnalysisPhaseSuccessful},
		{query: "matrix", err: "result type matrix is not supported"},
		{query: "bad(", err: "parse error"},
		{query: "slow", timeout: &one, err: "context deadline exceeded"},
	} {
		m := metric(srv.URL, tc.query, tc.cond)
		m.Provider.Prometheus.Timeout = tc.timeout
		r, err := p.Measure(context.Background(), nil, m, nil)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want %q", tc.query, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.query, err)
			continue
		}
		if r.Text != tc.text || r.Metadata[ResolvedQueryKey] != tc.query {
			t.Errorf("%s: text %q metadata %v, want %q", tc.query, r.Text, r.Metadata, tc.text)
		}
		if phase, msg := analysis.JudgeResult(&m, r); phase != tc.phase {
			t.Errorf("%s with %q: %s %s, want %s", tc.query, tc.cond, phase, msg, tc.phase)
		}
		if h, _ := seen.Load(tc.query); h != "tenant-1" {
			t.Errorf("%s: header X-Scope-OrgID %q, want the metric's", tc.query, h)
		}
	}
	r, err := p.Measure(context.Background(), nil, metric(srv.URL, "warned", ""), nil)
	if err != nil || r.Metadata[WarningsKey] != `"too many series"` {
		t.Errorf("warnings: %v %v", r.Metadata, err)
	}
	if v, ok := r.Value.(float64); !ok || v != 1 || math.IsNaN(v) {
		t.Errorf("scalar value %#v", r.Value)
	}
}

func TestPrometheusBadMetric(t *testing.T) {
	p := &Provider{}
	for _, tc := range []struct {
		addr, query, err string
		timeout          int64
	}{
		{"", "up", "provider.prometheus.address is not set", 0},
		{"prometheus:9090", "up", "is not a URL", 0},
		{"http://127.0.0.1:1", "", "provider.prometheus.query is not set", 0},
		{"http://127.0.0.1:1", "up", "provider.prometheus.timeout -1", -1},
		{"http://127.0.0.1:1", "up", "connection refused", 0},
	} {
		m := metric(tc.addr, tc.query, "")
		if tc.timeout != 0 {
			m.Provider.Prometheus.Timeout = &tc.timeout
		}
		if _, err := p.Measure(context.Background(), nil, m, nil); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%+v: %v, want %q", tc, err, tc.err)
		}
	}
}
