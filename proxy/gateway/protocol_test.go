package gateway

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
)

// startProtoEcho serves only the given protocols and answers with the
// protocol the request arrived in and its body.
func startProtoEcho(t *testing.T, h1, h2c bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := new(http.Protocols)
	p.SetHTTP1(h1)
	p.SetUnencryptedHTTP2(h2c)
	srv := &http.Server{Protocols: p, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Backend-Proto", r.Proto)
		if _, ok := r.Header[httpproxy.OrigProtoHeader]; ok {
			w.Header().Set("X-Leaked", "orig-proto")
		}
		w.Write(body)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// A backend's protocol is the backend's, whatever the client spoke: an
// H2C backend gets HTTP/2 with prior knowledge from HTTP/1.1 clients too
// (bodies included, no Meridian header), a backend without a protocol
// HTTP/1.1 from HTTP/2 clients too.
func TestBackendProtocol(t *testing.T) {
	h1 := startProtoEcho(t, true, false)
	h2c := startProtoEcho(t, false, true)
	pn := freePort(t)
	toH1 := ruleTo("h1", prefix("/h1"), to("h1.svc:80", 1))
	toH2C := ruleTo("h2c", prefix("/h2c"), &gatewaypb.Backend{Authority: "h2c.svc:80", Weight: 1, Name: "ns/h2c:80", Protocol: gatewaypb.Backend_H2C})
	startGateway(t, dsts(t, map[string][]string{"h1.svc:80": {h1}, "h2c.svc:80": {h2c}}), snap("v1", httpPort(pn,
		httpListener("l", "", hostOf("", toH1, toH2C)))))

	for _, c := range []struct {
		client *http.Client
		name   string
	}{{http.DefaultClient, "HTTP/1.1"}, {h2cClient(), "h2c"}} {
		for _, cs := range []struct{ path, want string }{{"/h1", "HTTP/1.1"}, {"/h2c", "HTTP/2.0"}} {
			for _, body := range []string{"", "a body of some length"} {
				method := http.MethodGet
				if body != "" {
					method = http.MethodPost
				}
				// A reader of unknown length: chunked from an HTTP/1.1 client.
				req, _ := http.NewRequest(method, "http://127.0.0.1:"+itoa(pn)+cs.path, io.NopCloser(strings.NewReader(body)))
				if body == "" {
					req.Body = nil
				}
				req.Host = "x.test"
				resp, err := c.client.Do(req)
				if err != nil {
					t.Fatalf("%s %s %s: %v", c.name, method, cs.path, err)
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(got) != body {
					t.Errorf("%s %s %s: %d %q, want 200 %q", c.name, method, cs.path, resp.StatusCode, got, body)
				}
				if p := resp.Header.Get("X-Backend-Proto"); p != cs.want {
					t.Errorf("%s %s %s: the backend got %s, want %s", c.name, method, cs.path, p, cs.want)
				}
				if resp.Header.Get("X-Leaked") != "" {
					t.Errorf("%s %s %s: the backend saw %s", c.name, method, cs.path, httpproxy.OrigProtoHeader)
				}
			}
		}
	}
}
