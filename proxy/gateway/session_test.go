package gateway

import (
	"net/http"
	"testing"
	"time"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

// Session persistence: the first answer names the backend (a cookie, or a
// header), and requests that bring it back go to that backend.
func TestSessionPersistence(t *testing.T) {
	a, b := startEcho(t, "a", nil), startEcho(t, "b", nil)
	pn := freePort(t)
	cookie := ruleTo("cookie", prefix("/c"), to("a.svc:80", 1), to("b.svc:80", 1))
	cookie.SessionPersistence = &gatewaypb.SessionPersistence{Type: gatewaypb.SessionPersistence_COOKIE, Name: "gw-session", AbsoluteTimeout: dur(time.Hour), PermanentCookie: true}
	header := ruleTo("header", prefix("/h"), to("a.svc:80", 1), to("b.svc:80", 1))
	header.SessionPersistence = &gatewaypb.SessionPersistence{Type: gatewaypb.SessionPersistence_HEADER, Name: "X-Session"}
	startGateway(t, dsts(t, map[string][]string{"a.svc:80": {a.addr}, "b.svc:80": {b.addr}}), snap("v1", httpPort(pn,
		httpListener("l", "", hostOf("", cookie, header)))))

	resp, _ := get(t, nil, pn, "x.test", "/c")
	var sc *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "gw-session" {
			sc = c
		}
	}
	if sc == nil || sc.MaxAge != 3600 || !sc.HttpOnly {
		t.Fatalf("no permanent session cookie: %v", resp.Header["Set-Cookie"])
	}
	first := resp.Header.Get("X-Backend")
	for range 30 {
		resp, _ := get(t, nil, pn, "x.test", "/c", "Cookie", "gw-session="+sc.Value)
		if got := resp.Header.Get("X-Backend"); got != first {
			t.Fatalf("cookie session: served by %s, then %s", first, got)
		}
	}
	resp, _ = get(t, nil, pn, "x.test", "/h")
	tok, first := resp.Header.Get("X-Session"), resp.Header.Get("X-Backend")
	if tok == "" {
		t.Fatal("no session header")
	}
	for range 30 {
		resp, _ := get(t, nil, pn, "x.test", "/h", "X-Session", tok)
		if got := resp.Header.Get("X-Backend"); got != first {
			t.Fatalf("header session: served by %s, then %s", first, got)
		}
	}
	// Without a session both backends serve.
	seen := map[string]bool{}
	for range 40 {
		resp, _ := get(t, nil, pn, "x.test", "/c")
		seen[resp.Header.Get("X-Backend")] = true
	}
	if !seen["a"] || !seen["b"] {
		t.Errorf("without a session: served by %v only", seen)
	}
}
