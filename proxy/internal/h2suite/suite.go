// Package h2suite is the tests both of the proxy's HTTP/2 servers pass:
// proxy/h2server's, and proxy/httpproxy/h2loop's with its Bridge on an
// event loop. Each suite (Run...) takes a Start that serves a handler on
// loopback; the servers' test packages run them (h2server's from an
// external test package: this one imports it). Only tests import it.
package h2suite

import (
	"net"
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
	// streams run to their end, then the connections close. It returns
	// once they have all closed (as h2server's Shutdown does), so a test
	// with a stream open calls it on a goroutine of its own.
	Shutdown func()

	// The rest is what RunBehaviour needs to see of a server beyond what
	// a client sees: a Start for RunBehaviour sets all of it.

	// Log is what the server has logged so far (h2server's
	// Config.ErrorLog, h2loop's Logf, its Bridge's Logf): a handler's
	// panic is logged, an http.ErrAbortHandler is not. Start keeps it
	// from the process's log.
	Log func() string
	// DialCounting connects a client to the server and returns the
	// client's end with a count of the writes (system calls) the server
	// has made on that connection so far: a small response must leave in
	// one. The connection is closed when the test ends.
	DialCounting func(t testing.TB) (c net.Conn, writes func() int)
	// EndContext ends the context the server's requests' contexts derive
	// from (what h2server's ServeConn is given, the Bridge's BaseContext):
	// the handlers running see theirs end.
	EndContext func()
	// ErrHandlerComplete is the error (errors.Is) a request body's Read
	// gives once its handler has returned.
	ErrHandlerComplete error
}

// Start serves h with cfg's limits until the test ends. The suites
// (Run...) take one for each server.
type Start func(t testing.TB, cfg h2server.Config, h http.Handler) *Target

// test is one of a suite's subtests.
type test struct {
	name string
	run  func(*testing.T, Start)
}

// runAll runs tests as subtests of t against start's server.
func runAll(t *testing.T, start Start, tests []test) {
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, start) })
	}
}
