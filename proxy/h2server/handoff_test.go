package h2server

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

type ctxKey struct{}

// net/http hands its HTTP/2 connections over (TLSNextProto): TLS with
// ALPN h2, and h2c with prior knowledge; requests carry the connection's
// context (ConnContext) and Request.TLS, and HTTP/1.1 stays net/http's.
func TestNetHTTPHandOff(t *testing.T) {
	h2 := &Server{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, _ := r.Context().Value(ctxKey{}).(string)
		tlsOK := r.TLS != nil && r.TLS.NegotiatedProtocol == "h2"
		io.WriteString(w, r.Proto+" "+v+" "+map[bool]string{true: "tls", false: "plain"}[tlsOK])
	})
	ts := httptest.NewUnstartedServer(h)
	ts.EnableHTTP2 = true
	ts.Config.Protocols = new(http.Protocols)
	ts.Config.Protocols.SetHTTP1(true)
	ts.Config.Protocols.SetHTTP2(true)
	ts.Config.Protocols.SetUnencryptedHTTP2(true)
	ts.Config.TLSNextProto = h2.TLSNextProto()
	ts.Config.ConnContext = func(ctx context.Context, _ net.Conn) context.Context { return context.WithValue(ctx, ctxKey{}, "conn") }
	ts.StartTLS()
	defer ts.Close()
	get := func(c *http.Client, url string) string {
		t.Helper()
		resp, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got := get(ts.Client(), ts.URL); got != "HTTP/2.0 conn tls" {
		t.Fatalf("TLS: %q", got)
	}
	plain := httptest.NewUnstartedServer(h)
	plain.Config.Protocols = ts.Config.Protocols
	plain.Config.TLSNextProto = h2.TLSNextProto()
	plain.Config.ConnContext = ts.Config.ConnContext
	plain.Start()
	defer plain.Close()
	if got := get(h2cClient(t), plain.URL); got != "HTTP/2.0 conn plain" {
		t.Fatalf("h2c: %q", got)
	}
	if got := get(plain.Client(), plain.URL); got != "HTTP/1.1 conn plain" {
		t.Fatalf("HTTP/1.1: %q", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h2.Shutdown(ctx); err != nil && err != context.Canceled {
		t.Fatal(err)
	}
}
