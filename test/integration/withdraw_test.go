package integration

import (
	"context"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/dstclient"
	"github.com/meridian-mesh/meridian/proxy/sidecar"
)

// Issue 10: in local mode, a workload whose application refuses connections
// is withdrawn from the control plane (peers stop seeing it) and registered
// again when the application is back, as meridian-proxy does with
// --workload-name.
func TestDeadAppWithdrawnFromControlPlane(t *testing.T) {
	cc := controlPlane(t, service("web")+declare("web-0", "web", "web", "web-0-credential")+declare("web-1", "web", "web", "web-1-credential"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	type workload struct {
		app    *http.Server
		appAdr string
		p      *sidecar.Proxy
		in     string
	}
	var ws []*workload
	for _, name := range []string{"web-0", "web-1"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		w := &workload{app: &http.Server{Handler: http.NotFoundHandler()}, appAdr: ln.Addr().String()}
		go w.app.Serve(ln)
		t.Cleanup(func() { w.app.Close() })
		w.p, err = sidecar.New(sidecar.Config{
			OutboundAddr: "127.0.0.1:0", InboundAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
			InboundForward: w.appAdr, AppProbeInterval: 20 * time.Millisecond,
			Resolver: dstclient.New(cc, dstclient.Options{Log: quiet}),
			Balancer: balance.PeakEWMA, DrainTimeout: time.Second, Log: quiet,
		})
		if err != nil {
			t.Fatal(err)
		}
		pctx, stop := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { w.p.Run(pctx); close(done) }()
		t.Cleanup(func() { stop(); <-done })
		_, in, _ := w.p.Addrs()
		w.in = in.String()
		rc := dstclient.New(cc, dstclient.Options{Log: quiet})
		regDone := make(chan struct{})
		go func() {
			defer close(regDone)
			rc.RegisterWhile(pctx, dstclient.Workload{Name: name, Namespace: "default", Service: "web",
				ServiceAccount: "web", Address: w.in, Credential: name + "-credential"}, w.p.AppReady, nil)
		}()
		t.Cleanup(func() { stop(); <-regDone })
		ws = append(ws, w)
	}

	watch, err := dstclient.New(cc, dstclient.Options{Log: quiet}).Resolve(ctx, "web.default:80")
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	waitSet := func(want ...string) {
		t.Helper()
		slices.Sort(want)
		var got []string
		for {
			select {
			case eps, ok := <-watch.Updates():
				if !ok {
					t.Fatal("watch closed")
				}
				got = got[:0]
				for _, e := range eps {
					got = append(got, e.Addr)
				}
				slices.Sort(got)
				if slices.Equal(got, want) {
					return
				}
			case <-ctx.Done():
				t.Fatalf("endpoints %v, want %v", got, want)
			}
		}
	}
	waitSet(ws[0].in, ws[1].in)

	status := func(addr string) int {
		t.Helper()
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// web-1's application serves, then dies; a request reaches its proxy
	// and is refused.
	if s := status(ws[1].in); s != http.StatusNotFound {
		t.Fatalf("request to the application: %d, want its 404", s)
	}
	ws[1].app.Close()
	if s := status(ws[1].in); s != http.StatusServiceUnavailable {
		t.Fatalf("request to the dead application: %d, want 503", s)
	}
	waitSet(ws[0].in)

	// It comes back on its address: registered again.
	ln, err := net.Listen("tcp", ws[1].appAdr)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", ws[1].appAdr, err)
	}
	app := &http.Server{Handler: http.NotFoundHandler()}
	go app.Serve(ln)
	t.Cleanup(func() { app.Close() })
	waitSet(ws[0].in, ws[1].in)
}
