package dstclient

import (
	"time"

	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
)

// ConnectParams are how a proxy's connection to the control plane is made
// again after it breaks (a controller restart, an outage). gRPC's defaults
// back off up to 120 s, so proxies came back 27-88 s after a restarted
// controller; here the delay grows from 500 ms by 1.6 times per failed
// attempt up to 8 s, jittered by ±20% so that a fleet of proxies does not
// reconnect in step: never more than 9.6 s between attempts, within the
// 10 s the stream backoff (Options.BackoffMax) also promises.
// MinConnectTimeout bounds one attempt at a controller that does not answer
// (a black-holed address) to 5 s rather than gRPC's 20 s.
var ConnectParams = grpc.ConnectParams{
	Backoff: grpcbackoff.Config{
		BaseDelay:  500 * time.Millisecond,
		Multiplier: 1.6,
		Jitter:     0.2,
		MaxDelay:   8 * time.Second,
	},
	MinConnectTimeout: 5 * time.Second,
}

// DialOptions are the options of a connection to the control plane (the
// destination and identity APIs) over creds: grpc.NewClient(target,
// DialOptions(creds)...).
func DialOptions(creds credentials.TransportCredentials) []grpc.DialOption {
	return []grpc.DialOption{grpc.WithTransportCredentials(creds), grpc.WithConnectParams(ConnectParams)}
}
