package h2loop

import (
	"net/http"
	"testing"

	"github.com/meridian-mesh/meridian/proxy/h2server"
	"github.com/meridian-mesh/meridian/proxy/internal/evloop"
	"github.com/meridian-mesh/meridian/proxy/internal/h2suite"
)

// The shared suites, run against a Server serving a Bridge (h2server's
// rules for an http.Handler) on a loop.

func TestConformance(t *testing.T) { h2suite.RunConformance(t, startBridgeTarget) }

// startBridgeTarget serves h through a Bridge with cfg on a new loop
// behind a loopback listener until the test ends.
func startBridgeTarget(t testing.TB, cfg h2server.Config, h http.Handler) *h2suite.Target {
	t.Helper()
	lp, err := evloop.New()
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Config: cfg, Handler: &Bridge{Handler: h}, Logf: t.Logf}
	return &h2suite.Target{
		Addr: confLoop(t, lp, srv, nil),
		// On the loop, after what it was doing (an accept included).
		Shutdown: func() { lp.Post(srv.Shutdown) },
	}
}
