package web

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/analysis"
)

// A real HTTP server (and a TLS one with its own certificate) answering as
// a metrics endpoint would, echoing what it was sent.
func TestWebMetric(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/status":
			w.Write([]byte(`{"ok": true, "successPercent": 0.97, "data": {"items": [3, 4]}}`))
		case "/echo":
			json.NewEncoder(w).Encode(map[string]any{"method": r.Method, "body": string(b), "type": r.Header.Get("Content-Type"), "token": r.Header.Get("Authorization")})
		case "/text":
			w.Write([]byte("ok"))
		case "/slow":
			time.Sleep(1500 * time.Millisecond)
			w.Write([]byte("1"))
		case "/down":
			http.Error(w, "down", http.StatusServiceUnavailable)
		}
	})
	srv := httptest.NewServer(h)
	defer srv.Close()
	tlsSrv := httptest.NewTLSServer(h)
	defer tlsSrv.Close()

	p := &Provider{}
	for _, tc := range []struct {
		name  string
		web   v1alpha1.WebMetric
		cond  string
		text  string
		phase v1alpha1.AnalysisPhase
		err   string
	}{
		{name: "whole document", web: v1alpha1.WebMetric{URL: srv.URL + "/status"}, cond: "result.ok && result.successPercent >= 0.90",
			text: `{"data":{"items":[3,4]},"ok":true,"successPercent":0.97}`, phase: v1alpha1.AnalysisPhaseSuccessful},
		{name: "json path", web: v1alpha1.WebMetric{URL: srv.URL + "/status", JSONPath: "{$.successPercent}"}, cond: "result >= 0.99",
			text: "0.97", phase: v1alpha1.AnalysisPhaseFailed},
		{name: "list", web: v1alpha1.WebMetric{URL: srv.URL + "/status", JSONPath: "{$.data.items}"}, cond: "len(result) == 2",
			text: "[3,4]", phase: v1alpha1.AnalysisPhaseSuccessful},
		{name: "post json", web: v1alpha1.WebMetric{URL: srv.URL + "/echo", Method: "POST", JSONBody: json.RawMessage(`{"q":"x"}`),
			Headers: []v1alpha1.WebMetricHeader{{Key: "Authorization", Value: "Bearer t"}}},
			cond:  `result.method == "POST" && result.body == "{\"q\":\"x\"}" && result.type == "application/json" && result.token == "Bearer t"`,
			phase: v1alpha1.AnalysisPhaseSuccessful},
		{name: "put body", web: v1alpha1.WebMetric{URL: srv.URL + "/echo", Method: "PUT", Body: "plain", JSONPath: "{$.body}"}, cond: `result == "plain"`,
			text: `"plain"`, phase: v1alpha1.AnalysisPhaseSuccessful},
		{name: "not json", web: v1alpha1.WebMetric{URL: srv.URL + "/text"}, cond: `result == "ok"`, text: "ok", phase: v1alpha1.AnalysisPhaseSuccessful},
		{name: "tls insecure", web: v1alpha1.WebMetric{URL: tlsSrv.URL + "/status", JSONPath: "{$.ok}", Insecure: true}, cond: "result", text: "true", phase: v1alpha1.AnalysisPhaseSuccessful},
		{name: "tls verified", web: v1alpha1.WebMetric{URL: tlsSrv.URL + "/status"}, err: "certificate"},
		{name: "timeout", web: v1alpha1.WebMetric{URL: srv.URL + "/slow", TimeoutSeconds: 1}, err: "context deadline exceeded"},
		{name: "5xx", web: v1alpha1.WebMetric{URL: srv.URL + "/down"}, err: "received non 2xx response code: 503"},
		{name: "missing path", web: v1alpha1.WebMetric{URL: srv.URL + "/status", JSONPath: "{$.nope}"}, err: "could not find JSONPath in body"},
		{name: "bad path", web: v1alpha1.WebMetric{URL: srv.URL + "/status", JSONPath: "{$.a["}, err: "provider.web.jsonPath"},
		{name: "both bodies", web: v1alpha1.WebMetric{URL: srv.URL, Method: "POST", Body: "a", JSONBody: json.RawMessage(`{}`)}, err: "body or jsonBody, not both"},
		{name: "body with get", web: v1alpha1.WebMetric{URL: srv.URL, Body: "a"}, err: "only with method POST or PUT"},
	} {
		m := v1alpha1.Metric{Name: "m", SuccessCondition: tc.cond, Provider: v1alpha1.MetricProvider{Web: &tc.web}}
		r, err := p.Measure(context.Background(), nil, m, nil)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if tc.text != "" && r.Text != tc.text {
			t.Errorf("%s: value %q, want %q", tc.name, r.Text, tc.text)
		}
		if phase, msg := analysis.JudgeResult(&m, r); phase != tc.phase {
			t.Errorf("%s: %s %s, want %s", tc.name, phase, msg, tc.phase)
		}
	}
}
