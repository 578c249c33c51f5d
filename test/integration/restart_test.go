package integration

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meridian-mesh/meridian/controlplane/controller"
	"github.com/meridian-mesh/meridian/proxy/dstclient"
)

// runController runs a local-mode controller over dir on addr until the
// returned stop is called (stop waits for it to end).
func runController(t *testing.T, dir, addr string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	up := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- controller.Run(ctx, controller.Options{Store: "dir:" + dir, DestinationAddr: addr, Log: quiet,
			ShutdownGrace: 100 * time.Millisecond}, func(string, string) { close(up) })
	}()
	select {
	case <-up:
	case err := <-done:
		t.Fatalf("controller: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("controller did not start")
	}
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// gate refuses connections while closed, as a network that is slow to
// deliver a proxy's reconnection.
type gate struct{ open atomic.Bool }

func (g *gate) dial(ctx context.Context, addr string) (net.Conn, error) {
	if !g.open.Load() {
		return nil, errors.New("gate closed")
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

// Issue 11: a controller restart under load made clients fail with 503
// no_endpoints (the new controller answered an empty set before the
// backends registered again, and proxies applied it), and proxies took up
// to 88 s to register again. Here a local-mode controller is restarted while
// a client proxy sends requests to a service of two meshed backends, whose
// registrations reach the new controller 2 s after the client's streams do:
// no request may fail, and both backends must be registered again within
// 15 s of the restart.
func TestControllerRestartUnderLoad(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "objects.yaml"), []byte(service("web")+declare("web-0", "web", "web", "web-0-credential")+declare("web-1", "web", "web", "web-1-credential")), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	stop := runController(t, dir, addr)

	dial := func(opts ...grpc.DialOption) *grpc.ClientConn {
		cc, err := grpc.NewClient("passthrough:///"+addr, append(dstclient.DialOptions(insecure.NewCredentials()), opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Two backends, each an application behind its sidecar, registered
	// through a connection of its own (as every meridian-proxy has).
	var regGate gate
	regGate.open.Store(true)
	var mu sync.Mutex
	registered := map[string]time.Time{}
	for _, name := range []string{"web-0", "web-1"} {
		p := proxyFor(t, dial(), backend(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(name)) })))
		_, in, _ := p.Addrs()
		rc := dstclient.New(dial(grpc.WithContextDialer(regGate.dial)), dstclient.Options{Log: quiet})
		regDone := make(chan struct{})
		go func() {
			defer close(regDone)
			rc.Register(ctx, dstclient.Workload{Name: name, Namespace: "default", Service: "web", ServiceAccount: "web", Address: in.String(), Credential: name + "-credential"},
				func() {
					mu.Lock()
					registered[name] = time.Now()
					mu.Unlock()
				})
		}()
		t.Cleanup(func() { cancel(); <-regDone })
	}
	registeredSince := func(t0 time.Time) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, at := range registered {
			if at.After(t0) {
				n++
			}
		}
		return n
	}

	client := proxyFor(t, dial(), "")
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	t.Cleanup(hc.CloseIdleConnections)
	deadline := time.Now().Add(10 * time.Second)
	for { // both backends registered and answering through the client
		code, _, err := get(hc, client, "web.default:80", "/")
		if err == nil && code == 200 && registeredSince(time.Time{}) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the service did not answer within 10s: %d %v", code, err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Load: 4 clients in a loop, bounded in count and time.
	const maxRequests = 200000
	var sent, failed atomic.Int64
	var firstErr atomic.Value
	loadCtx, stopLoad := context.WithTimeout(ctx, 45*time.Second)
	defer stopLoad()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for loadCtx.Err() == nil && sent.Add(1) <= maxRequests {
				code, _, err := get(hc, client, "web.default:80", "/")
				if err != nil || code != 200 {
					failed.Add(1)
					if err == nil {
						err = errors.New(http.StatusText(code))
					}
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	waitSent := func(n int64) {
		for sent.Load() < n && loadCtx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitSent(200)

	// The restart: the controller goes away for 2 s; the backends'
	// registrations get through 2 s after it is back.
	regGate.open.Store(false)
	restart := time.Now()
	stop()
	time.Sleep(2 * time.Second) // the controller's downtime, not a synchronisation
	runController(t, dir, addr)
	time.AfterFunc(2*time.Second, func() { regGate.open.Store(true) })
	for registeredSince(restart) < 2 {
		if time.Since(restart) > 15*time.Second {
			t.Fatalf("%d of 2 backends registered again within 15s of the restart", registeredSince(restart))
		}
		time.Sleep(20 * time.Millisecond)
	}
	back := time.Since(restart)
	// And a while longer, on the new controller's endpoint sets.
	n := sent.Load()
	waitSent(n + 500)
	stopLoad()
	wg.Wait()
	t.Logf("backends registered again %s after the restart; %d requests, %d failed", back.Round(time.Millisecond), min(sent.Load(), maxRequests), failed.Load())
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d requests failed during the restart (first: %v)", f, firstErr.Load())
	}
}

// Issue 11: a proxy started while the controller was down became ready
// 33-39 s after the controller returned (gRPC's reconnect backoff had grown
// past 30 s). Here the controller is away for the proxies' first 30 s; once
// it is up, the backend is registered again and the client proxy serves the
// service within the 10 s reconnect cap (12 s here, for a loaded machine).
func TestProxyStartedWhileControllerDown(t *testing.T) {
	if testing.Short() {
		t.Skip("keeps the controller down for 30 s")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "objects.yaml"), []byte(service("web")+declare("web-0", "web", "web", "web-0-credential")), 0o644); err != nil {
		t.Fatal(err)
	}
	addr, release := reserveAddr(t) // nothing listens: the controller is down
	dial := func() *grpc.ClientConn {
		cc, err := grpc.NewClient("passthrough:///"+addr, dstclient.DialOptions(insecure.NewCredentials())...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var registeredAt atomic.Int64
	p := proxyFor(t, dial(), backend(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) })))
	_, in, _ := p.Addrs()
	rc := dstclient.New(dial(), dstclient.Options{Log: quiet})
	regDone := make(chan struct{})
	go func() {
		defer close(regDone)
		rc.Register(ctx, dstclient.Workload{Name: "web-0", Namespace: "default", Service: "web", ServiceAccount: "web", Address: in.String(), Credential: "web-0-credential"},
			func() { registeredAt.CompareAndSwap(0, time.Now().UnixNano()) })
	}()
	t.Cleanup(func() { cancel(); <-regDone })
	client := proxyFor(t, dial(), "")
	hc := &http.Client{Timeout: 5 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)
	// The client's application keeps asking (and failing), as applications do.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if code, _, err := get(hc, client, "web.default:80", "/"); err == nil && code == 200 {
			t.Fatal("served without a controller")
		}
		time.Sleep(200 * time.Millisecond)
	}

	release()
	runController(t, dir, addr)
	back := time.Now()
	for {
		code, _, err := get(hc, client, "web.default:80", "/")
		if err == nil && code == 200 && registeredAt.Load() != 0 {
			break
		}
		if time.Since(back) > 12*time.Second {
			t.Fatalf("12s after the controller returned: registered %v, last answer %d %v", registeredAt.Load() != 0, code, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("registered %s and serving %s after the controller returned",
		time.Unix(0, registeredAt.Load()).Sub(back).Round(time.Millisecond), time.Since(back).Round(time.Millisecond))
}
