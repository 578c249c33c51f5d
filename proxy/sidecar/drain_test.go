package sidecar

import (
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// slowApp answers /slow only once release is closed, and tells started
// when such a request arrives.
func slowApp(started chan<- struct{}, release <-chan struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		io.WriteString(w, "done "+r.URL.Path)
	})
}

func refused(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return true
	}
	c.Close()
	return false
}

func ready(admin string) int {
	resp, err := http.Get("http://" + admin + "/ready")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Cancelling Run's context drains: the listeners close at once (new
// connections are refused, /ready fails), requests in flight finish,
// opaque streams in flight keep flowing, and Run returns once they are done.
func TestDrain(t *testing.T) {
	for _, proto := range []string{"http1", "h2c"} {
		t.Run(proto, func(t *testing.T) {
			ctx := testContext(t)
			started, release := make(chan struct{}, 1), make(chan struct{})
			app := startHTTP(t, slowApp(started, release))
			echo := startTCP(t, func(c net.Conn) { io.Copy(c, c) })
			a := startProxy(t, Config{
				Resolver:     staticResolver(t, dst("web.test:80", serverSidecars(t, app.addr)...)),
				OrigDst:      fixedOrigDst(echo.addr), // opaque connections pass through to echo
				DrainTimeout: testTimeout,
			})
			if code := ready(a.admin); code != http.StatusOK {
				t.Fatalf("/ready while running: %d", code)
			}
			client, _ := h1Client(t, a.out)
			if proto == "h2c" {
				client, _ = h2cClient(t, a.out)
			}
			opaque := dialTCP(t, a.out)
			writeFrame(opaque, []byte("before drain"))
			if got, err := readFrame(opaque); err != nil || string(got) != "before drain" {
				t.Fatalf("opaque echo: %q, %v", got, err)
			}

			type result struct {
				status int
				body   string
				err    error
			}
			res := make(chan result, 1)
			go func() {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://web.test/slow", nil)
				resp, err := client.Do(req)
				if err != nil {
					res <- result{err: err}
					return
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				res <- result{resp.StatusCode, string(b), err}
			}()
			<-started

			a.cancel()
			eventually(t, "new connections refused", func() bool { return refused(a.out) && refused(a.in) })
			eventually(t, "/ready fails while draining", func() bool { return ready(a.admin) != http.StatusOK })
			select {
			case err := <-a.done:
				t.Fatalf("Run returned (%v) with a request in flight", err)
			default:
			}

			// The opaque stream accepted before the drain still flows.
			writeFrame(opaque, []byte("during drain"))
			if got, err := readFrame(opaque); err != nil || string(got) != "during drain" {
				t.Fatalf("opaque echo while draining: %q, %v", got, err)
			}
			opaque.Close()

			close(release)
			r := <-res
			if r.err != nil || r.status != http.StatusOK || r.body != "done /slow" {
				t.Fatalf("request in flight during the drain: %d %q %v; want 200 done /slow", r.status, r.body, r.err)
			}
			select {
			case err := <-a.done:
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
				close(a.done)
			case <-ctx.Done():
				t.Fatal("Run did not return after the last request finished")
			}
		})
	}
}

// A request that outlives DrainTimeout is cut off, and Run returns anyway.
func TestDrainTimeout(t *testing.T) {
	ctx := testContext(t)
	started, release := make(chan struct{}, 1), make(chan struct{})
	t.Cleanup(func() { close(release) })
	app := startHTTP(t, slowApp(started, release))
	a := startProxy(t, Config{
		Resolver:     staticResolver(t, dst("web.test:80", serverSidecars(t, app.addr)...)),
		DrainTimeout: 100 * time.Millisecond,
	})
	client, _ := h1Client(t, a.out)
	errc := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://web.test/slow", nil)
		resp, err := client.Do(req)
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		errc <- err
	}()
	<-started
	a.cancel()
	select {
	case err := <-a.done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		close(a.done)
	case <-ctx.Done():
		t.Fatal("Run did not return after DrainTimeout")
	}
	if err := <-errc; err == nil {
		t.Error("a request cut off by the drain deadline succeeded")
	}
}

// A connection accepted just before the drain, still waiting for protocol
// detection (a server-speaks-first protocol), is served to the end: Run
// does not return under it.
func TestDrainWaitsForConnectionsInDetection(t *testing.T) {
	ctx := testContext(t)
	app := startTCP(t, func(c net.Conn) {
		io.WriteString(c, "220 ready\r\n")
		io.Copy(c, c)
	})
	b := startProxy(t, Config{InboundForward: app.addr, DetectTimeout: 300 * time.Millisecond, DrainTimeout: testTimeout})
	c := dialTCP(t, b.in)
	// The proxy has accepted the connection (and is waiting for the client
	// to speak) once it is counted.
	eventually(t, "connection accepted", func() bool {
		v, _ := metricSum(scrape(t, b.admin), "tcp_open_total", labels("direction", "inbound", "peer", "src"))
		return v == 1
	})
	b.cancel()
	eventually(t, "listener closed", func() bool { return refused(b.in) })

	banner := make([]byte, len("220 ready\r\n"))
	if _, err := io.ReadFull(c, banner); err != nil || string(banner) != "220 ready\r\n" {
		t.Fatalf("banner %q, %v", banner, err)
	}
	select {
	case err := <-b.done:
		t.Fatalf("Run returned (%v) while an accepted connection was being served", err)
	default:
	}
	io.WriteString(c, "echo")
	c.CloseWrite()
	if got, err := io.ReadAll(c); err != nil || string(got) != "echo" {
		t.Fatalf("echo %q, %v", got, err)
	}
	select {
	case err := <-b.done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		close(b.done)
	case <-ctx.Done():
		t.Fatal("Run did not return after the last connection ended")
	}
}
