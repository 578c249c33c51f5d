package outbound

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/meridian-mesh/meridian/proxy/tlsid"
)

// HandshakeTimeout bounds an mTLS handshake between proxies.
const HandshakeTimeout = 10 * time.Second

// secure originates mTLS on c to the meshed endpoint at addr whose proxy
// must present serverID, offering alpn (the protocol spoken inside; empty:
// opaque), resuming an earlier session with it when it can. On failure c
// is closed, marked failed when it is metered.
func (c *Cache) secure(ctx context.Context, conn net.Conn, addr, serverID, alpn string) (net.Conn, error) {
	fail := func() {
		// The connection carried nothing: it closes as a failure.
		if mc, ok := conn.(interface{ MarkFailed() }); ok {
			mc.MarkFailed()
		}
		conn.Close()
	}
	id, err := tlsid.ParseID(serverID)
	if err != nil {
		fail()
		return nil, fmt.Errorf("endpoint identity %q: %w", serverID, err)
	}
	if alpn == "" {
		alpn = tlsid.ALPNOpaque
	}
	tc := tls.Client(conn, c.o.Identity.ClientConfigTo(addr, id, alpn))
	hctx, cancel := context.WithTimeout(ctx, HandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		fail()
		return nil, fmt.Errorf("mTLS to %s: %w", serverID, err)
	}
	c.mtls.Add(1)
	if tc.ConnectionState().DidResume {
		c.resumed.Add(1)
	}
	return tc, nil
}
