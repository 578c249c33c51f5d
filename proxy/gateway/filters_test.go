package gateway

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

func withFilters(r *gatewaypb.Rule, fs ...*gatewaypb.Filter) *gatewaypb.Rule {
	r.Filters = fs
	return r
}

// The HTTPRoute filters of a snapshot act on requests through the gateway:
// header modifiers both ways (and per backend), a redirect that answers
// with the listener's port, a prefix rewrite, a CORS preflight, and a
// mirror to a second backend whose answer is ignored.
func TestFilters(t *testing.T) {
	web := startEcho(t, "web", nil)
	var mirrored atomic.Int64
	shadow := startEcho(t, "shadow", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/mirror/x" {
			mirrored.Add(1)
		}
		w.WriteHeader(http.StatusTeapot)
	})
	pn := freePort(t)
	perBackend := to("web.svc:80", 1)
	perBackend.Filters = []*gatewaypb.Filter{{Filter: &gatewaypb.Filter_RequestHeaders{RequestHeaders: &gatewaypb.HeaderModifier{Set: map[string]string{"X-Backend-Filter": "yes"}}}}}
	startGateway(t, dsts(t, map[string][]string{"web.svc:80": {web.addr}, "shadow.svc:80": {shadow.addr}}), snap("v1", httpPort(pn,
		httpListener("l", "", hostOf("",
			withFilters(ruleTo("headers", prefix("/headers"), perBackend),
				&gatewaypb.Filter{Filter: &gatewaypb.Filter_RequestHeaders{RequestHeaders: &gatewaypb.HeaderModifier{
					Set: map[string]string{"X-Set": "set"}, Add: []*gatewaypb.Header{{Name: "X-Add", Value: "added"}}, Remove: []string{"X-Remove"}}}},
				&gatewaypb.Filter{Filter: &gatewaypb.Filter_ResponseHeaders{ResponseHeaders: &gatewaypb.HeaderModifier{
					Set: map[string]string{"X-Response": "set"}, Remove: []string{"X-Path"}}}}),
			withFilters(ruleTo("redirect", prefix("/old")),
				&gatewaypb.Filter{Filter: &gatewaypb.Filter_Redirect{Redirect: &gatewaypb.Redirect{
					Hostname: "new.test", Path: &gatewaypb.PathModifier{Modifier: &gatewaypb.PathModifier_ReplacePrefix{ReplacePrefix: "/new"}}, StatusCode: 301}}}),
			withFilters(ruleTo("rewrite", prefix("/api"), to("web.svc:80", 1)),
				&gatewaypb.Filter{Filter: &gatewaypb.Filter_Rewrite{Rewrite: &gatewaypb.Rewrite{
					Hostname: "internal.test", Path: &gatewaypb.PathModifier{Modifier: &gatewaypb.PathModifier_ReplacePrefix{ReplacePrefix: "/v2"}}}}}),
			withFilters(ruleTo("cors", prefix("/cors"), to("web.svc:80", 1)),
				&gatewaypb.Filter{Filter: &gatewaypb.Filter_Cors{Cors: &gatewaypb.CORS{
					AllowOrigins: []string{"https://*.example.com"}, AllowMethods: []string{"GET", "POST"}, MaxAgeSeconds: 60}}}),
			withFilters(ruleTo("mirror", prefix("/mirror"), to("web.svc:80", 1)),
				&gatewaypb.Filter{Filter: &gatewaypb.Filter_Mirror{Mirror: &gatewaypb.Mirror{Backend: to("shadow.svc:80", 1)}}}),
		)))))

	resp, body := get(t, nil, pn, "x.test", "/headers", "X-Remove", "gone", "X-Add", "first")
	if body != "web" || resp.Header.Get("X-Got-X-Set") != "set" || resp.Header.Get("X-Got-X-Add") != "first,added" ||
		resp.Header.Get("X-Got-X-Remove") != "" || resp.Header.Get("X-Got-X-Backend-Filter") != "yes" {
		t.Errorf("request headers: %q %v", body, resp.Header)
	}
	if resp.Header.Get("X-Response") != "set" || resp.Header.Get("X-Path") != "" {
		t.Errorf("response headers: %v", resp.Header)
	}

	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 10 * time.Second}
	resp, _ = get(t, noFollow, pn, "x.test", "/old/page?q=1")
	if want := "http://new.test:" + itoa(pn) + "/new/page?q=1"; resp.StatusCode != 301 || resp.Header.Get("Location") != want {
		t.Errorf("redirect: %s Location %q, want 301 %q", resp.Status, resp.Header.Get("Location"), want)
	}

	resp, _ = get(t, nil, pn, "x.test", "/api/users?id=7")
	if resp.Header.Get("X-Path") != "/v2/users?id=7" || resp.Header.Get("X-Host") != "internal.test" {
		t.Errorf("rewrite: path %q host %q", resp.Header.Get("X-Path"), resp.Header.Get("X-Host"))
	}

	req, _ := http.NewRequest(http.MethodOptions, "http://127.0.0.1:"+itoa(pn)+"/cors", nil)
	req.Host = "x.test"
	req.Header.Set("Origin", "https://app.example.com")
	req.Header.Set("Access-Control-Request-Method", "POST")
	pre, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	pre.Body.Close()
	if pre.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" || pre.Header.Get("X-Backend") != "" || pre.Header.Get("Access-Control-Max-Age") != "60" {
		t.Errorf("CORS preflight: %s %v (answered by the gateway, not the backend)", pre.Status, pre.Header)
	}

	for range 5 {
		if resp, body := get(t, nil, pn, "x.test", "/mirror/x"); resp.StatusCode != 200 || body != "web" {
			t.Fatalf("mirrored request: %s %q, want the primary's answer", resp.Status, body)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for mirrored.Load() < 5 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := mirrored.Load(); n != 5 {
		t.Errorf("%d of 5 requests mirrored", n)
	}
}
