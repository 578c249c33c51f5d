// Package h1loop forwards HTTP/1.1 requests on event loops
// (proxy/internal/evloop): a client's connection, plaintext or TLS, and
// the kept-alive connections to the endpoints, plaintext or mTLS, served
// by callbacks on one goroutine per loop instead of a goroutine per
// connection. A Router says where each request goes; what the loop does
// not serve (a request it cannot carry as the goroutine path would, or one
// the Router declines) goes with its connection, and every byte not
// consumed, to the goroutine path (Server.Fallback), for good. See
// README.md. Linux only.
package h1loop
