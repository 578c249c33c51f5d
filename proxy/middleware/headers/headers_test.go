package headers_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/httpproxytest"
	"github.com/meridian-mesh/meridian/proxy/metrics"
	"github.com/meridian-mesh/meridian/proxy/middleware/headers"
)

// The conformance suite's HTTPRouteRequestHeaderModifier and
// HTTPRouteResponseHeaderModifier cases, through a reverse proxy to a
// loopback upstream that echoes the request's header and answers with the
// fields the case gives it. Values are compared as the suite does: a
// field's lines joined with a comma.
func TestModifiers(t *testing.T) {
	multiple := headers.Modifier{
		Set:    []headers.Header{{"X-Header-Set-1", "header-set-1"}, {"X-Header-Set-2", "header-set-2"}},
		Add:    []headers.Header{{"X-Header-Add-1", "header-add-1"}, {"X-Header-Add-2", "header-add-2"}, {"X-Header-Add-3", "header-add-3"}},
		Remove: []string{"X-Header-Remove-1", "X-Header-Remove-2"},
	}
	caseInsensitive := headers.Modifier{
		Set: []headers.Header{{"X-Header-Set", "header-set"}},
		Add: []headers.Header{{"X-Header-Add", "header-add"}, {"x-lowercase-add", "lowercase-add"},
			{"x-Mixedcase-ADD-1", "mixedcase-add-1"}, {"X-UPPERCASE-ADD", "uppercase-add"}},
		Remove: []string{"X-Header-Remove"},
	}
	for _, c := range []struct {
		name              string
		req, resp         headers.Modifier
		sent, backendSet  map[string]string
		wantReq, wantResp map[string]string
		absentReq         []string
		absentResp        []string
	}{
		{name: "request set",
			req:     headers.Modifier{Set: []headers.Header{{"X-Header-Set", "set-overwrites-values"}}},
			sent:    map[string]string{"Some-Other-Header": "val"},
			wantReq: map[string]string{"Some-Other-Header": "val", "X-Header-Set": "set-overwrites-values"}},
		{name: "request set overwrites",
			req:     headers.Modifier{Set: []headers.Header{{"X-Header-Set", "set-overwrites-values"}}},
			sent:    map[string]string{"Some-Other-Header": "val", "X-Header-Set": "some-other-value"},
			wantReq: map[string]string{"Some-Other-Header": "val", "X-Header-Set": "set-overwrites-values"}},
		{name: "request add",
			req:     headers.Modifier{Add: []headers.Header{{"X-Header-Add", "add-appends-values"}}},
			sent:    map[string]string{"Some-Other-Header": "val"},
			wantReq: map[string]string{"Some-Other-Header": "val", "X-Header-Add": "add-appends-values"}},
		{name: "request add appends",
			req:     headers.Modifier{Add: []headers.Header{{"X-Header-Add", "add-appends-values"}}},
			sent:    map[string]string{"Some-Other-Header": "val", "X-Header-Add": "some-other-value"},
			wantReq: map[string]string{"Some-Other-Header": "val", "X-Header-Add": "some-other-value,add-appends-values"}},
		{name: "request remove",
			req:       headers.Modifier{Remove: []string{"X-Header-Remove"}},
			sent:      map[string]string{"X-Header-Remove": "val"},
			absentReq: []string{"X-Header-Remove"}},
		{name: "request multiple",
			req:       multiple,
			sent:      map[string]string{"X-Header-Set-2": "set-val-2", "X-Header-Add-2": "add-val-2", "X-Header-Remove-2": "remove-val-2", "Another-Header": "another-header-val"},
			wantReq:   map[string]string{"X-Header-Set-1": "header-set-1", "X-Header-Set-2": "header-set-2", "X-Header-Add-1": "header-add-1", "X-Header-Add-2": "add-val-2,header-add-2", "X-Header-Add-3": "header-add-3", "Another-Header": "another-header-val"},
			absentReq: []string{"X-Header-Remove-1", "X-Header-Remove-2"}},
		{name: "request names in lower case",
			req:       caseInsensitive,
			sent:      map[string]string{"x-header-set": "original-val-set", "x-header-add": "original-val-add", "x-header-remove": "original-val-remove", "Another-Header": "another-header-val"},
			wantReq:   map[string]string{"X-Header-Set": "header-set", "X-Header-Add": "original-val-add,header-add", "X-Lowercase-Add": "lowercase-add", "Another-Header": "another-header-val"},
			absentReq: []string{"X-Header-Remove"}},
		{name: "response set",
			resp:       headers.Modifier{Set: []headers.Header{{"X-Header-Set", "set-overwrites-values"}}},
			backendSet: map[string]string{"Some-Other-Header": "val", "X-Header-Set": "some-other-value"},
			wantResp:   map[string]string{"Some-Other-Header": "val", "X-Header-Set": "set-overwrites-values"}},
		{name: "response add",
			resp:       headers.Modifier{Add: []headers.Header{{"X-Header-Add", "add-appends-values"}}},
			backendSet: map[string]string{"Some-Other-Header": "val"},
			wantResp:   map[string]string{"Some-Other-Header": "val", "X-Header-Add": "add-appends-values"}},
		{name: "response add appends",
			resp:       headers.Modifier{Add: []headers.Header{{"X-Header-Add", "add-appends-values"}}},
			backendSet: map[string]string{"Some-Other-Header": "val", "X-Header-Add": "some-other-value"},
			wantResp:   map[string]string{"Some-Other-Header": "val", "X-Header-Add": "some-other-value,add-appends-values"}},
		{name: "response remove",
			resp:       headers.Modifier{Remove: []string{"X-Header-Remove"}},
			backendSet: map[string]string{"X-Header-Remove": "val"},
			absentResp: []string{"X-Header-Remove"}},
		{name: "response multiple",
			resp:       multiple,
			backendSet: map[string]string{"X-Header-Set-2": "set-val-2", "X-Header-Add-2": "add-val-2", "X-Header-Remove-2": "remove-val-2", "Another-Header": "another-header-val", "X-Header-Remove-1": "val"},
			wantResp:   map[string]string{"X-Header-Set-1": "header-set-1", "X-Header-Set-2": "header-set-2", "X-Header-Add-1": "header-add-1", "X-Header-Add-2": "add-val-2,header-add-2", "X-Header-Add-3": "header-add-3", "Another-Header": "another-header-val"},
			absentResp: []string{"X-Header-Remove-1", "X-Header-Remove-2"}},
		{name: "response names in any case",
			resp:       caseInsensitive,
			backendSet: map[string]string{"x-header-set": "original-val-set", "x-header-add": "original-val-add", "x-header-remove": "original-val-remove", "Another-Header": "another-header-val"},
			wantResp:   map[string]string{"X-Header-Set": "header-set", "X-Header-Add": "original-val-add,header-add", "X-Lowercase-Add": "lowercase-add", "X-Mixedcase-Add-1": "mixedcase-add-1", "X-Uppercase-Add": "uppercase-add", "Another-Header": "another-header-val"},
			absentResp: []string{"X-Header-Remove"}},
		{name: "request and response",
			req: headers.Modifier{
				Set:    []headers.Header{{"X-Header-Set", "set-overwrites-values"}},
				Add:    []headers.Header{{"X-Header-Add", "header-val-1"}, {"X-Header-Add-Append", "header-val-2"}},
				Remove: []string{"X-Header-Remove"},
			},
			resp: headers.Modifier{
				Set:    []headers.Header{{"X-Header-Set-1", "header-set-1"}, {"X-Header-Set-2", "header-set-2"}},
				Add:    []headers.Header{{"X-Header-Add-1", "header-add-1"}, {"X-Header-Add-2", "header-add-2"}},
				Remove: []string{"X-Header-Remove-1", "X-Header-Remove-2"},
			},
			sent:       map[string]string{"X-Header-Remove": "remove-val", "X-Header-Add-Append": "append-val-1", "X-Header-Echo": "echo"},
			backendSet: map[string]string{"X-Header-Set-2": "set-val-2", "X-Header-Add-2": "add-val-2", "X-Header-Remove-2": "remove-val-2", "Another-Header": "another-header-val", "X-Header-Remove-1": "remove-val-1", "X-Header-Echo": "echo"},
			wantReq:    map[string]string{"X-Header-Add": "header-val-1", "X-Header-Set": "set-overwrites-values", "X-Header-Add-Append": "append-val-1,header-val-2", "X-Header-Echo": "echo"},
			absentReq:  []string{"X-Header-Remove"},
			wantResp:   map[string]string{"X-Header-Set-1": "header-set-1", "X-Header-Set-2": "header-set-2", "X-Header-Add-1": "header-add-1", "X-Header-Add-2": "add-val-2,header-add-2", "Another-Header": "another-header-val", "X-Header-Echo": "echo"},
			absentResp: []string{"X-Header-Remove-1", "X-Header-Remove-2"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for k, v := range c.backendSet {
					w.Header()[k] = []string{v} // as written, any case
				}
				json.NewEncoder(w).Encode(r.Header)
			}))
			defer up.Close()
			u, _ := url.Parse(up.URL)
			front := httptest.NewServer(headers.Response(c.resp)(headers.Request(c.req)(httputil.NewSingleHostReverseProxy(u))))
			defer front.Close()

			req, _ := http.NewRequest(http.MethodGet, front.URL+"/", nil)
			for k, v := range c.sent {
				req.Header[k] = []string{v} // sent as written, lower case included
			}
			resp, err := front.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var got http.Header
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			check(t, "request", got, c.wantReq, c.absentReq)
			check(t, "response", resp.Header, c.wantResp, c.absentResp)
		})
	}
}

func check(t *testing.T, what string, h http.Header, want map[string]string, absent []string) {
	t.Helper()
	for k, v := range want {
		if got := strings.Join(h.Values(k), ","); got != v {
			t.Errorf("%s %s = %q, want %q", what, k, got, v)
		}
	}
	for _, k := range absent {
		if vs := h.Values(k); len(vs) > 0 {
			t.Errorf("%s %s = %q, want it absent", what, k, vs)
		}
	}
}

// However the next handler writes its response (the proxy's own error, a
// flush before any write, an informational response first, nothing at
// all, fields stored in the map in lower case), the response's header
// leaves modified, once.
func TestResponseWrittenAnyWay(t *testing.T) {
	m := headers.Modifier{
		Set:    []headers.Header{{"X-Set", "s"}},
		Add:    []headers.Header{{"x-add", "a"}, {"Set-Cookie", "b=2"}},
		Remove: []string{"X-Remove"},
	}
	for _, c := range []struct {
		name   string
		next   http.HandlerFunc
		status int
		want   map[string][]string
	}{
		{name: "proxy error", status: 502,
			next: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Remove", "r")
				httpproxy.WriteError(w, r, http.StatusBadGateway, "connect", errors.New("refused"))
			},
			want: map[string][]string{"X-Set": {"s"}, "X-Add": {"a"}, "Set-Cookie": {"b=2"}, httpproxy.ErrorHeader: {"connect"}}},
		{name: "flush first", status: 200,
			next: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Add", "x")
				http.NewResponseController(w).Flush()
				w.Header().Set("X-Late", "ignored")
				w.Write([]byte("body"))
			},
			want: map[string][]string{"X-Set": {"s"}, "X-Add": {"x,a"}, "Set-Cookie": {"b=2"}}},
		{name: "early hints first", status: 201,
			next: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Link", "</a.css>; rel=preload")
				w.WriteHeader(http.StatusEarlyHints)
				w.Header().Add("Set-Cookie", "a=1")
				w.WriteHeader(http.StatusCreated)
			},
			want: map[string][]string{"X-Set": {"s"}, "X-Add": {"a"}, "Set-Cookie": {"a=1", "b=2"}}},
		{name: "nothing written", status: 200,
			next: func(w http.ResponseWriter, r *http.Request) {
				w.Header()["x-remove"] = []string{"r"}
				w.Header()["x-set"] = []string{"old"}
			},
			want: map[string][]string{"X-Set": {"s"}, "X-Add": {"a"}, "Set-Cookie": {"b=2"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			front := httptest.NewServer(headers.Response(m)(c.next))
			defer front.Close()
			resp, err := front.Client().Get(front.URL)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != c.status {
				t.Errorf("status %d, want %d", resp.StatusCode, c.status)
			}
			for k, v := range c.want {
				if got := resp.Header.Values(k); !slices.Equal(got, v) {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			for _, k := range []string{"X-Remove", "X-Late"} {
				if vs := resp.Header.Values(k); len(vs) > 0 {
					t.Errorf("%s = %q, want it absent", k, vs)
				}
			}
		})
	}
}

// Host is the request's authority (r.Host), not a field of r.Header.
func TestRequestHost(t *testing.T) {
	var host string
	h := headers.Request(headers.Modifier{Set: []headers.Header{{"host", "other.example"}}})(
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { host = r.Host }))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "http://a.example/", nil))
	if host != "other.example" {
		t.Errorf("r.Host = %q, want other.example", host)
	}
}

// In front of the proxy's own forwarder (proxy/httpproxy), the response
// modifier applies to the upstream's responses and to the forwarder's own
// error when the endpoint cannot be reached; the request modifier's
// fields reach the upstream.
func TestThroughForwarder(t *testing.T) {
	app := httpproxytest.App(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Remove", "r")
		w.Header().Set("X-Seen", r.Header.Get("X-Req"))
		w.Write([]byte("ok"))
	}))
	for _, c := range []struct {
		name   string
		addr   string
		status int
		seen   string
	}{
		{"upstream response", app, 200, "set"},
		{"forwarder error (no endpoint answers)", httpproxytest.DeadAddr(t), 503, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			fw := httpproxy.New(httpproxy.Options{Direction: "outbound", Metrics: metrics.New(), Log: httpproxytest.Log()})
			target := httpproxytest.Target(t, "svc.test:80", nil, c.addr)
			h := headers.Response(headers.Modifier{Set: []headers.Header{{Name: "X-Set", Value: "s"}}, Remove: []string{"X-Remove"}})(
				httpproxytest.Routed("outbound", target)(
					headers.Request(headers.Modifier{Set: []headers.Header{{Name: "X-Req", Value: "set"}}})(fw)))
			front := httptest.NewServer(h)
			defer front.Close()
			resp, err := front.Client().Get(front.URL)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != c.status || resp.Header.Get("X-Set") != "s" || resp.Header.Get("X-Remove") != "" || resp.Header.Get("X-Seen") != c.seen {
				t.Errorf("%d X-Set %q X-Remove %q X-Seen %q, want %d s \"\" %q", resp.StatusCode, resp.Header.Get("X-Set"), resp.Header.Get("X-Remove"), resp.Header.Get("X-Seen"), c.status, c.seen)
			}
		})
	}
}
