package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/protobuf/encoding/protojson"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

// A snapshot that does not compile is rejected with an error naming the
// part, and the one before keeps serving, whole.
func TestBadSnapshotRejected(t *testing.T) {
	e := startEcho(t, "web", nil)
	pn, other := freePort(t), freePort(t)
	good := snap("v1", httpPort(pn, httpListener("l", "", hostOf("", ruleTo("web", prefix("/"), to("web.svc:80", 1))))))
	g := startGateway(t, dsts(t, map[string][]string{"web.svc:80": {e.addr}}), good)
	for _, c := range []struct {
		name string
		s    *gatewaypb.Snapshot
		want string
	}{
		{"bad regex", snap("v2", httpPort(pn, httpListener("l", "", hostOf("", ruleTo("re", &gatewaypb.Match{Path: &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_REGEX, Value: "/(["}}, to("web.svc:80", 1))))),
			httpPort(other, httpListener("l2", "", hostOf("", ruleTo("web", nil, to("web.svc:80", 1)))))),
			`snapshot "v2": ports[0] (` + itoa(pn) + `): listeners[0] (l): hosts[0] (): rules[0] (HTTPRoute/ns/re/0): match.path.value: "/([" is not a valid RE2 expression`},
		{"unknown certificate", snap("v3", tlsPort(other, &gatewaypb.Listener{Name: "s", Mode: gatewaypb.Listener_HTTPS, Certificates: []string{"ns/none"}})),
			`snapshot "v3": ports[0] (` + itoa(other) + `): listeners[0] (s): certificates[0]: "ns/none" is not in the snapshot's certificates`},
		{"bad certificate", &gatewaypb.Snapshot{Version: "v4", Certificates: []*gatewaypb.Certificate{{Name: "ns/bad", CertChain: []byte("nope"), PrivateKey: []byte("nope")}}},
			`snapshot "v4": certificates[0] (ns/bad): cert_chain, private_key: tls: failed to find any PEM data in certificate input`},
		{"mode on the wrong port", snap("v5", httpPort(other, &gatewaypb.Listener{Name: "p", Mode: gatewaypb.Listener_TLS_PASSTHROUGH})),
			`snapshot "v5": ports[0] (` + itoa(other) + `): listeners[0] (p): mode: TLS_PASSTHROUGH is not allowed on a port of protocol HTTP`},
		{"bad hostname", snap("v6", httpPort(other, httpListener("h", "a.*.test"))),
			`snapshot "v6": ports[0] (` + itoa(other) + `): listeners[0] (h): hostname: "a.*.test": a wildcard is allowed only as the whole first label`},
		{"port 0", snap("v7", httpPort(0)), `snapshot "v7": ports[0] (0): port: 0 is not a port number (1-65535)`},
		{"tls terminate without certificates", snap("v8", tlsPort(other, &gatewaypb.Listener{Name: "t", Mode: gatewaypb.Listener_TLS_TERMINATE})),
			`snapshot "v8": ports[0] (` + itoa(other) + `): listeners[0] (t): certificates: empty; a TLS_TERMINATE listener needs at least one`},
		{"tls terminate with hosts", snap("v9", tlsPort(other, &gatewaypb.Listener{Name: "t", Mode: gatewaypb.Listener_TLS_TERMINATE, Hosts: []*gatewaypb.Host{hostOf("")}})),
			`snapshot "v9": ports[0] (` + itoa(other) + `): listeners[0] (t): hosts: a TLS_TERMINATE listener has tls_routes, not hosts`},
	} {
		err := g.Apply(c.s)
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to start with %q", c.name, err, c.want)
		}
		if v := g.Version(); v != "v1" {
			t.Errorf("%s: version %q serving, want v1", c.name, v)
		}
		if resp, _ := get(t, nil, pn, "x.test", "/"); resp.Header.Get("X-Backend") != "web" {
			t.Errorf("%s: the previous snapshot stopped serving: %s", c.name, resp.Status)
		}
		if _, open := g.openConns()[other]; open {
			t.Errorf("%s: the rejected snapshot's port was opened", c.name)
		}
	}
	d := g.Diagnostics()
	if len(d.Refused) != 8 || d.Refused[0].Version != "v9" {
		t.Errorf("diagnostics: refused %+v, want the 8 snapshots, newest first", d.Refused)
	}
}

// Ports open and close with snapshots; a port that stays keeps its socket
// and its connections (a keep-alive connection opened before a change
// serves requests after it).
func TestPortsFollowSnapshots(t *testing.T) {
	a, b := startEcho(t, "a", nil), startEcho(t, "b", nil)
	p1, p2 := freePort(t), freePort(t)
	rt := func(backend string) *gatewaypb.Listener {
		return httpListener("l", "", hostOf("", ruleTo(backend, nil, to(backend+".svc:80", 1))))
	}
	g := startGateway(t, dsts(t, map[string][]string{"a.svc:80": {a.addr}, "b.svc:80": {b.addr}}), snap("v1", httpPort(p1, rt("a"))))
	c, err := net.Dial("tcp", "127.0.0.1:"+itoa(p1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := newRawClient(c)
	if got := br.get(t, "x.test"); got != "a" {
		t.Fatalf("before: served by %q", got)
	}
	if err := g.Apply(snap("v2", httpPort(p1, rt("b")), httpPort(p2, rt("a")))); err != nil {
		t.Fatal(err)
	}
	if got := br.get(t, "x.test"); got != "b" {
		t.Errorf("same connection after the change: served by %q, want b (the new table)", got)
	}
	if resp, _ := get(t, nil, p2, "x.test", "/"); resp.Header.Get("X-Backend") != "a" {
		t.Errorf("the added port: %s", resp.Status)
	}
	if err := g.Apply(snap("v3", httpPort(p2, rt("b")))); err != nil {
		t.Fatal(err)
	}
	// The removed port is closed when Apply returns (its idle connection
	// drains behind): new connections are refused at once, and the next
	// snapshot can open the number again.
	if cc, err := net.Dial("tcp", "127.0.0.1:"+itoa(p1)); err == nil {
		cc.Close()
		t.Fatal("the removed port still accepts after Apply returned")
	}
	if err := g.Apply(snap("v4", httpPort(p2, rt("b")), httpPort(p1, rt("a")))); err != nil {
		t.Fatalf("the removed port opened again: %v", err)
	}
	if resp, _ := get(t, nil, p1, "x.test", "/"); resp.Header.Get("X-Backend") != "a" {
		t.Errorf("the port opened again: %s", resp.Status)
	}
	if resp, _ := get(t, nil, p2, "x.test", "/"); resp.Header.Get("X-Backend") != "b" {
		t.Errorf("the port that stayed: %s", resp.Status)
	}
}

// rawClient sends HTTP/1.1 requests over one connection.
type rawClient struct {
	c net.Conn
	r *bufio.Reader
}

func newRawClient(c net.Conn) *rawClient { return &rawClient{c: c, r: bufio.NewReader(c)} }

func (rc *rawClient) get(t *testing.T, host string) string {
	t.Helper()
	fmt.Fprintf(rc.c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", host)
	resp, err := http.ReadResponse(rc.r, nil)
	if err != nil {
		t.Fatalf("keep-alive connection: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.Header.Get("X-Backend")
}

// grpcEcho is a TestService whose FullDuplexCall echoes each message.
type grpcEcho struct {
	testgrpc.UnimplementedTestServiceServer
}

func (grpcEcho) FullDuplexCall(s grpc.BidiStreamingServer[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]) error {
	for {
		m, err := s.Recv()
		if err != nil {
			return nil
		}
		if err := s.Send(&testgrpc.StreamingOutputCallResponse{Payload: m.GetPayload()}); err != nil {
			return err
		}
	}
}

// Snapshots swapped many times under load: requests, a WebSocket and a
// gRPC stream open across every swap all succeed. Each request is served
// by the backend of the table it loaded, old or new.
func TestSwapUnderLoad(t *testing.T) {
	a, b := startEcho(t, "a", nil), startEcho(t, "b", nil)
	ws := startEcho(t, "ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, msg, err := c.Read(context.Background())
			if err != nil {
				return
			}
			if c.Write(context.Background(), typ, msg) != nil {
				return
			}
		}
	})
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(gs, grpcEcho{})
	go gs.Serve(gl)
	t.Cleanup(gs.Stop)

	pn := freePort(t)
	version := func(i int) *gatewaypb.Snapshot {
		backend := []string{"a", "b"}[i%2]
		grpcRule := ruleTo("grpc", &gatewaypb.Match{Headers: []*gatewaypb.HeaderMatch{{Name: "content-type", Regex: true, Value: "application/grpc.*"}}},
			&gatewaypb.Backend{Authority: "grpc.svc:80", Weight: 1, Name: "ns/grpc:80", Protocol: gatewaypb.Backend_H2C})
		grpcRule.Grpc = true
		return snap(fmt.Sprintf("v%d", i), httpPort(pn, httpListener("l", "",
			hostOf("", grpcRule,
				ruleTo("ws", prefix("/ws"), &gatewaypb.Backend{Authority: "ws.svc:80", Weight: 1, Name: "ns/ws:80", Protocol: gatewaypb.Backend_WEBSOCKET}),
				ruleTo("web", prefix("/"), to(backend+".svc:80", 1)),
			))))
	}
	g := startGateway(t, dsts(t, map[string][]string{"a.svc:80": {a.addr}, "b.svc:80": {b.addr}, "ws.svc:80": {ws.addr}, "grpc.svc:80": {gl.Addr().String()}}), version(0))
	addr := "127.0.0.1:" + itoa(pn)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	wc, _, err := websocket.Dial(ctx, "ws://"+addr+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer wc.CloseNow()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("grpc.test"))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	stream, err := testgrpc.NewTestServiceClient(cc).FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}

	const swaps, workers, requests = 100, 4, 100
	var failures atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := http.DefaultClient
			if w%2 == 1 {
				client = h2cClient()
			}
			for i := range requests {
				resp, err := client.Get("http://" + addr + "/x")
				if err != nil {
					failures.Add(1)
					t.Errorf("request %d: %v", i, err)
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || (string(body) != "a" && string(body) != "b") || resp.Header.Get("X-Backend") != string(body) {
					failures.Add(1)
					t.Errorf("request %d: %s %q", i, resp.Status, body)
				}
			}
		}()
	}
	wg.Add(2)
	go func() { // the WebSocket echoes across the swaps
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			msg := fmt.Sprintf("ws-%d", i)
			if err := wc.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
				failures.Add(1)
				t.Errorf("websocket write %d: %v", i, err)
				return
			}
			if _, got, err := wc.Read(ctx); err != nil || string(got) != msg {
				failures.Add(1)
				t.Errorf("websocket read %d: %q %v", i, got, err)
				return
			}
		}
	}()
	go func() { // so does the gRPC stream
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			body := []byte(fmt.Sprintf("grpc-%d", i))
			if err := stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: body}}); err != nil {
				failures.Add(1)
				t.Errorf("grpc send %d: %v", i, err)
				return
			}
			m, err := stream.Recv()
			if err != nil || string(m.GetPayload().GetBody()) != string(body) {
				failures.Add(1)
				t.Errorf("grpc recv %d: %v", i, err)
				return
			}
		}
	}()
	for i := 1; i <= swaps; i++ {
		if err := g.Apply(version(i)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if err := stream.CloseSend(); err != nil {
		t.Error(err)
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Errorf("gRPC stream end: %v, want EOF", err)
	}
	if n := failures.Load(); n != 0 {
		t.Errorf("%d failures across %d swaps", n, swaps)
	}
}

// The file source: a changed file is applied; one that does not parse
// or compile is refused and the snapshot before keeps serving.
func TestWatchFile(t *testing.T) {
	a, b := startEcho(t, "a", nil), startEcho(t, "b", nil)
	pn := freePort(t)
	s := func(v, backend string) []byte {
		out, err := protojson.Marshal(snap(v, httpPort(pn, httpListener("l", "", hostOf("", ruleTo("web", nil, to(backend+".svc:80", 1)))))))
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	path := filepath.Join(t.TempDir(), "gateway.json")
	write := func(b []byte) {
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write(s("v1", "a"))
	first, stamp, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, dsts(t, map[string][]string{"a.svc:80": {a.addr}, "b.svc:80": {b.addr}}), first)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { g.WatchFile(ctx, path, stamp, 10*time.Millisecond); close(done) }()
	defer func() { cancel(); <-done }()
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !ok(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	write(s("v2", "b"))
	waitFor("v2", func() bool { return g.Version() == "v2" || len(g.Diagnostics().Refused) > 0 })
	if r := g.Diagnostics().Refused; len(r) > 0 {
		t.Fatalf("refused: %+v", r)
	}
	if resp, _ := get(t, nil, pn, "x.test", "/"); resp.Header.Get("X-Backend") != "b" {
		t.Errorf("after v2: %s by %q", resp.Status, resp.Header.Get("X-Backend"))
	}
	write([]byte(`{"version": "v3", "ports": "nope"}`))
	waitFor("the refusal", func() bool { return len(g.Diagnostics().Refused) == 1 })
	if g.Version() != "v2" {
		t.Errorf("version %q after a broken file, want v2", g.Version())
	}
	if resp, _ := get(t, nil, pn, "x.test", "/"); resp.Header.Get("X-Backend") != "b" {
		t.Errorf("after the broken file: %s", resp.Status)
	}
}

// /gateway on the admin port lists the listeners, routes, certificates
// and rejected objects, as JSON and as text.
func TestDiagnosticsPage(t *testing.T) {
	a, b, c := startEcho(t, "a", nil), startEcho(t, "b", nil), startEcho(t, "c", nil)
	pn := freePort(t)
	s := tlsSnapshot(t, pn, "pass.svc:443")
	s.Rejected = []*gatewaypb.Rejected{{Kind: "HTTPRoute", Namespace: "ns", Name: "broken", Reason: "UnsupportedValue", Message: "spec.rules[0].matches[0].path.value: invalid regex"}}
	g := startGateway(t, dsts(t, map[string][]string{"a.svc:80": {a.addr}, "b.svc:80": {b.addr}, "c.svc:80": {c.addr}}), s)
	resp, err := http.Get("http://" + g.AdminAddr().String() + "/gateway?format=json")
	if err != nil {
		t.Fatal(err)
	}
	var d Diagnostics
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if d.Version != "v1" || d.Gateway != "gw-ns/gw" || len(d.Ports) != 1 || len(d.Ports[0].Listeners) != 4 {
		t.Fatalf("diagnostics: %+v", d)
	}
	if l := d.Ports[0].Listeners[0]; l.Name != "a" || l.Mode != "HTTPS" || len(l.Routes) != 1 || l.Routes[0].Route != "HTTPRoute/ns/a/0" {
		t.Errorf("first listener (exact names first): %+v", l)
	}
	if len(d.Certificates) != 4 || d.Certificates[0].Subject != "CN=a.test" || d.Certificates[0].NotAfter.Before(time.Now()) {
		t.Errorf("certificates: %+v", d.Certificates)
	}
	if len(d.Rejected) != 1 || d.Rejected[0].Name != "broken" || d.Rejected[0].Reason != "UnsupportedValue" {
		t.Errorf("rejected: %+v", d.Rejected)
	}
	resp, err = http.Get("http://" + g.AdminAddr().String() + "/gateway")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`snapshot version "v1"`, "HTTPRoute/ns/a/0", "ns/a:80 weight=1", "CN=a.test", "HTTPRoute ns/broken", "UnsupportedValue", "TLS_PASSTHROUGH"} {
		if !strings.Contains(string(text), want) {
			t.Errorf("the text page lacks %q:\n%s", want, text)
		}
	}
}

// A port a snapshot removes stops accepting at once but lets the request
// in flight on it finish.
func TestRemovedPortDrains(t *testing.T) {
	started := make(chan struct{})
	slow := startEcho(t, "slow", func(w http.ResponseWriter, r *http.Request) {
		close(started)
		time.Sleep(300 * time.Millisecond)
		io.WriteString(w, "done")
	})
	p1, p2 := freePort(t), freePort(t)
	rt := httpListener("l", "", hostOf("", ruleTo("slow", nil, to("slow.svc:80", 1))))
	g := startGateway(t, dsts(t, map[string][]string{"slow.svc:80": {slow.addr}}), snap("v1", httpPort(p1, rt)))
	type result struct {
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://127.0.0.1:" + itoa(p1) + "/")
		if err != nil {
			res <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- result{string(b), err}
	}()
	<-started
	if err := g.Apply(snap("v2", httpPort(p2, rt))); err != nil {
		t.Fatal(err)
	}
	if r := <-res; r.err != nil || r.body != "done" {
		t.Errorf("the request in flight on the removed port: %q %v", r.body, r.err)
	}
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+itoa(p1), time.Second); err == nil {
		c.Close()
		t.Error("the removed port still accepts")
	}
}
