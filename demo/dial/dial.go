// Package dial makes the demo services' outbound connections go through
// their sidecar proxy.
package dial

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// GRPC returns a client connection to proxyAddr (host:port, e.g. the local
// sidecar's outbound listener 127.0.0.1:4140) whose requests carry
// authority as their :authority, so the proxy can route them to the
// service named there (e.g. "emoji-svc.emojivoto:8080").
//
// The "passthrough" scheme hands proxyAddr to the dialer as-is: the proxy,
// not gRPC's resolver, decides where traffic goes, and nothing touches DNS.
// The connection is plaintext HTTP/2 (h2c); the mesh adds mTLS between
// proxies if it wants it.
//
// Like grpc.NewClient, GRPC does not connect: the first RPC does. ctx is
// only checked so that a caller that has already given up gets an error.
func GRPC(ctx context.Context, proxyAddr, authority string) (*grpc.ClientConn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return grpc.NewClient("passthrough:///"+proxyAddr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority(authority),
	)
}
