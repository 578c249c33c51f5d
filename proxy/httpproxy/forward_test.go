package httpproxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/httpproxytest"
	"github.com/meridian-mesh/meridian/proxy/metrics"
)

// TestForwardMatchesReverseProxy: the Forwarder's own forwarding path
// (forward) and httputil.ReverseProxy, which it replaces for requests that
// are neither upgrades nor wait for 100 Continue, send the application the
// same request and the client the same response, byte for byte on the
// client's HTTP/1.1 connection: hop-by-hop headers both ways, forwarding
// headers, Te: trailers, a query with parameters Go rejects, no
// User-Agent, 1xx responses, streamed and fixed-length bodies, trailers
// announced and not, responses without content, a response that breaks
// off, and a 101 nobody asked for.
func TestForwardMatchesReverseProxy(t *testing.T) {
	app := httpproxytest.App(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// What the application was sent, as a header of the answer.
		body, _ := io.ReadAll(r.Body)
		keys := make([]string, 0, len(r.Header))
		for k := range r.Header {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var seen strings.Builder
		fmt.Fprintf(&seen, "%s %s %q ", r.Method, r.RequestURI, body)
		for _, k := range keys {
			fmt.Fprintf(&seen, "%s=%q ", k, r.Header[k])
		}
		w.Header().Set("Seen", seen.String())
		w.Header().Set("Date", "fixed")
		switch r.URL.Path {
		case "/early":
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Del("Link")
			io.WriteString(w, "after hints")
		case "/stream":
			io.WriteString(w, "one ")
			w.(http.Flusher).Flush()
			// Apart, so that the proxy reads (and flushes) each alone:
			// the chunks the client gets are then the same every time.
			time.Sleep(20 * time.Millisecond)
			io.WriteString(w, "two")
		case "/trailers":
			w.Header().Set("Trailer", "Announced")
			io.WriteString(w, "body")
			w.Header().Set("Announced", "a")
			w.Header().Set(http.TrailerPrefix+"Unannounced", "u")
		case "/hop":
			w.Header().Set("Connection", "X-Private")
			w.Header().Set("X-Private", "secret")
			w.Header().Set("Keep-Alive", "timeout=5")
			w.Header().Set("Proxy-Authenticate", "Basic")
			io.WriteString(w, "hop")
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/break":
			w.Header().Set("Content-Length", "100")
			io.WriteString(w, "short")
			panic(http.ErrAbortHandler) // before the response was sent
		case "/break-midway":
			w.Header().Set("Content-Length", "100")
			io.WriteString(w, "short")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		case "/switch":
			c, brw, _ := http.NewResponseController(w).Hijack()
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: sneaky\r\n\r\n")
			brw.Flush()
			c.Close()
		default:
			io.WriteString(w, "fixed")
		}
	}))
	requests := []string{
		"GET /plain HTTP/1.1\r\nHost: web.test\r\nUser-Agent: ua\r\n\r\n",
		"GET /plain?a=1;b=2&c=%zz&d=4 HTTP/1.1\r\nHost: web.test\r\n\r\n", // no User-Agent; a query Go rejects
		"POST /plain HTTP/1.1\r\nHost: web.test\r\nContent-Length: 5\r\nTe: trailers, deflate\r\n\r\nhello",
		"POST /plain HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
		"GET /plain HTTP/1.1\r\nHost: web.test\r\nConnection: close, X-Forwarded-For, X-Drop\r\nX-Drop: 1\r\nX-Forwarded-For: 10.0.0.1\r\nForwarded: for=10.0.0.2\r\nX-Forwarded-Proto: https\r\nKeep-Alive: 300\r\nProxy-Authorization: x\r\n\r\n",
		"GET /plain HTTP/1.1\r\nHost: web.test\r\n" + httpproxy.DstOverrideHeader + ": other.test:80\r\n\r\n",
		"GET /early HTTP/1.1\r\nHost: web.test\r\n\r\n",
		"GET /stream HTTP/1.1\r\nHost: web.test\r\n\r\n",
		"GET /trailers HTTP/1.1\r\nHost: web.test\r\nTe: trailers\r\n\r\n",
		"GET /hop HTTP/1.1\r\nHost: web.test\r\n\r\n",
		"GET /204 HTTP/1.1\r\nHost: web.test\r\n\r\n",
		"HEAD /plain HTTP/1.1\r\nHost: web.test\r\n\r\n",
		"GET /break HTTP/1.1\r\nHost: web.test\r\n\r\n",
		"GET /break-midway HTTP/1.1\r\nHost: web.test\r\n\r\n",
		"GET /switch HTTP/1.1\r\nHost: web.test\r\n\r\n",
	}
	proxy := func(reverseProxy bool) string {
		f := httpproxy.New(httpproxy.Options{Direction: "outbound", Metrics: metrics.New(), Log: httpproxytest.Log()})
		if reverseProxy {
			httpproxy.ViaReverseProxy(f)
		}
		target := httpproxytest.Target(t, "web.test:80", nil, app)
		s := httptest.NewUnstartedServer(httpproxytest.Routed("outbound", target)(f))
		s.Config.ErrorLog = nil
		s.Start()
		t.Cleanup(s.Close)
		return s.Listener.Addr().String()
	}
	fast, slow := proxy(false), proxy(true)
	for _, req := range requests {
		if !strings.Contains(req, "Connection:") {
			// The connection ends with the response: no wait for silence.
			req = strings.Replace(req, "\r\n", "\r\nConnection: close\r\n", 1)
		}
		line, _, _ := strings.Cut(req, "\r\n")
		t.Run(line, func(t *testing.T) {
			got, want := exchange(t, fast, req), exchange(t, slow, req)
			if testing.Verbose() {
				t.Logf("%q", got)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("forward:\n%s\nReverseProxy:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			if len(got) == 0 || !strings.HasPrefix(got[0], "HTTP/1.1 ") {
				t.Errorf("no response: %q", got)
			}
		})
	}
}

// exchange sends req on a connection of its own and returns the response's
// lines as they came (Date removed), up to the connection's end (or 5 s).
func exchange(t *testing.T, addr, req string) []string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	var lines []string
	br := bufio.NewReader(c)
	for {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		l, err := br.ReadString('\n')
		if l != "" && !strings.HasPrefix(textproto.TrimString(l), "Date:") {
			lines = append(lines, l)
		}
		if err != nil {
			return lines
		}
	}
}
