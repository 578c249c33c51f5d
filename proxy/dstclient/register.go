package dstclient

import (
	"context"
	"errors"

	"google.golang.org/grpc/metadata"

	pb "github.com/meridian-mesh/meridian/api/proto/destination"
)

// Workload is what a local-mode proxy announces about the workload it fronts.
type Workload struct {
	Name, Namespace string
	Service         string // the service it serves; empty for a client-only workload
	ServiceAccount  string
	Address         string // ip:port of the proxy's inbound listener
	AppPort         uint32
	Labels          map[string]string
	// Credential is the workload's secret, declared (as its SHA-256) to the
	// control plane by the operator: without it a local-mode controller
	// refuses the registration.
	Credential string
}

// CredentialMetadata is the gRPC metadata key that carries
// Workload.Credential (controlplane/destination reads the same key).
const CredentialMetadata = "meridian-workload-credential"

// Register keeps w registered with the control plane until ctx ends: the
// workload exists while the stream is open, so a broken stream is opened
// again with backoff. registered, when not nil, is called after every
// successful registration. Register returns when ctx ends.
func (c *Client) Register(ctx context.Context, w Workload, registered func()) {
	c.RegisterWhile(ctx, w, nil, registered)
}

// Readiness reports whether the workload can serve now, and a channel
// closed at its next change (see sidecar.Proxy.AppReady).
type Readiness func() (ready bool, changed <-chan struct{})

// RegisterWhile is Register for a workload that is only registered while
// ready says so: when the application stops answering its registration is
// withdrawn (the stream closed, so peers' endpoint sets drop it), and it is
// made again when the application is back. nil ready: always.
//
// While withdrawn the registration token (the local-mode proof of identity)
// is gone too, so certificate renewals fail until the workload is back; a
// certificate lasts 24h and is renewed well before it ends.
func (c *Client) RegisterWhile(ctx context.Context, w Workload, ready Readiness, registered func()) {
	msg := &pb.Workload{Name: w.Name, Namespace: w.Namespace, Service: w.Service,
		ServiceAccount: w.ServiceAccount, Address: w.Address, AppPort: w.AppPort, Labels: w.Labels}
	name := w.Namespace + "/" + w.Name
	b := c.newBackoff()
	for ctx.Err() == nil {
		var changed <-chan struct{}
		if ready != nil {
			var ok bool
			if ok, changed = ready(); !ok {
				c.o.Log.Info("application not ready: workload registration withdrawn until it is", "workload", name)
				select {
				case <-ctx.Done():
					return
				case <-changed:
				}
				continue
			}
		}
		// The registration lasts until the stream breaks or readiness changes.
		sctx, cancel := context.WithCancel(ctx)
		stop := make(chan struct{})
		go func() {
			for ch := changed; ; { // nil: never changes
				select {
				case <-ch:
					var ok bool
					if ok, ch = ready(); !ok {
						cancel()
						return
					}
				case <-stop:
					return
				}
			}
		}()
		var err error
		var s pb.Destination_RegisterClient
		rctx := sctx
		if w.Credential != "" {
			rctx = metadata.AppendToOutgoingContext(sctx, CredentialMetadata, w.Credential)
		}
		// Waits for the connection (see reopen): registered as soon as the
		// control plane is reachable again.
		if s, err = c.api.Register(rctx, msg, reopen(true)...); err == nil {
			var reg *pb.Registration
			if reg, err = s.Recv(); err == nil {
				c.token.Store(reg.GetToken())
				b.reset()
				if registered != nil {
					registered()
				}
				_, err = s.Recv() // blocks while registered; the server sends nothing more
			}
		}
		close(stop)
		withdrawn := sctx.Err() != nil && ctx.Err() == nil
		cancel()
		c.token.Store("") // the token dies with the registration
		if ctx.Err() != nil {
			return
		}
		if withdrawn {
			continue // readiness changed; the loop waits for it
		}
		c.o.Log.Warn("workload registration ended; registering again", "workload", name, "err", err, "retry_in", b.cur)
		if !b.wait(ctx) {
			return
		}
	}
}

// ErrNotRegistered is RegistrationToken's answer while no registration is open.
var ErrNotRegistered = errors.New("workload not registered with the control plane")

// RegistrationToken returns the token of the open registration: the local
// mode proof of identity for the identity service (tlsid.Config.Token).
func (c *Client) RegistrationToken() ([]byte, error) {
	if t, _ := c.token.Load().(string); t != "" {
		return []byte(t), nil
	}
	return nil, ErrNotRegistered
}
