package dstclient

import (
	"context"
	"errors"

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
}

// Register keeps w registered with the control plane until ctx ends: the
// workload exists while the stream is open, so a broken stream is opened
// again with backoff. registered, when not nil, is called after every
// successful registration. Register returns when ctx ends.
func (c *Client) Register(ctx context.Context, w Workload, registered func()) {
	msg := &pb.Workload{Name: w.Name, Namespace: w.Namespace, Service: w.Service,
		ServiceAccount: w.ServiceAccount, Address: w.Address, AppPort: w.AppPort, Labels: w.Labels}
	b := c.newBackoff()
	for ctx.Err() == nil {
		s, err := c.api.Register(ctx, msg)
		if err == nil {
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
		c.token.Store("") // the token dies with the registration
		if ctx.Err() != nil {
			return
		}
		c.o.Log.Warn("workload registration ended; registering again", "workload", w.Namespace+"/"+w.Name, "err", err, "retry_in", b.cur)
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
