package h2server

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

func TestGoClientGet(t *testing.T) {
	ts := startServer(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 || r.Host != ts0(r) {
			t.Errorf("proto %s host %s", r.Proto, r.Host)
		}
		w.Header().Set("X-Method", r.Method)
		io.WriteString(w, "hello "+r.URL.Path)
	}))
	c := h2cClient(t)
	for range 3 {
		resp, err := c.Get("http://" + ts.addr + "/x")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || string(b) != "hello /x" || resp.Header.Get("X-Method") != "GET" || resp.ContentLength != 8 {
			t.Fatalf("%s %q %v %d", resp.Proto, b, resp.Header, resp.ContentLength)
		}
	}
	resp, err := c.Post("http://"+ts.addr+"/echo", "text/plain", strings.NewReader(strings.Repeat("a", 100000)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

func ts0(r *http.Request) string { return r.Host }

// A request's context carries http.ServerContextKey and
// http.LocalAddrContextKey, as net/http's do: handlers tell a server's
// request from their own by the first (httpproxy aborts a broken
// response only then).
func TestServerContextKeys(t *testing.T) {
	type keys struct {
		server any
		local  net.Addr
	}
	got := make(chan keys, 1)
	ts := startServer(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		got <- keys{r.Context().Value(http.ServerContextKey), local}
	}))
	resp, err := h2cClient(t).Get("http://" + ts.addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	k := <-got
	if k.server == nil {
		t.Error("no http.ServerContextKey in the request's context")
	}
	if k.local == nil || k.local.String() != ts.addr {
		t.Errorf("http.LocalAddrContextKey %v, want %s", k.local, ts.addr)
	}
}
