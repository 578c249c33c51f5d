// Package h2loop serves HTTP/2 server connections on event loops: the
// frames, the stream states and flow control on one goroutine per loop,
// the streams answered by a handler on the same loop; and HTTP/2 client
// connections on the same loops (ClientConn). See README.md.
package h2loop
