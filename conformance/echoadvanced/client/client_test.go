package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"sigs.k8s.io/gateway-api/conformance/utils/echo"
)

// The suite reads the client's output with its own parser
// (conformance/utils/echo), and splits a --count batch on blank lines as
// its RequestBatch does: these tests read it the same way.
func batch(t *testing.T, out string) []echo.Response {
	t.Helper()
	var rs []echo.Response
	for _, section := range strings.Split(out, "\n\n") {
		if section = strings.TrimSpace(section); section == "" {
			continue
		}
		if r := echo.ParseResponse(section); r.Hostname != "" || r.Code != "" {
			rs = append(rs, r)
		}
	}
	return rs
}

func run(t *testing.T, target string, args ...string) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := runClient(target, args, &stdout, &stderr)
	return stdout.String(), stderr.String(), code
}

func TestHTTPEcho(t *testing.T) {
	e := &responder{version: "v1", hostname: "echo-v1-abc"}
	s := httptest.NewServer(e.httpHandler(8080))
	defer s.Close()

	out, errOut, code := run(t, s.URL+"/some/path?q=1", "--method=POST", "-H", "X-Test:one", "-H", "X-Test:two", "-H", "Host:echo.example")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	rs := batch(t, out)
	if len(rs) != 1 {
		t.Fatalf("%d responses in\n%s", len(rs), out)
	}
	r := rs[0]
	if r.Code != "200" || r.Hostname != "echo-v1-abc" || r.Method != "POST" || r.Host != "echo.example" ||
		r.URL != "/some/path?q=1" || r.Version != "v1" || r.Port != "8080" || r.Protocol != "HTTP/1.1" || r.IP != "127.0.0.1" {
		t.Errorf("parsed %+v from\n%s", r, out)
	}
	if got := r.RequestHeaders.Values("X-Test"); strings.Join(got, ",") != "one,two" {
		t.Errorf("request header X-Test: %q", got)
	}
	if got := r.ResponseHeaders.Get("Content-Type"); got != "text/plain; charset=utf-8" {
		t.Errorf("response header Content-Type: %q", got)
	}
}

// A redirect is the answer, reported with its Location, not followed.
func TestHTTPRedirectNotFollowed(t *testing.T) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://example.org/elsewhere", http.StatusFound)
	}))
	defer s.Close()
	out, errOut, code := run(t, s.URL+"/")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	rs := batch(t, out)
	if len(rs) != 1 || rs[0].Code != "302" || rs[0].ResponseHeaders.Get("Location") != "http://example.org/elsewhere" {
		t.Errorf("parsed %+v from\n%s", rs, out)
	}
}

func TestHTTPBatch(t *testing.T) {
	e := &responder{hostname: "echo-v2-xyz"}
	s := httptest.NewServer(e.httpHandler(8080))
	defer s.Close()
	out, errOut, code := run(t, s.URL+"/", "--count=5")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	rs := batch(t, out)
	if len(rs) != 5 {
		t.Fatalf("%d responses, want 5, in\n%s", len(rs), out)
	}
	for i, r := range rs {
		if r.Code != "200" || r.Hostname != "echo-v2-xyz" {
			t.Errorf("response %d: %+v", i, r)
		}
	}
}

func TestGRPCEcho(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &responder{hostname: "echo-v1-grpc"}
	s := grpc.NewServer()
	s.RegisterService(&echoServiceDesc, e.grpcServer(7070))
	go s.Serve(ln)
	defer s.Stop()

	out, errOut, code := run(t, "grpc://"+ln.Addr().String(), "--count=3", "-H", "X-Test:grpc")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	rs := batch(t, out)
	if len(rs) != 3 {
		t.Fatalf("%d responses, want 3, in\n%s", len(rs), out)
	}
	for i, r := range rs {
		if r.Code != "200" || r.Hostname != "echo-v1-grpc" || r.Port != "7070" || r.Host != ln.Addr().String() {
			t.Errorf("response %d: %+v", i, r)
		}
		if got := r.RequestHeaders.Get("X-Test"); got != "grpc" {
			t.Errorf("response %d: request header X-Test %q", i, got)
		}
	}
}

// No answer is a failure (the suite retries the exec until one comes).
func TestClientFailsWithoutAnswer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	for _, target := range []string{"http://" + addr + "/", "grpc://" + addr} {
		_, errOut, code := run(t, target, "--timeout=2s")
		if code != 1 || !strings.Contains(errOut, "request 0 to "+target) {
			t.Errorf("%s: exit %d, stderr %q; want 1 and the failure", target, code, errOut)
		}
	}
}

func TestServerFlags(t *testing.T) {
	for _, args := range [][]string{{"--port=0"}, {"--port=x"}, {"--unknown=1"}} {
		if err := runServer(args); err == nil {
			t.Errorf("runServer(%q): no error", args)
		}
	}
}
