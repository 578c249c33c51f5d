package dstclient

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/meridian-mesh/meridian/api/proto/destination"
	"github.com/meridian-mesh/meridian/proxy/discover"
)

// fakeAPI is a scripted destination server: each Get stream sends the
// current script for its authority, then whatever is pushed on updates.
type fakeAPI struct {
	pb.UnimplementedDestinationServer
	mu      sync.Mutex
	initial map[string][]*pb.Update
	updates chan *pb.Update
	started chan string // when not nil, told each Get's authority once its initial script is sent
	// follow keeps an unknown authority's stream open after its "unknown"
	// answer, sending updates, as the controller does.
	follow bool
}

func (f *fakeAPI) Get(req *pb.GetDestination, s grpc.ServerStreamingServer[pb.Update]) error {
	f.mu.Lock()
	init, ok := f.initial[req.GetAuthority()]
	f.mu.Unlock()
	if !ok {
		err := s.Send(&pb.Update{Update: &pb.Update_NoEndpoints{NoEndpoints: &pb.NoEndpoints{Exists: false}}})
		if !f.follow || err != nil {
			return err
		}
	}
	for _, u := range init {
		if err := s.Send(u); err != nil {
			return err
		}
	}
	if f.started != nil {
		f.started <- req.GetAuthority()
	}
	for {
		select {
		case u := <-f.updates:
			if err := s.Send(u); err != nil {
				return err
			}
		case <-s.Context().Done():
			return nil
		}
	}
}

func add(hint pb.ProtocolHint, ports ...uint32) *pb.Update {
	var as []*pb.WeightedAddr
	for _, p := range ports {
		as = append(as, &pb.WeightedAddr{Addr: &pb.TcpAddress{Ip: "10.0.0.1", Port: p}, Weight: 1, ProtocolHint: hint,
			Identity: "spiffe://cluster.local/ns/a/sa/b"})
	}
	return &pb.Update{Update: &pb.Update_Add{Add: &pb.WeightedAddrSet{Addrs: as, MetricLabels: map[string]string{"service": "web"}}}}
}

func remove(ports ...uint32) *pb.Update {
	var as []*pb.TcpAddress
	for _, p := range ports {
		as = append(as, &pb.TcpAddress{Ip: "10.0.0.1", Port: p})
	}
	return &pb.Update{Update: &pb.Update_Remove{Remove: &pb.AddrSet{Addrs: as}}}
}

// serve starts the fake on addr ("127.0.0.1:0" for a new port) and returns
// the bound address and a stop func.
func serve(t *testing.T, f *fakeAPI, addr string) (string, func()) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	pb.RegisterDestinationServer(s, f)
	go s.Serve(ln)
	return ln.Addr().String(), s.Stop
}

func client(t *testing.T, addr string) *Client {
	t.Helper()
	return clientWith(t, addr, Options{FirstAnswer: 5 * time.Second, BackoffMin: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond})
}

func clientWith(t *testing.T, addr string, o Options) *Client {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return New(cc, o)
}

func next(t *testing.T, w discover.Watch) []discover.Endpoint {
	t.Helper()
	select {
	case eps, ok := <-w.Updates():
		if !ok {
			t.Fatal("watch closed")
		}
		return eps
	case <-time.After(5 * time.Second):
		t.Fatal("no update within 5s")
	}
	return nil
}

func addrs(eps []discover.Endpoint) []string {
	var out []string
	for _, e := range eps {
		out = append(out, e.Addr)
	}
	return out
}

func TestResolveFollowsUpdates(t *testing.T) {
	f := &fakeAPI{initial: map[string][]*pb.Update{"web:80": {add(pb.ProtocolHint_PROTOCOL_HINT_H2, 1, 2)}}, updates: make(chan *pb.Update)}
	addr, stop := serve(t, f, "127.0.0.1:0")
	defer stop()
	c := client(t, addr)
	w, err := c.Resolve(context.Background(), "web:80")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	eps := next(t, w)
	if got := addrs(eps); len(got) != 2 || got[0] != "10.0.0.1:1" || got[1] != "10.0.0.1:2" {
		t.Fatalf("first set %v", got)
	}
	if eps[0].Protocol != discover.HintH2 || eps[0].Identity == "" || eps[0].Labels["service"] != "web" {
		t.Fatalf("endpoint metadata lost: %+v", eps[0])
	}
	f.updates <- add(pb.ProtocolHint_PROTOCOL_HINT_UNSPECIFIED, 3)
	if got := addrs(next(t, w)); len(got) != 3 {
		t.Fatalf("after add: %v", got)
	}
	f.updates <- remove(1, 2)
	if got := addrs(next(t, w)); len(got) != 1 || got[0] != "10.0.0.1:3" {
		t.Fatalf("after remove: %v", got)
	}
	f.updates <- &pb.Update{Update: &pb.Update_NoEndpoints{NoEndpoints: &pb.NoEndpoints{Exists: true}}}
	if got := next(t, w); len(got) != 0 {
		t.Fatalf("after no_endpoints: %v", got)
	}
}

func TestResolveUnknownIsNotFound(t *testing.T) {
	f := &fakeAPI{initial: map[string][]*pb.Update{}, updates: make(chan *pb.Update)}
	addr, stop := serve(t, f, "127.0.0.1:0")
	defer stop()
	_, err := client(t, addr).Resolve(context.Background(), "nope:80")
	if !errors.Is(err, discover.ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
}

// An unknown authority's answer is a NotFoundError whose watch goes on:
// another "unknown" leaves it be, the first answer that knows the
// authority closes Appeared; Stop ends the stream.
func TestResolveUnknownWatchedUntilItAppears(t *testing.T) {
	f := &fakeAPI{initial: map[string][]*pb.Update{}, updates: make(chan *pb.Update), follow: true}
	addr, stop := serve(t, f, "127.0.0.1:0")
	defer stop()
	_, err := client(t, addr).Resolve(context.Background(), "web.ns.svc:80")
	var nf *discover.NotFoundError
	if !errors.As(err, &nf) || !errors.Is(err, discover.ErrNotFound) || nf.Appeared == nil {
		t.Fatalf("err = %v, want a *discover.NotFoundError with a watch", err)
	}
	defer nf.Stop()
	f.updates <- &pb.Update{Update: &pb.Update_NoEndpoints{NoEndpoints: &pb.NoEndpoints{Exists: false}}}
	select {
	case <-nf.Appeared:
		t.Fatal("Appeared closed while the control plane still does not know the authority")
	case <-time.After(100 * time.Millisecond):
	}
	f.updates <- add(pb.ProtocolHint_PROTOCOL_HINT_UNSPECIFIED, 1)
	select {
	case <-nf.Appeared:
	case <-time.After(5 * time.Second):
		t.Fatal("Appeared not closed after the control plane sent endpoints")
	}
}

// Stop ends the watch of an unknown authority (its stream closes).
func TestResolveUnknownStop(t *testing.T) {
	f := &fakeAPI{initial: map[string][]*pb.Update{}, updates: make(chan *pb.Update), follow: true}
	addr, stop := serve(t, f, "127.0.0.1:0")
	defer stop()
	_, err := client(t, addr).Resolve(context.Background(), "web.ns.svc:80")
	var nf *discover.NotFoundError
	if !errors.As(err, &nf) {
		t.Fatalf("err = %v, want a *discover.NotFoundError", err)
	}
	nf.Stop()
	select {
	case <-nf.Appeared: // the stream ended
	case <-time.After(5 * time.Second):
		t.Fatal("the watch of the unknown authority did not end on Stop")
	}
}

func TestResolveWithoutControlPlaneFails(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close() // nothing listens: connection refused
	_, err := client(t, addr).Resolve(context.Background(), "web:80")
	if err == nil || errors.Is(err, discover.ErrNotFound) {
		t.Fatalf("err = %v, want a connection error", err)
	}
}

// While the control plane is away the last endpoints keep serving; when it
// returns, the watch reconnects and replaces them with the new state.
func TestOutageKeepsLastEndpoints(t *testing.T) {
	f := &fakeAPI{initial: map[string][]*pb.Update{"web:80": {add(0, 1, 2)}}, updates: make(chan *pb.Update)}
	addr, stop := serve(t, f, "127.0.0.1:0")
	c := client(t, addr)
	w, err := c.Resolve(context.Background(), "web:80")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	next(t, w)
	stop()
	select {
	case eps := <-w.Updates():
		t.Fatalf("outage pushed a new set %v; the last one must keep serving", addrs(eps))
	case <-time.After(300 * time.Millisecond):
	}
	f.mu.Lock()
	f.initial["web:80"] = []*pb.Update{add(0, 7)}
	f.mu.Unlock()
	_, stop2 := serve(t, f, addr)
	defer stop2()
	if got := addrs(next(t, w)); len(got) != 1 || got[0] != "10.0.0.1:7" {
		t.Fatalf("after reconnect: %v", got)
	}
}

// Issue 11: a restarted controller answered a new stream with an empty set
// before the backends had registered again, and proxies replaced their
// endpoints with it (503 no_endpoints). The empty first answer of a new
// stream is held back: the endpoints come back, and replace the old ones,
// with no empty set in between.
func TestRestartEmptyFirstAnswerKeepsEndpoints(t *testing.T) {
	f := &fakeAPI{initial: map[string][]*pb.Update{"web:80": {add(0, 1, 2)}}, updates: make(chan *pb.Update), started: make(chan string, 4)}
	addr, stop := serve(t, f, "127.0.0.1:0")
	c := clientWith(t, addr, Options{FirstAnswer: 5 * time.Second, BackoffMin: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond,
		ConfirmEmpty: time.Minute})
	w, err := c.Resolve(context.Background(), "web:80")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	next(t, w)
	<-f.started
	stop()
	f.mu.Lock()
	f.initial["web:80"] = []*pb.Update{{Update: &pb.Update_NoEndpoints{NoEndpoints: &pb.NoEndpoints{Exists: true}}}}
	f.mu.Unlock()
	_, stop2 := serve(t, f, addr)
	defer stop2()
	select { // the restarted server's empty answer has been sent
	case <-f.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the watch did not reconnect within 10s")
	}
	select {
	case eps := <-w.Updates():
		t.Fatalf("a new stream's empty first answer replaced the endpoints at once: %v", addrs(eps))
	case <-time.After(300 * time.Millisecond):
	}
	f.updates <- add(0, 7) // the backend registered again
	if got := addrs(next(t, w)); len(got) != 1 || got[0] != "10.0.0.1:7" {
		t.Fatalf("after the backend came back: %v", got)
	}
}

// An empty set that lasts ConfirmEmpty is the truth, and is applied.
func TestRestartEmptyAnswerAppliedOnceConfirmed(t *testing.T) {
	f := &fakeAPI{initial: map[string][]*pb.Update{"web:80": {add(0, 1, 2)}}, updates: make(chan *pb.Update)}
	addr, stop := serve(t, f, "127.0.0.1:0")
	c := clientWith(t, addr, Options{FirstAnswer: 5 * time.Second, BackoffMin: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond,
		ConfirmEmpty: 200 * time.Millisecond})
	w, err := c.Resolve(context.Background(), "web:80")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	next(t, w)
	stop()
	f.mu.Lock()
	f.initial["web:80"] = []*pb.Update{{Update: &pb.Update_NoEndpoints{NoEndpoints: &pb.NoEndpoints{Exists: true}}}}
	f.mu.Unlock()
	_, stop2 := serve(t, f, addr)
	defer stop2()
	if got := next(t, w); len(got) != 0 {
		t.Fatalf("want the confirmed empty set, got %v", addrs(got))
	}
}

// A restarted controller may not know a service yet (local mode: one that
// exists through its registered workloads only). The watch used to end
// there for good, keeping stale endpoints and missing every later change;
// it keeps its endpoints and follows the service when it appears.
func TestRestartUnknownAuthorityKeepsWatching(t *testing.T) {
	f := &fakeAPI{initial: map[string][]*pb.Update{"web:80": {add(0, 1, 2)}}, updates: make(chan *pb.Update), started: make(chan string, 4)}
	addr, stop := serve(t, f, "127.0.0.1:0")
	c := clientWith(t, addr, Options{FirstAnswer: 5 * time.Second, BackoffMin: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond,
		ConfirmEmpty: time.Minute})
	w, err := c.Resolve(context.Background(), "web:80")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	next(t, w)
	<-f.started
	stop()
	f.mu.Lock()
	f.initial["web:80"] = []*pb.Update{{Update: &pb.Update_NoEndpoints{NoEndpoints: &pb.NoEndpoints{Exists: false}}}}
	f.mu.Unlock()
	_, stop2 := serve(t, f, addr)
	defer stop2()
	select {
	case <-f.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the watch did not reconnect within 10s")
	}
	select {
	case eps := <-w.Updates():
		t.Fatalf("the unknown authority replaced the endpoints at once: %v", addrs(eps))
	case <-time.After(300 * time.Millisecond):
	}
	select {
	case f.updates <- add(0, 7): // the service's workload registered
	case <-time.After(5 * time.Second):
		t.Fatal("the watch's stream is gone: it stopped following the authority")
	}
	if got := addrs(next(t, w)); len(got) != 1 || got[0] != "10.0.0.1:7" {
		t.Fatalf("after the service appeared: %v", got)
	}
}
