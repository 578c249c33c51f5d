package h2server

import (
	"net"
	"net/http"
	"testing"
)

// The tests Go's client runs against both HTTP/2 servers are
// proxy/internal/h2suite's; what is here is h2server's own.

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
