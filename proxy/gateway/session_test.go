package gateway

import (
	"hash/fnv"
	"net/http"
	"strconv"
	"strings"
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
	if seen := servedBy(t, pn, "/c"); !seen["a"] || !seen["b"] {
		t.Errorf("without a session: served by %v only", seen)
	}
}

// servedBy is the X-Backend values of 40 requests for path without a
// session.
func servedBy(t *testing.T, pn uint32, path string) map[string]bool {
	t.Helper()
	seen := map[string]bool{}
	for range 40 {
		resp, _ := get(t, nil, pn, "x.test", path)
		seen[resp.Header.Get("X-Backend")] = true
	}
	return seen
}

func sessionCookie(resp *http.Response, name string) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// A session pins the endpoint within the backend, not only the backend:
// requests bringing the token go to the pod that served the first one; when
// that endpoint goes away the next request goes to another and the
// response names it (same session start); a token past absoluteTimeout
// starts a new session; a session without a name gets one per rule.
func TestSessionPinsEndpoint(t *testing.T) {
	a1, a2 := startEcho(t, "a1", nil), startEcho(t, "a2", nil)
	pn := freePort(t)
	rl := ruleTo("sticky", prefix("/"), to("a.svc:80", 1))
	rl.SessionPersistence = &gatewaypb.SessionPersistence{Type: gatewaypb.SessionPersistence_COOKIE, Name: "s", AbsoluteTimeout: dur(time.Hour)}
	unnamed := ruleTo("unnamed", prefix("/u"), to("a.svc:80", 1))
	unnamed.SessionPersistence = &gatewaypb.SessionPersistence{Type: gatewaypb.SessionPersistence_COOKIE}
	startGateway(t, dsts(t, map[string][]string{"a.svc:80": {a1.addr, a2.addr}}), snap("v1", httpPort(pn,
		httpListener("l", "", hostOf("", unnamed, rl)))))

	// Without a session both endpoints serve.
	if seen := servedBy(t, pn, "/"); !seen["a1"] || !seen["a2"] {
		t.Fatalf("without a session: served by %v only", seen)
	}

	resp, _ := get(t, nil, pn, "x.test", "/")
	sc := sessionCookie(resp, "s")
	if sc == nil || sc.MaxAge != 0 || !sc.HttpOnly || sc.Path != "/" {
		t.Fatalf("no session cookie (session lifetime, HttpOnly, Path=/): %v", resp.Header["Set-Cookie"])
	}
	first := resp.Header.Get("X-Backend")
	for range 30 {
		resp, _ := get(t, nil, pn, "x.test", "/", "Cookie", "s="+sc.Value)
		if got := resp.Header.Get("X-Backend"); got != first {
			t.Fatalf("cookie session: served by %s, then %s", first, got)
		}
		if c := sessionCookie(resp, "s"); c != nil {
			t.Fatalf("a valid session's token was sent again: %v", c)
		}
	}

	// The pinned endpoint goes away: another serves, and the token moves.
	gone, other := a1, a2
	if first == "a2" {
		gone, other = a2, a1
	}
	gone.srv.Close()
	resp, _ = get(t, nil, pn, "x.test", "/", "Cookie", "s="+sc.Value)
	if got := resp.Header.Get("X-Backend"); got != other.name {
		t.Fatalf("pinned endpoint gone: served by %q, want %s", got, other.name)
	}
	moved := sessionCookie(resp, "s")
	if moved == nil || moved.Value == sc.Value {
		t.Fatalf("pinned endpoint gone: the response does not name the new one: %v", resp.Header["Set-Cookie"])
	}
	oldParts, newParts := strings.Split(sc.Value, "."), strings.Split(moved.Value, ".")
	if len(newParts) != 3 || newParts[0] != oldParts[0] || newParts[2] != oldParts[2] {
		t.Errorf("moved token %q: want the same backend and session start as %q", moved.Value, sc.Value)
	}
	for range 10 {
		resp, _ := get(t, nil, pn, "x.test", "/", "Cookie", "s="+moved.Value)
		if got := resp.Header.Get("X-Backend"); got != other.name {
			t.Fatalf("moved session: served by %s, want %s", got, other.name)
		}
	}

	// Past absoluteTimeout the session is over: a new one starts.
	expired := newParts[0] + "." + newParts[1] + "." + strconv.FormatInt(time.Now().Add(-2*time.Hour).Unix(), 36)
	resp, _ = get(t, nil, pn, "x.test", "/", "Cookie", "s="+expired)
	fresh := sessionCookie(resp, "s")
	if fresh == nil {
		t.Fatalf("expired session: no new token: %v", resp.Header["Set-Cookie"])
	}
	if p := strings.Split(fresh.Value, "."); len(p) != 3 {
		t.Errorf("expired session: new token %q", fresh.Value)
	} else if start, err := strconv.ParseInt(p[2], 36, 64); err != nil || time.Since(time.Unix(start, 0)) > time.Minute {
		t.Errorf("expired session: new token %q does not start now", fresh.Value)
	}
	// A malformed token is no session.
	resp, _ = get(t, nil, pn, "x.test", "/", "Cookie", "s=garbage")
	if sessionCookie(resp, "s") == nil {
		t.Errorf("malformed token: no new session: %v", resp.Header["Set-Cookie"])
	}

	// No name: one of the rule's own.
	resp, _ = get(t, nil, pn, "x.test", "/u")
	var named string
	for _, c := range resp.Cookies() {
		named = c.Name
	}
	if !strings.HasPrefix(named, "meridian-session-") {
		t.Errorf("unnamed session: cookies %v, want meridian-session-<rule>", resp.Header["Set-Cookie"])
	}
}

// fnv64a is hash/fnv's FNV-1a: tokens stay those of every other replica.
func TestFNV64a(t *testing.T) {
	for _, s := range []string{"", "a", "10.0.0.7:8080", "ns/web:80", strings.Repeat("x", 300)} {
		h := fnv.New64a()
		h.Write([]byte(s))
		if got, want := fnv64a(s), h.Sum64(); got != want {
			t.Errorf("fnv64a(%q) = %x, hash/fnv's %x", s, got, want)
		}
	}
}
