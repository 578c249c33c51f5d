// Package web is the analysis provider that fetches a JSON document over
// HTTP and binds `result` to the value at jsonPath, as Argo Rollouts' web
// metric provider does.
package web

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/util/jsonpath"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/analysis"
)

// DefaultTimeout is a request's timeout without timeoutSeconds (Argo's).
const DefaultTimeout = 10 * time.Second

// MaxBody bounds the response read: a metric is a small document.
const MaxBody = 10 << 20

// Provider fetches web metrics. The zero value is ready.
type Provider struct {
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

// Measure sends the metric's request once and judges the value at its
// jsonPath.
func (p *Provider) Measure(ctx context.Context, _ *v1alpha1.AnalysisRun, metric v1alpha1.Metric, _ *v1alpha1.Measurement) (analysis.Result, error) {
	wm := metric.Provider.Web
	if wm == nil {
		return analysis.Result{}, fmt.Errorf("metric %s has no web provider", metric.Name)
	}
	method := wm.Method
	if method == "" {
		method = http.MethodGet
	}
	hasJSON := len(wm.JSONBody) > 0 && string(wm.JSONBody) != "null"
	switch {
	case wm.Body != "" && hasJSON:
		return analysis.Result{}, errors.New("provider.web: set body or jsonBody, not both")
	case (wm.Body != "" || hasJSON) && method == http.MethodGet:
		return analysis.Result{}, errors.New("provider.web: body and jsonBody go only with method POST or PUT")
	}
	path := wm.JSONPath
	if path == "" {
		path = "{$}"
	}
	jp := jsonpath.New("metric")
	if err := jp.Parse(path); err != nil {
		return analysis.Result{}, fmt.Errorf("provider.web.jsonPath %q: %w", path, err)
	}
	timeout := DefaultTimeout
	if wm.TimeoutSeconds > 0 {
		timeout = time.Duration(wm.TimeoutSeconds) * time.Second
	}
	var body io.Reader
	switch {
	case wm.Body != "":
		body = strings.NewReader(wm.Body)
	case hasJSON:
		body = bytes.NewReader(wm.JSONBody)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, string(method), wm.URL, body)
	if err != nil {
		return analysis.Result{}, fmt.Errorf("provider.web.url %q: %w", wm.URL, err)
	}
	for _, h := range wm.Headers {
		req.Header.Set(h.Key, h.Value)
	}
	if hasJSON {
		req.Header.Set("Content-Type", "application/json")
	}
	p.transports()
	c := &http.Client{Transport: p.secure}
	if wm.Insecure {
		c.Transport = p.insecure
	}
	resp, err := c.Do(req)
	if err != nil {
		return analysis.Result{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		return analysis.Result{}, fmt.Errorf("received non 2xx response code: %d", resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxBody))
	if err != nil {
		return analysis.Result{}, fmt.Errorf("reading the response of %s: %w", wm.URL, err)
	}
	return value(jp, b)
}

// value is the first value at the JSON path, and its JSON text. A body that
// is not JSON is result as a string: Argo records it and calls the
// measurement Successful without looking at the conditions; here the
// conditions judge it (`result == "ok"`), so a failure condition is never
// skipped.
func value(jp *jsonpath.JSONPath, body []byte) (analysis.Result, error) {
	var data any
	if err := json.Unmarshal(body, &data); err != nil {
		s := string(body)
		return analysis.Result{Value: s, Text: s}, nil
	}
	found, err := jp.FindResults(data)
	if err != nil {
		return analysis.Result{}, fmt.Errorf("could not find JSONPath in body: %w", err)
	}
	for _, rs := range found {
		if len(rs) == 0 {
			continue
		}
		v := rs[0].Interface()
		text, err := json.Marshal(v)
		if err != nil {
			return analysis.Result{}, err
		}
		return analysis.Result{Value: v, Text: string(text)}, nil
	}
	return analysis.Result{}, errors.New("result of web metric produced no value")
}
