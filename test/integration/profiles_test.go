package integration

import (
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A 90/10 SMI TrafficSplit, as a canary controller writes it, over 10,000
// requests lands within ±2% of its weights.
func TestTrafficSplitWeights(t *testing.T) {
	cc := controlPlane(t, service("web")+service("web-v1")+service("web-v2")+`---
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: web-split, namespace: default}
spec:
  service: web
  backends:
  - {service: web-v1, weight: 90}
  - {service: web-v2, weight: 10}
`)
	for _, v := range []string{"v1", "v2"} {
		body := v
		meshed(t, cc, "web-"+v, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Write([]byte(body))
		}))
	}
	p := proxy(t, cc)
	const n = 10000
	var counts sync.Map
	var failed atomic.Int64
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	work := make(chan struct{})
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				code, body, err := get(client, p, "web.default:80", "/")
				if err != nil || code != 200 {
					failed.Add(1)
					continue
				}
				c, _ := counts.LoadOrStore(body, new(atomic.Int64))
				c.(*atomic.Int64).Add(1)
			}
		}()
	}
	for i := 0; i < n; i++ {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d of %d requests failed", f, n)
	}
	share := func(v string) float64 {
		c, ok := counts.Load(v)
		if !ok {
			return 0
		}
		return float64(c.(*atomic.Int64).Load()) / n
	}
	if s := share("v1"); math.Abs(s-0.9) > 0.02 {
		t.Errorf("web-v1 got %.3f of requests, want 0.90±0.02", s)
	}
	if s := share("v2"); math.Abs(s-0.1) > 0.02 {
		t.Errorf("web-v2 got %.3f of requests, want 0.10±0.02", s)
	}
}

const flakyProfile = `---
apiVersion: meridian.io/v1alpha1
kind: ServiceProfile
metadata: {name: flaky.default.svc.cluster.local, namespace: default}
spec:
  routes:
  - name: GET /retry
    condition: {method: GET, pathRegex: /retry}
    isRetryable: true
  - name: GET /noretry
    condition: {method: GET, pathRegex: /noretry}
  - name: GET /slow
    condition: {method: GET, pathRegex: /slow}
    timeout: 100ms
`

// A backend failing every fifth request: behind a retryable route the
// client sees over 99% success within the retry budget; behind a
// non-retryable route it sees the failures.
func TestRetriesWithinBudget(t *testing.T) {
	cc := controlPlane(t, service("flaky")+flakyProfile)
	var seen atomic.Int64
	meshed(t, cc, "flaky", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if seen.Add(1)%5 == 0 {
			http.Error(w, "flaky", http.StatusInternalServerError)
			return
		}
		w.Write([]byte("ok"))
	}))
	p := proxy(t, cc)
	client := &http.Client{Timeout: 10 * time.Second}
	rate := func(path string) float64 {
		ok := 0
		const n = 1000
		for i := 0; i < n; i++ {
			if code, _, err := get(client, p, "flaky.default:80", path); err == nil && code == 200 {
				ok++
			}
		}
		return float64(ok) / n
	}
	if s := rate("/retry"); s <= 0.99 {
		t.Errorf("retryable route: success %.3f, want > 0.99", s)
	}
	if s := rate("/noretry"); s < 0.75 || s > 0.85 {
		t.Errorf("non-retryable route: success %.3f, want the backend's 0.80 (failures visible)", s)
	}
	// The proxy counted the retries, by route.
	out := scrape(t, p)
	if !strings.Contains(out, `retry_total{authority="flaky.default:80",direction="outbound",outcome="retried",route="GET /retry"}`) {
		t.Errorf("no retry_total for the retryable route in:\n%s", grep(out, "retry_total"))
	}
	if strings.Contains(out, `outcome="retried",route="GET /noretry"`) {
		t.Errorf("the non-retryable route was retried")
	}
}

// A route's timeout answers 504 when the response headers do not come in time.
func TestRouteTimeout(t *testing.T) {
	cc := controlPlane(t, service("flaky")+flakyProfile)
	release := make(chan struct{})
	defer close(release)
	meshed(t, cc, "flaky", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		w.Write([]byte("ok"))
	}))
	p := proxy(t, cc)
	client := &http.Client{Timeout: 10 * time.Second}
	code, _, err := get(client, p, "flaky.default:80", "/slow")
	if err != nil || code != http.StatusGatewayTimeout {
		t.Fatalf("slow route: %d %v, want 504", code, err)
	}
	if code, _, err := get(client, p, "flaky.default:80", "/fast"); err != nil || code != 200 {
		t.Fatalf("a route without a timeout: %d %v", code, err)
	}
}
