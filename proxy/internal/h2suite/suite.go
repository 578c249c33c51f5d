// Package h2suite is the tests both of the proxy's HTTP/2 servers pass:
// proxy/h2server's, and proxy/httpproxy/h2loop's with its Bridge on an
// event loop. Each suite (Run...) takes a Start that serves a handler on
// loopback; the servers' test packages run them (h2server's from an
// external test package: this one imports it). Only tests import it.
package h2suite

import (
	"net/http"
	"testing"

	"github.com/meridian-mesh/meridian/proxy/h2server"
)

// Target is a server under test, serving on loopback until the test
// ends: proxy/h2server's Server, or proxy/httpproxy/h2loop's Server with
// its Bridge on an event loop.
type Target struct {
	// Addr is the listener's address (HTTP/2 with prior knowledge).
	Addr string
	// Shutdown drains the server as its Shutdown does: GOAWAY, the open
	// streams run to their end, then the connections close.
	Shutdown func()
}

// Start serves h with cfg's limits until the test ends. The suites
// (Run...) take one for each server.
type Start func(t testing.TB, cfg h2server.Config, h http.Handler) *Target
