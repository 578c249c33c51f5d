// Package dstclient resolves destinations through the control plane's
// destination API. It implements discover.Resolver, so the proxy follows the
// control plane exactly as it follows static configuration.
package dstclient

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	pb "github.com/meridian-mesh/meridian/api/proto/destination"
	"github.com/meridian-mesh/meridian/internal/latest"
	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/profile"
)

// Options tune a Client.
type Options struct {
	// Token identifies the asking workload (context_token), for logs and policy.
	Token string
	// FirstAnswer bounds how long Resolve waits for the control plane's
	// first answer. Default 3s.
	FirstAnswer time.Duration
	// BackoffMin and BackoffMax bound reconnection delays. Defaults 100ms, 10s.
	BackoffMin, BackoffMax time.Duration
	// ConfirmEmpty is how long an empty set must last before it replaces
	// endpoints the watch had, when it is the first answer of a new stream
	// (a restarted controller whose workloads have not registered again
	// yet). Default 5s.
	ConfirmEmpty time.Duration
	Log          *slog.Logger
	// OnProfile, when set, is called with each profile of authority once
	// it is applied (requests from then on use it), on the stream's
	// goroutine: benchmarks and tests time the apply with it. It must not
	// block.
	OnProfile func(authority string, p *profile.Profile)
}

// Client is a discover.Resolver over a destination API connection.
type Client struct {
	api   pb.DestinationClient
	o     Options
	token atomic.Value // string: the open registration's token
}

// New returns a resolver using conn (a grpc.ClientConn to the controller).
func New(conn grpc.ClientConnInterface, o Options) *Client {
	if o.FirstAnswer == 0 {
		o.FirstAnswer = 3 * time.Second
	}
	if o.BackoffMin == 0 {
		o.BackoffMin = 100 * time.Millisecond
	}
	if o.BackoffMax == 0 {
		o.BackoffMax = 10 * time.Second
	}
	if o.ConfirmEmpty == 0 {
		o.ConfirmEmpty = 5 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &Client{api: pb.NewDestinationClient(conn), o: o}
}

// LookupAddr lets the control plane decide: a service's cluster IP:port is an
// authority the destination API resolves like any name.
func (c *Client) LookupAddr(addr netip.AddrPort) (string, bool) {
	return netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port()).String(), true
}

// Resolve opens a Get stream for authority and returns once the first answer
// arrives. An authority the control plane does not know is ErrNotFound.
// After that the watch survives control-plane outages: it reconnects with
// backoff and keeps serving the last known endpoints meanwhile.
func (c *Client) Resolve(ctx context.Context, authority string) (discover.Watch, error) {
	wctx, cancel := context.WithCancel(context.Background())
	w := &watch{c: c, authority: authority, cancel: cancel,
		ch: latest.New[[]discover.Endpoint](), first: make(chan error, 1)}
	go w.run(wctx)
	if err := c.awaitFirst(ctx, w.first, cancel, "resolve "+authority); err != nil {
		return nil, err
	}
	return w, nil
}

type watch struct {
	c         *Client
	authority string
	cancel    context.CancelFunc
	first     chan error // one value: nil, a *discover.NotFoundError or the first stream's error
	firstOnce sync.Once

	ch *latest.Chan[[]discover.Endpoint] // consumers only want the newest set

	mu  sync.Mutex
	had bool   // the last set delivered had endpoints
	gen uint64 // bumped by every delivery: a pending empty set is stale once it moved
}

func (w *watch) Updates() <-chan []discover.Endpoint { return w.ch.Updates() }

func (w *watch) Close() {
	w.cancel()
	w.ch.Close()
}

func (w *watch) answerFirst(err error) { w.firstOnce.Do(func() { w.first <- err }) }

// push replaces any undelivered set: consumers only want the newest.
func (w *watch) push(set map[string]discover.Endpoint) {
	eps := make([]discover.Endpoint, 0, len(set))
	for _, ep := range set {
		eps = append(eps, ep)
	}
	sort.Slice(eps, func(i, j int) bool { return eps[i].Addr < eps[j].Addr })
	w.mu.Lock()
	defer w.mu.Unlock()
	w.deliver(eps)
}

// deliver is push with w.mu held.
func (w *watch) deliver(eps []discover.Endpoint) {
	w.gen++
	w.ch.Set(eps)
	w.had = len(eps) > 0
}

// confirmLater delivers an empty set after ConfirmEmpty unless something
// else was delivered, or cancel was called, first; it reports false (and
// does nothing) when the watch has no endpoints to keep.
func (w *watch) confirmLater() (cancel func(), ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.had {
		return nil, false
	}
	gen := w.gen
	t := time.AfterFunc(w.c.o.ConfirmEmpty, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.gen == gen {
			w.c.o.Log.Info("destination: the control plane confirmed an empty endpoint set", "authority", w.authority, "after", w.c.o.ConfirmEmpty)
			w.deliver([]discover.Endpoint{})
		}
	})
	return func() {
		t.Stop()
		w.mu.Lock()
		if w.gen == gen {
			w.gen++ // a callback already running finds it stale
		}
		w.mu.Unlock()
	}, true
}

func (w *watch) run(ctx context.Context) {
	b := w.c.newBackoff()
	for again := false; ctx.Err() == nil; again = true {
		got, err := w.stream(ctx, again)
		if ctx.Err() != nil || errors.Is(err, discover.ErrNotFound) {
			return
		}
		if got {
			b.reset()
		}
		w.c.o.Log.Warn("destination stream ended; keeping the last known endpoints", "authority", w.authority, "err", err, "retry_in", b.cur)
		if !b.wait(ctx) {
			return
		}
	}
}

// stream follows one Get stream until it fails (again: it reopens one). got reports whether any
// message arrived (to reset the backoff).
func (w *watch) stream(ctx context.Context, again bool) (got bool, err error) {
	s, err := w.c.api.Get(ctx, &pb.GetDestination{Authority: w.authority, ContextToken: w.c.o.Token}, reopen(again)...)
	if err != nil {
		return false, err
	}
	// Each stream starts from the server's full state, so the set is rebuilt
	// from scratch; the previous one keeps serving until the first message.
	set := map[string]discover.Endpoint{}
	// An empty first answer on a new stream does not at once replace the
	// endpoints the watch had: a controller that has just started may not
	// know them again yet. It applies if it lasts ConfirmEmpty.
	var pending func()
	defer func() {
		if pending != nil {
			pending()
		}
	}()
	first := true
	for {
		u, err := s.Recv()
		if err != nil {
			w.answerFirst(err)
			return got, err
		}
		got = true
		if pending != nil {
			pending()
			pending = nil
		}
		switch u := u.Update.(type) {
		case *pb.Update_Add:
			for _, a := range u.Add.GetAddrs() {
				ep, ok := endpoint(a, u.Add.GetMetricLabels())
				if ok {
					set[ep.Addr] = ep
				}
			}
		case *pb.Update_Remove:
			for _, a := range u.Remove.GetAddrs() {
				delete(set, hostPort(a))
			}
		case *pb.Update_NoEndpoints:
			if !u.NoEndpoints.GetExists() && !again {
				return got, w.notFound(s)
			}
			// On a stream opened again, an authority the control plane
			// does not know (yet: a restarted local-mode controller knows a
			// service without a Service object once its workloads register)
			// is an empty set: the stream stays open for it to appear, and
			// the watch does not end with stale endpoints.
			clear(set)
		}
		wasFirst := first
		first = false
		if wasFirst && len(set) == 0 {
			if cancel, ok := w.confirmLater(); ok {
				w.c.o.Log.Info("destination: a new stream's first answer has no endpoints; keeping the last known until it is confirmed",
					"authority", w.authority, "confirm_after", w.c.o.ConfirmEmpty)
				pending = cancel
				continue
			}
		}
		w.push(set)
		w.answerFirst(nil)
	}
}

// notFound answers Resolve that the control plane does not know the
// authority, and follows the stream on until that changes: the caller
// keeps the answer (a lookup per use would cost a round trip to the
// controller and a log line there each time) until Appeared is closed, at
// the first message that is not "unknown" or when the stream ends (the
// controller restarted: ask again). It returns discover.ErrNotFound, which
// ends the watch.
func (w *watch) notFound(s pb.Destination_GetClient) error {
	appeared := make(chan struct{})
	w.answerFirst(&discover.NotFoundError{Authority: w.authority, Appeared: appeared, Stop: w.Close})
	defer close(appeared)
	for {
		u, err := s.Recv()
		if err != nil {
			return discover.ErrNotFound
		}
		if ne, ok := u.Update.(*pb.Update_NoEndpoints); !ok || ne.NoEndpoints.GetExists() {
			return discover.ErrNotFound
		}
	}
}

func hostPort(a *pb.TcpAddress) string {
	return net.JoinHostPort(a.GetIp(), strconv.Itoa(int(a.GetPort())))
}

func endpoint(a *pb.WeightedAddr, setLabels map[string]string) (discover.Endpoint, bool) {
	if a.GetAddr() == nil {
		return discover.Endpoint{}, false
	}
	labels := make(map[string]string, len(setLabels)+len(a.GetMetricLabels()))
	for k, v := range setLabels {
		labels[k] = v
	}
	for k, v := range a.GetMetricLabels() {
		labels[k] = v
	}
	ep := discover.Endpoint{Addr: hostPort(a.GetAddr()), Weight: a.GetWeight(), Labels: labels, Identity: a.GetIdentity()}
	switch a.GetProtocolHint() {
	case pb.ProtocolHint_PROTOCOL_HINT_H2:
		ep.Protocol = discover.HintH2
	case pb.ProtocolHint_PROTOCOL_HINT_OPAQUE:
		ep.Protocol = discover.HintOpaque
	}
	return ep, true
}

var _ profile.Source = (*Client)(nil)
