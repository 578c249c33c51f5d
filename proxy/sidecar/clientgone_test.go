package sidecar

import (
	"io"
	"net/http"
	"testing"
	"time"
)

// A client that closes its HTTP/1 connection while the application has not
// answered yet cancels the application's request through every proxy
// (h1server notices it once the handler has run for its WatchDelay):
// before and after the watch would have started.
func TestClientGoneCancelsUpstream(t *testing.T) {
	for _, topo := range topologies {
		for _, wait := range []time.Duration{0, 100 * time.Millisecond} {
			t.Run(topo.name+"/after "+wait.String(), func(t *testing.T) {
				arrived := make(chan struct{}, 1)
				ended := make(chan struct{}, 1)
				app := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					io.ReadAll(r.Body) // net/http notices a client gone once the body is read
					arrived <- struct{}{}
					select {
					case <-r.Context().Done():
						ended <- struct{}{}
					case <-time.After(10 * time.Second):
					}
				}))
				a := topo.start(t, app.addr)
				c := dialTCP(t, a.out)
				io.WriteString(c, "POST /wait HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\n\r\nabc")
				select {
				case <-arrived:
				case <-time.After(5 * time.Second):
					t.Fatal("the request did not reach the application")
				}
				time.Sleep(wait)
				c.Close()
				select {
				case <-ended:
				case <-time.After(5 * time.Second):
					t.Fatal("the application's request was not cancelled 5s after its client left")
				}
			})
		}
	}
}
