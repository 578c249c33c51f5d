package loadgen

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// HTTPClient returns a keep-alive HTTP/1.1 client that can hold conns
// connections open to one host, so the pool never has to dial mid-run.
func HTTPClient(conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false, // plain-text HTTP/1.1 only
	}}
}

// HTTPGet returns a request function: GET url with the given Host header (the
// authority a mesh routes on), success being a 200 with its body read.
func HTTPGet(c *http.Client, url, host string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if host != "" {
			req.Host = host
		}
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		// Drain so the connection goes back to the pool.
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		return err
	}
}

// GRPCConn dials addr in plain text (prior-knowledge HTTP/2), presenting
// authority as :authority when it is not empty. One ClientConn multiplexes all
// requests over one HTTP/2 connection, as a real gRPC client would.
func GRPCConn(addr, authority string) (*grpc.ClientConn, error) {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if authority != "" {
		opts = append(opts, grpc.WithAuthority(authority))
	}
	return grpc.NewClient("passthrough:///"+addr, opts...)
}

// GRPCHealth returns a request function doing one unary
// grpc.health.v1.Health/Check, success being SERVING.
func GRPCHealth(cc *grpc.ClientConn) func(context.Context) error {
	c := healthpb.NewHealthClient(cc)
	return func(ctx context.Context) error {
		resp, err := c.Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		if resp.Status != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("health status %v", resp.Status)
		}
		return nil
	}
}
