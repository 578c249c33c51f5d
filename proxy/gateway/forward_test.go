package gateway

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
)

// The golden metrics carry gateway, listener, route and backend.
func TestMetricsLabels(t *testing.T) {
	e := startEcho(t, "web", nil)
	pn := freePort(t)
	g := startGateway(t, dsts(t, map[string][]string{"web.svc:80": {e.addr}}), snap("v1", httpPort(pn,
		httpListener("http", "", hostOf("", ruleTo("web", prefix("/"), to("web.svc:80", 1)))))))
	for range 3 {
		get(t, nil, pn, "x.test", "/")
	}
	want := map[string]string{"gateway": "gw-ns/gw", "listener": "http", "route": "HTTPRoute/ns/web/0", "backend": "ns/web:80",
		"direction": "outbound", "authority": "web.svc:80", "target_addr": e.addr, "status_code": "200", "classification": "success"}
	found := false
	fams := gatherUntil(t, g, func(fams []*dto.MetricFamily) bool {
		for _, f := range fams {
			if f.GetName() != "response_total" {
				continue
			}
			for _, m := range f.GetMetric() {
				if labelsMatch(m, want) && m.GetCounter().GetValue() == 3 {
					found = true
				}
			}
		}
		return found
	})
	if !found {
		t.Errorf("no response_total with %v and value 3 in %v", want, fams)
	}
}

func labelsMatch(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, l := range m.GetLabel() {
		if v, ok := want[l.GetName()]; ok {
			if v != l.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}

// Rule.retry: responses with a listed code and connection errors are
// tried again, up to attempts more times, bodies included; other codes are
// passed on at once. Rule.timeouts: backend_request bounds each try,
// request the whole exchange until the response headers (504).
func TestRetriesAndTimeouts(t *testing.T) {
	var calls atomic.Int64
	flaky := startEcho(t, "flaky", func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		body, _ := io.ReadAll(r.Body)
		switch {
		case r.URL.Path == "/slow-first" && n == 1, r.URL.Path == "/slow":
			time.Sleep(300 * time.Millisecond)
		case r.URL.Path == "/fail-twice" && n <= 2:
			w.WriteHeader(503)
			return
		case r.URL.Path == "/reset-first" && n == 1:
			c, _, _ := http.NewResponseController(w).Hijack()
			c.Close() // no response: a connection error
			return
		case r.URL.Path == "/app-gone-first" && n == 1:
			// What a meshed backend's proxy answers when its application
			// has exited (a rolling restart).
			w.Header().Set(httpproxy.ErrorHeader, "connect")
			w.WriteHeader(503)
			return
		case r.URL.Path == "/app-lost-first" && n == 1:
			// A meshed backend's proxy whose application closed the
			// connection mid-exchange.
			w.Header().Set(httpproxy.ErrorHeader, "upstream")
			w.WriteHeader(502)
			return
		case r.URL.Path == "/always-500":
			w.WriteHeader(500)
			return
		}
		w.Write(body)
	})
	pn := freePort(t)
	retry := &gatewaypb.Retry{Attempts: 2, Codes: []uint32{503}, Backoff: dur(10 * time.Millisecond)}
	r1 := ruleTo("retry", prefix("/fail-twice"), to("flaky.svc:80", 1))
	r1.Retry = retry
	r2 := ruleTo("500", prefix("/always-500"), to("flaky.svc:80", 1))
	r2.Retry = retry
	r3 := ruleTo("per-try", prefix("/slow-first"), to("flaky.svc:80", 1))
	r3.Retry = &gatewaypb.Retry{Attempts: 1}
	r3.Timeouts = &gatewaypb.Timeouts{BackendRequest: dur(100 * time.Millisecond)}
	r4 := ruleTo("request", prefix("/slow"), to("flaky.svc:80", 1))
	r4.Timeouts = &gatewaypb.Timeouts{Request: dur(100 * time.Millisecond)}
	r5 := ruleTo("reset", prefix("/reset-first"), to("flaky.svc:80", 1))
	r5.Retry = &gatewaypb.Retry{Attempts: 1}
	startGateway(t, dsts(t, map[string][]string{"flaky.svc:80": {flaky.addr}}), snap("v1", httpPort(pn,
		httpListener("l", "", hostOf("", r1, r2, r3, r4, r5)))))
	post := func(path, body string) (*http.Response, string) {
		t.Helper()
		calls.Store(0)
		req, _ := http.NewRequest("POST", "http://127.0.0.1:"+itoa(pn)+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	for _, c := range []struct {
		path       string
		wantStatus int
		wantCalls  int64
	}{
		{"/fail-twice", 200, 3}, // 503, 503, then the body echoed
		{"/always-500", 500, 1}, // 500 is not a listed code
		{"/slow-first", 200, 2}, // the first try timed out
		{"/slow", 504, 1},       // the request timeout
	} {
		resp, body := post(c.path, "payload")
		if resp.StatusCode != c.wantStatus || calls.Load() != c.wantCalls {
			t.Errorf("%s: %s after %d calls, want %d after %d", c.path, resp.Status, calls.Load(), c.wantStatus, c.wantCalls)
		}
		if c.wantStatus == 200 && body != "payload" {
			t.Errorf("%s: body %q, want the request's echoed on the last try", c.path, body)
		}
	}

	// No retry policy: a GET whose connection fails before a response, or
	// whose meshed backend's proxy could not reach its application, is
	// tried again (idempotent, no body); a POST is not.
	r6 := ruleTo("none", prefix("/"), to("flaky.svc:80", 1))
	pn2 := freePort(t)
	startGateway(t, dsts(t, map[string][]string{"flaky.svc:80": {flaky.addr}}), snap("v1", httpPort(pn2,
		httpListener("l", "", hostOf("", r6)))))
	for _, c := range []struct {
		method     string
		wantStatus int
		wantCalls  int64
		path       string
	}{{"GET", 200, 2, "/reset-first"}, {"POST", 502, 1, "/reset-first"}, {"GET", 200, 2, "/app-gone-first"}, {"POST", 503, 1, "/app-gone-first"}, {"GET", 200, 2, "/app-lost-first"}} {
		calls.Store(0)
		req, _ := http.NewRequest(c.method, "http://127.0.0.1:"+itoa(pn2)+c.path, nil)
		if c.method == "POST" {
			req.Body, req.ContentLength = io.NopCloser(strings.NewReader("x")), 1
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.wantStatus || calls.Load() != c.wantCalls {
			t.Errorf("%s %s with no retry policy: %s after %d calls, want %d after %d", c.method, c.path, resp.Status, calls.Load(), c.wantStatus, c.wantCalls)
		}
	}
}

// Retries of what is not a response (HTTPRouteRetryConnectionError and
// HTTPRouteRetryBackendTimeout): with a retry policy, a POST whose
// connection is closed before a response is sent again, body included; a
// try that outlasts timeouts.backendRequest is cancelled and tried again
// after at least the backoff, and when every try times out the client gets
// 504 after attempts+1 tries.
func TestRetryConnectionErrorAndBackendTimeout(t *testing.T) {
	var calls atomic.Int64
	var mu sync.Mutex
	var at []time.Time
	flaky := startEcho(t, "flaky", func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		mu.Lock()
		at = append(at, time.Now())
		mu.Unlock()
		body, _ := io.ReadAll(r.Body)
		switch {
		case r.URL.Path == "/reset-first" && n == 1:
			c, _, _ := http.NewResponseController(w).Hijack()
			c.Close() // no response: a connection error
			return
		case r.URL.Path == "/slow/first" && n == 1, r.URL.Path == "/slow":
			select {
			case <-time.After(2 * time.Second):
			case <-r.Context().Done(): // the gateway cancelled the try
			}
			return
		}
		w.Write(body)
	})
	const perTry, backoff = 100 * time.Millisecond, 150 * time.Millisecond
	reset := ruleTo("reset", prefix("/reset-first"), to("flaky.svc:80", 1))
	reset.Retry = &gatewaypb.Retry{Attempts: 1, Codes: []uint32{503}}
	slow := ruleTo("slow", prefix("/slow"), to("flaky.svc:80", 1))
	slow.Retry = &gatewaypb.Retry{Attempts: 2, Backoff: dur(backoff)}
	slow.Timeouts = &gatewaypb.Timeouts{BackendRequest: dur(perTry)}
	pn := freePort(t)
	startGateway(t, dsts(t, map[string][]string{"flaky.svc:80": {flaky.addr}}), snap("v1", httpPort(pn,
		httpListener("l", "", hostOf("", reset, slow)))))
	for _, c := range []struct {
		path       string
		wantStatus int
		wantCalls  int
	}{
		{"/reset-first", 200, 2}, // the connection error, then the body echoed
		{"/slow/first", 200, 2},  // the first try timed out
		{"/slow", 504, 3},        // every try timed out
	} {
		calls.Store(0)
		mu.Lock()
		at = nil
		mu.Unlock()
		start := time.Now()
		req, _ := http.NewRequest("POST", "http://127.0.0.1:"+itoa(pn)+c.path, strings.NewReader("payload"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		took := time.Since(start)
		if resp.StatusCode != c.wantStatus || calls.Load() != int64(c.wantCalls) {
			t.Errorf("POST %s: %s after %d calls, want %d after %d", c.path, resp.Status, calls.Load(), c.wantStatus, c.wantCalls)
		}
		if c.wantStatus == 200 && string(b) != "payload" {
			t.Errorf("POST %s: body %q, want the request's echoed on the last try", c.path, b)
		}
		if c.path == "/reset-first" {
			continue
		}
		// Every try but a last one that answers lasts its timeout, and
		// each retry waits the backoff first: the exchange takes at least
		// that long, whatever the machine's load (which only adds to it;
		// gaps between the tries' arrivals at the backend, measured before,
		// moved by the connection set-ups' delays and failed on a loaded
		// machine), and no more than the tries' timeouts and backoffs and
		// some slack (never the backend's 2s).
		timedOut := c.wantCalls
		if c.wantStatus == 200 {
			timedOut--
		}
		if least := time.Duration(timedOut)*perTry + time.Duration(c.wantCalls-1)*backoff; took < least {
			t.Errorf("POST %s took %v, want at least %v (%d tries timed out, %d backoffs)", c.path, took, least, timedOut, c.wantCalls-1)
		}
		mu.Lock()
		if len(at) != c.wantCalls {
			t.Errorf("POST %s: the backend saw %d tries, want %d", c.path, len(at), c.wantCalls)
		}
		mu.Unlock()
		if limit := time.Duration(c.wantCalls)*perTry + time.Duration(c.wantCalls-1)*backoff + time.Second; took > limit {
			t.Errorf("POST %s took %v, want under %v", c.path, took, limit)
		}
	}
}
