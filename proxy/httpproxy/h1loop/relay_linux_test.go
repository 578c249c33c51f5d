package h1loop

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/meridian-mesh/meridian/proxy/httpproxy"
)

// Streams relayed to HTTP/2 endpoints (relay_linux.go, h2up_linux.go):
// Go's HTTP/2 server and grpc-go's as the endpoints (h2c), Go's HTTP/2
// client and grpc-go's as the clients, the fixture's fallback telling
// which path answered.

// h2Backend is Go's HTTP/2 server with prior knowledge (h2c) on loopback,
// serving h; conns counts its connections.
func h2Backend(t *testing.T, h http.Handler) (addr string, conns *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns = new(atomic.Int64)
	srv := &http.Server{Handler: h, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetUnencryptedHTTP2(true)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), conns
}

// toH2 routes to ep, spoken to in HTTP/2.
func toH2(ep Target) Target {
	ep.H2 = true
	return ep
}

// relayed makes sure the loop relays: GETs of path until one is
// answered by the loop (the first waits for the connection dialed for
// it), the fallback's answers, if any, dropped.
func (hf *h2fixture) relayed(t *testing.T, cl *http.Client, path string) {
	t.Helper()
	eventually(t, "a relayed answer", func() bool {
		resp, _ := hf.get(t, cl, path)
		return resp.Header.Get("X-Fallback") == ""
	})
	for len(hf.fb) > 0 {
		<-hf.fb
	}
}

// A request with a body and trailers, and its response with a body and
// trailers, relayed whole; each counted once with the Router's labels,
// the endpoint reached on one connection.
func TestRelayBodiesAndTrailers(t *testing.T) {
	type got struct {
		method, uri, host, body, trailer, te string
		proto                                int
	}
	seen := make(chan got, 16)
	addr, conns := h2Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		seen <- got{r.Method, r.RequestURI, r.Host, string(body), r.Trailer.Get("X-Req-T"), r.Header.Get("Te"), r.ProtoMajor}
		w.Header().Set("Trailer", "X-Sum")
		w.Header().Set("X-B", "1")
		w.WriteHeader(201)
		w.Write(bytes.ToUpper(body))
		w.Header().Set("X-Sum", strconv.Itoa(len(body)))
	}))
	ep := endpoint(t, addr)
	hf := startH2(t, 1, func(*http.Request) Target { return toH2(to(ep)) }, nil)
	cl := hf.client(t, nil)
	hf.relayed(t, cl, "/warm")
	for range len(seen) {
		<-seen
	}
	reqs0 := hf.count(t, "request_total", epLabels(addr))
	ok0 := hf.count(t, "response_total", with(epLabels(addr), "status_code", "201", "classification", "success"))

	pr, pw := io.Pipe()
	r := hf.req(t, context.Background(), http.MethodPost, "/up?q=1", pr)
	r.Trailer = http.Header{"X-Req-T": nil}
	r.Header.Set("Te", "trailers")
	go func() {
		pw.Write([]byte("hello "))
		pw.Write([]byte("world"))
		r.Trailer.Set("X-Req-T", "rt")
		pw.Close()
	}()
	resp, body := h2do(t, cl, r)
	if resp.StatusCode != 201 || body != "HELLO WORLD" || resp.Header.Get("X-Fallback") != "" || resp.Header.Get("X-B") != "1" {
		t.Fatalf("%s %q %v, want the endpoint's 201 HELLO WORLD", resp.Status, body, resp.Header)
	}
	if resp.Trailer.Get("X-Sum") != "11" {
		t.Errorf("trailers %v, want X-Sum: 11", resp.Trailer)
	}
	if _, err := http.ParseTime(resp.Header.Get("Date")); err != nil {
		t.Errorf("Date %q: %v", resp.Header.Get("Date"), err)
	}
	s := <-seen
	if s.proto != 2 || s.method != "POST" || s.uri != "/up?q=1" || s.host != "web.test" || s.body != "hello world" || s.trailer != "rt" || s.te != "trailers" {
		t.Errorf("the endpoint got %+v", s)
	}
	hf.settle()
	l := epLabels(addr)
	if n := hf.count(t, "request_total", l) - reqs0; n != 1 {
		t.Errorf("request_total +%v, want +1", n)
	}
	if n := hf.count(t, "response_total", with(l, "status_code", "201", "classification", "success")) - ok0; n != 1 {
		t.Errorf("response_total{status_code=201} +%v, want +1", n)
	}
	if n := hf.s.inFlight().Load(); n != 0 {
		t.Errorf("%d in flight after the response, want 0", n)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("the endpoint had %d connections, want the loop's one", n)
	}
	hf.noFb(t)
}

// A response larger than the client's windows is passed on as the
// client reads it (its windows), the endpoint's windows given back only
// then, and the request's body likewise the other way.
func TestRelayFlowControl(t *testing.T) {
	const n = 3 << 20 // beyond every window on the way
	addr, _ := h2Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Got", strconv.FormatInt(got, 10))
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		for sent := 0; sent < n; sent += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	ep := endpoint(t, addr)
	hf := startH2(t, 1, func(*http.Request) Target { return toH2(to(ep)) }, nil)
	cl := hf.client(t, &http.HTTP2Config{MaxReceiveBufferPerStream: 64 << 10, MaxReceiveBufferPerConnection: 64 << 10})
	hf.relayed(t, cl, "/warm")

	r := hf.req(t, context.Background(), http.MethodPut, "/big", bytes.NewReader(bytes.Repeat([]byte("y"), n)))
	resp, err := cl.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("X-Got") != strconv.Itoa(n) || resp.Header.Get("X-Fallback") != "" {
		t.Fatalf("%s %v, want the endpoint's answer to %d bytes", resp.Status, resp.Header, n)
	}
	// Read slowly at first: the relay holds what the client's window
	// does not take, no more than the endpoint's stream window.
	time.Sleep(50 * time.Millisecond)
	got, err := io.Copy(io.Discard, resp.Body)
	if err != nil || got != n {
		t.Errorf("read %d bytes (%v), want %d", got, err, n)
	}
	hf.noFb(t)
}

// gRPC: a unary call and a server stream relayed (grpc-go both ends),
// gRPC statuses in the trailers and in a trailers-only response counted
// as the goroutine path counts them.
func TestRelayGRPC(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("up", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	addr := ln.Addr().String()
	ep := endpoint(t, addr)
	hf := startH2(t, 1, func(*http.Request) Target { return toH2(to(ep)) }, nil)

	cc, err := grpc.NewClient("passthrough:///"+hf.addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("web.test"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	hc := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	// A call the fallback answered would fail (its handler is not
	// gRPC's): until the loop relays.
	eventually(t, "a relayed call", func() bool {
		_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "up"})
		return err == nil
	})
	for len(hf.fb) > 0 {
		<-hf.fb
	}
	l := epLabels(addr)
	ok0 := hf.count(t, "response_total", with(l, "grpc_status", "0"))
	for range 3 {
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "up"})
		if err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("Check: %v %v", r, err)
		}
	}
	// NOT_FOUND: a trailers-only response.
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("Check of an unknown service: %v, want NotFound", err)
	}
	// A server stream: Watch's first message, then the next on a change.
	w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: "up"})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := w.Recv(); err != nil || m.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch: %v %v", m, err)
	}
	hs.SetServingStatus("up", healthpb.HealthCheckResponse_NOT_SERVING)
	if m, err := w.Recv(); err != nil || m.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Watch after the change: %v %v", m, err)
	}
	hf.settle()
	if n := hf.count(t, "response_total", with(l, "grpc_status", "0")) - ok0; n != 3 {
		t.Errorf("response_total{grpc_status=0} +%v, want +3", n)
	}
	if n := hf.count(t, "response_total", with(l, "grpc_status", "5", "classification", "failure")); n != 1 {
		t.Errorf("response_total{grpc_status=5, failure} %v, want 1", n)
	}
	if len(hf.fb) != 0 {
		t.Errorf("the fallback served %d calls after the first", len(hf.fb))
	}
	// The client cancels the stream: counted as the client's, the
	// endpoint's stream reset.
	cancel()
	eventually(t, "the cancellation counted", func() bool {
		return hf.count(t, "request_client_error_total", map[string]string{"direction": "outbound", "authority": "web.test:80", "reason": "canceled"}) == 1
	})
	eventually(t, "nothing in flight", func() bool { return hf.s.inFlight().Load() == 0 })
}

// The endpoint resets a stream before its response: a request that may
// be sent again (a GET) goes to the fallback, which tries again; a POST
// whose body went out is answered 502 (for gRPC, UNAVAILABLE).
func TestRelayResetBeforeResponse(t *testing.T) {
	addr, _ := h2Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/warm" {
			return
		}
		io.Copy(io.Discard, r.Body)
		panic(http.ErrAbortHandler) // RST_STREAM, no response
	}))
	ep := endpoint(t, addr)
	hf := startH2(t, 1, func(*http.Request) Target { return toH2(to(ep)) }, nil)
	cl := hf.client(t, nil)
	hf.relayed(t, cl, "/warm")

	resp, body := hf.get(t, cl, "/get")
	if resp.Header.Get("X-Fallback") != "1" || body != "fallback GET /get " {
		t.Errorf("GET: %s %q, want the fallback's", resp.Status, body)
	}
	hf.nextFb(t)
	resp, body = h2do(t, cl, hf.req(t, context.Background(), http.MethodPost, "/post", strings.NewReader("body")))
	if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("X-Fallback") != "" || !strings.Contains(body, "without a response") {
		t.Errorf("POST: %s %q %v, want the relay's 502", resp.Status, body, resp.Header)
	}
	r := hf.req(t, context.Background(), http.MethodPost, "/grpc", strings.NewReader("\x00\x00\x00\x00\x00"))
	r.Header.Set("Content-Type", "application/grpc")
	resp, _ = h2do(t, cl, r)
	if resp.StatusCode != 200 || resp.Header.Get("Grpc-Status") != "14" || resp.Header.Get(httpproxy.ErrorHeader) != "upstream" {
		t.Errorf("gRPC: %s %v, want a trailers-only UNAVAILABLE", resp.Status, resp.Header)
	}
	hf.settle()
	l := epLabels(addr)
	if n := hf.count(t, "response_total", with(l, "error", "upstream")); n != 2 {
		t.Errorf("response_total{error=upstream} %v, want 2", n)
	}
	eventually(t, "nothing in flight", func() bool { return hf.s.inFlight().Load() == 0 })
}

// A response cut after its head: the client's stream reset, counted as a
// broken stream.
func TestRelayCutAfterHead(t *testing.T) {
	addr, _ := h2Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/warm" {
			return
		}
		w.Header().Set("Content-Length", "100")
		w.Write([]byte("part"))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}))
	ep := endpoint(t, addr)
	hf := startH2(t, 1, func(*http.Request) Target { return toH2(to(ep)) }, nil)
	cl := hf.client(t, nil)
	hf.relayed(t, cl, "/warm")
	resp, err := cl.Do(hf.req(t, context.Background(), http.MethodGet, "/cut", nil))
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Error("the cut body read whole")
	}
	hf.settle()
	eventually(t, "the cut counted", func() bool {
		return hf.count(t, "response_total", with(epLabels(addr), "error", "stream")) == 1
	})
	hf.noFb(t)
}

// A stream waits for the connection dialed for it; the endpoint refuses
// it: the stream goes to the fallback with its whole body (what came while
// it waited, the request's end with it), and for a moment after the
// refusal the next streams go there at once, without a dial.
func TestRelayDialRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	ep := endpoint(t, dead)
	hf := startH2(t, 1, func(*http.Request) Target { return toH2(to(ep)) }, nil)
	cl := hf.client(t, nil)
	for i, body := range []string{"a body", strings.Repeat("b", 100<<10)} {
		resp, got := h2do(t, cl, hf.req(t, context.Background(), http.MethodPost, "/p", strings.NewReader(body)))
		if resp.StatusCode != 200 || resp.Header.Get("X-Fallback") != "1" || got != "fallback POST /p "+body {
			t.Errorf("request %d: %s %.40q %v, want the fallback's answer with the body", i, resp.Status, got, resp.Header)
		}
		if s := hf.nextFb(t); s.body != body {
			t.Errorf("request %d: the fallback got %d bytes of body, want %d", i, len(s.body), len(body))
		}
	}
	hf.settle()
	if n := hf.s.inFlight().Load(); n != 0 {
		t.Errorf("%d in flight, want 0", n)
	}
	if n := hf.count(t, "request_total", epLabels(dead)); n != 0 {
		t.Errorf("request_total %v for the refused endpoint, want 0 (the fallback's to count)", n)
	}
}

// A pool whose endpoint answered but not in HTTP/2 (errNotTaken: its ALPN
// refused h2) waits twice as long after each such answer before it dials
// again, up to h2NotTakenMax; a connect failure waits h2RedialAfter, and a
// connection made forgets it all.
func TestH2PoolRedialBackoff(t *testing.T) {
	p := &h2pool{}
	steps := []struct {
		err  error
		want time.Duration
	}{
		{errNotTaken, time.Second},
		{errNotTaken, 2 * time.Second},
		{errNotTaken, 4 * time.Second},
		{errConnectClosed, h2RedialAfter},
		{errNotTaken, 2 * time.Second},
	}
	for i, s := range steps {
		p.dialing = true
		p.dialDone(nil, nil, s.err)
		if p.dialing || p.redial != s.want || time.Since(p.dialFailed) > time.Minute {
			t.Fatalf("after answer %d (%v): dialing %v, redial %v, want %v", i, s.err, p.dialing, p.redial, s.want)
		}
	}
	for range 20 {
		p.dialDone(nil, nil, errNotTaken)
	}
	if p.redial != h2NotTakenMax {
		t.Errorf("redial %v after many refusals, want the bound %v", p.redial, h2NotTakenMax)
	}
	p.dialDone(nil, &h2up{}, nil)
	if p.redial != 0 || len(p.conns) != 1 {
		t.Fatalf("after a connection: redial %v, %d connections, want 0 and 1", p.redial, len(p.conns))
	}
	p.dialDone(nil, nil, errNotTaken)
	if p.redial != time.Second {
		t.Errorf("a refusal after a connection: redial %v, want %v", p.redial, time.Second)
	}
}

// rawFrame is a frame an endpoint read: its type, stream and END_STREAM.
type rawFrame struct {
	typ http2.FrameType
	id  uint32
	end bool
}

// rawRead is what one of an endpoint's reads brought: the frames made
// whole (but SETTINGS, PING and WINDOW_UPDATE), and how many TCP segments
// with data came since the read before (TCP_INFO): the proxy's writes.
type rawRead struct {
	frames []rawFrame
	segs   uint32
}

// segsIn is the data segments c received (tcpi_data_segs_in).
func segsIn(t *testing.T, c net.Conn) uint32 {
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Error(err)
		return 0
	}
	var n uint32
	rc.Control(func(fd uintptr) {
		if ti, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			n = ti.Data_segs_in
		}
	})
	return n
}

// segEndpoint is an HTTP/2 endpoint speaking raw frames that tells what
// each of its reads brought, and answers each stream 200, no body, once
// its request ended.
func segEndpoint(t *testing.T) (addr string, reads chan rawRead) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	reads = make(chan rawRead, 64)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(wait))
		var out bytes.Buffer
		fw := http2.NewFramer(&out, nil)
		var hbuf bytes.Buffer
		hpack.NewEncoder(&hbuf).WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
		fw.WriteSettings()
		var in []byte
		preface := false
		buf := make([]byte, 64<<10)
		segs := segsIn(t, c)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			now := segsIn(t, c)
			rd := rawRead{segs: now - segs}
			segs = now
			in = append(in, buf[:n]...)
			if !preface {
				if len(in) < len(http2.ClientPreface) {
					continue
				}
				in, preface = in[len(http2.ClientPreface):], true
			}
			for len(in) >= 9 {
				fh, err := http2.ReadFrameHeader(bytes.NewReader(in))
				if err != nil || len(in) < 9+int(fh.Length) {
					break
				}
				in = in[9+fh.Length:]
				switch fh.Type {
				case http2.FrameSettings:
					if !fh.Flags.Has(http2.FlagSettingsAck) {
						fw.WriteSettingsAck()
					}
					continue
				case http2.FrameWindowUpdate, http2.FramePing:
					continue
				}
				end := (fh.Type == http2.FrameData || fh.Type == http2.FrameHeaders) && fh.Flags.Has(http2.FlagDataEndStream)
				rd.frames = append(rd.frames, rawFrame{fh.Type, fh.StreamID, end})
				if end {
					fw.WriteHeaders(http2.HeadersFrameParam{StreamID: fh.StreamID, BlockFragment: hbuf.Bytes(), EndStream: true, EndHeaders: true})
				}
			}
			reads <- rd
			if out.Len() > 0 {
				if _, err := c.Write(out.Bytes()); err != nil {
					return
				}
				out.Reset()
			}
		}
	}()
	return ln.Addr().String(), reads
}

// A request's HEADERS, DATA and end that came in one read of the client's
// connection leave for the endpoint in one write (one TCP segment), and so
// do the streams of one read bound for one endpoint. A write each cost a
// gRPC hop three system calls, and the next hop as many wake-ups.
func TestRelayCoalescesWrites(t *testing.T) {
	addr, reads := segEndpoint(t)
	ep := endpoint(t, addr)
	hf := startH2(t, 1, func(*http.Request) Target { return toH2(to(ep)) }, nil)
	r := dialRaw(t, hf.addr)
	r.write([]byte(http2.ClientPreface))
	r.settings()
	var lot bytes.Buffer
	fw := http2.NewFramer(&lot, nil)
	// send writes POSTs of a 5-byte body on streams ids, all in one write,
	// and reads their answers; what the endpoint's reads brought of them
	// is returned.
	send := func(ids ...uint32) (frames []rawFrame, segs uint32) {
		t.Helper()
		lot.Reset()
		for _, id := range ids {
			r.hbuf.Reset()
			for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", "web.test"}, {":path", "/p"}} {
				r.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
			}
			fw.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.hbuf.Bytes(), EndHeaders: true})
			fw.WriteData(id, false, []byte("hello"))
			fw.WriteData(id, true, nil)
		}
		r.write(lot.Bytes())
		for _, id := range ids {
			if status, _ := r.response(id); status != "200" {
				t.Fatalf("stream %d: %s, want the endpoint's 200", id, status)
			}
		}
		last := ids[len(ids)-1]
		for {
			select {
			case rd := <-reads:
				frames, segs = append(frames, rd.frames...), segs+rd.segs
				if n := len(frames); n > 0 && frames[n-1] == (rawFrame{http2.FrameData, last, true}) {
					return frames, segs
				}
			case <-time.After(wait):
				t.Fatalf("the endpoint did not read stream %d's end; it read %v", last, frames)
			}
		}
	}
	send(1) // the connection's first stream waits for its dial
	send(3)
	frames, segs := send(5)
	want := []rawFrame{{http2.FrameHeaders, 5, false}, {http2.FrameData, 5, false}, {http2.FrameData, 5, true}}
	if !slices.Equal(frames, want) || segs != 1 {
		t.Errorf("one stream's lot: the endpoint read %v in %d segments, want %v in one", frames, segs, want)
	}
	frames, segs = send(7, 9)
	want = []rawFrame{{http2.FrameHeaders, 7, false}, {http2.FrameData, 7, false}, {http2.FrameData, 7, true},
		{http2.FrameHeaders, 9, false}, {http2.FrameData, 9, false}, {http2.FrameData, 9, true}}
	if !slices.Equal(frames, want) || segs != 1 {
		t.Errorf("two streams' lot: the endpoint read %v in %d segments, want %v in one", frames, segs, want)
	}
}
