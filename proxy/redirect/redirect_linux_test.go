package redirect

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/meridian-mesh/meridian/internal/ports"
	"github.com/meridian-mesh/meridian/proxy/origdst"
)

// The rules, installed in a pod's network namespace, proven with real
// connections: each test dials from the application, from the proxy's uid or
// from a peer outside the pod, and checks which listener the connection
// reached and what SO_ORIGINAL_DST says it was meant for.
func TestRedirect(t *testing.T) {
	peerNS, inside := enterPod(t)
	if !inside {
		return
	}
	cfg := DefaultConfig()
	cfg.SkipInboundPorts = []ports.Range{{First: 3306, Last: 3306}}
	cfg.SkipOutboundPorts = []ports.Range{{First: 9000, Last: 9001}}
	cfg.SkipOutboundCIDRs = []netip.Prefix{netip.MustParsePrefix(peerIP4b + "/32"), netip.MustParsePrefix(peerIP6b + "/128")}
	if err := Apply(cfg); err != nil {
		t.Fatalf("Apply: %v\nnftables NAT must work on this kernel for Meridian's init container to work at all", err)
	}

	w := newWorld(t)
	// In the pod: the proxy, the application, a database that skips the proxy.
	w.listen("outbound", "127.0.0.1:4140")
	w.listen("outbound", "[::1]:4140")
	w.listen("inbound", "0.0.0.0:4143")
	w.listen("inbound", "[::]:4143")
	w.listen("admin", "0.0.0.0:4190")
	w.listen("admin", "0.0.0.0:4191")
	w.listen("admin", "[::]:4191")
	w.listen("app", "0.0.0.0:8080")
	w.listen("app", "[::]:8080")
	w.listen("db", "0.0.0.0:3306")
	// Outside the pod: a server on port 80 and on a skipped port.
	for _, a := range []string{"0.0.0.0:80", "[::]:80", "0.0.0.0:9001", "[::]:9001"} {
		var ln net.Listener
		err := inNetns(peerNS, func() (err error) { ln, err = net.Listen(network(a), a); return err })
		if err != nil {
			t.Fatalf("listen %s in the peer: %v", a, err)
		}
		w.serve("peer", ln)
	}

	app := func(addr string) (net.Conn, error) { return net.DialTimeout("tcp", addr, 5*time.Second) }
	proxy := func(addr string) (c net.Conn, err error) {
		err = asUID(DefaultProxyUID, func() error { c, err = app(addr); return err })
		return c, err
	}
	peer := func(addr string) (c net.Conn, err error) {
		err = inNetns(peerNS, func() error { c, err = app(addr); return err })
		return c, err
	}

	t.Run("outbound is redirected", func(t *testing.T) {
		for _, dst := range []string{"198.51.100.7:80", "[2001:db8:ffff::7]:80", peerIP4 + ":80", "[" + peerIP6 + "]:80"} {
			w.expect(t, app, dst, "outbound", true)
		}
	})
	t.Run("the proxy uid is not", func(t *testing.T) {
		w.expect(t, proxy, peerIP4+":80", "peer", false)
		w.expect(t, proxy, "["+peerIP6+"]:80", "peer", false)
		// The proxy's inbound side forwarding to the application.
		w.expect(t, proxy, podIP4+":8080", "app", false)
	})
	t.Run("skipped outbound ports are not", func(t *testing.T) {
		w.expect(t, app, peerIP4+":9001", "peer", false)
		w.expect(t, app, "["+peerIP6+"]:9001", "peer", false)
	})
	t.Run("skipped outbound CIDRs are not", func(t *testing.T) {
		w.expect(t, app, peerIP4b+":80", "peer", false)
		w.expect(t, app, "["+peerIP6b+"]:80", "peer", false)
	})
	t.Run("loopback and the pod's own IPs are not", func(t *testing.T) {
		for _, dst := range []string{"127.0.0.1:8080", "[::1]:8080", podIP4 + ":8080", "[" + podIP6 + "]:8080"} {
			w.expect(t, app, dst, "app", false)
		}
	})
	t.Run("inbound is redirected", func(t *testing.T) {
		// 5555: no listener needed, every port goes to the proxy.
		for _, dst := range []string{podIP4 + ":8080", "[" + podIP6 + "]:8080", podIP4 + ":5555"} {
			w.expect(t, peer, dst, "inbound", true)
		}
	})
	t.Run("admin, skipped and the inbound port itself are not", func(t *testing.T) {
		w.expect(t, peer, podIP4+":4191", "admin", false)
		w.expect(t, peer, "["+podIP6+"]:4191", "admin", false)
		w.expect(t, peer, podIP4+":4190", "admin", false)
		w.expect(t, peer, podIP4+":3306", "db", false)
		w.expect(t, peer, podIP4+":4143", "inbound", false)
	})
	t.Run("nft lists what String says", func(t *testing.T) {
		if _, err := exec.LookPath("nft"); err != nil {
			t.Skip("nft(8) is not installed; the rules themselves are proven above")
		}
		out, err := exec.Command("nft", "list", "table", "inet", TableName).CombinedOutput()
		if err != nil {
			t.Fatalf("nft list: %v: %s", err, out)
		}
		if got, want := string(out), cfg.String(); got != want {
			t.Errorf("nft lists:\n%s\nString says:\n%s", got, want)
		}
	})
	t.Run("applying again replaces the rules", func(t *testing.T) {
		if err := Apply(cfg); err != nil {
			t.Fatal(err)
		}
		checkInstalled(t, cfg)
		less := cfg
		less.SkipOutboundPorts = nil
		if err := Apply(less); err != nil {
			t.Fatal(err)
		}
		checkInstalled(t, less)
		w.expect(t, app, peerIP4+":9001", "outbound", true)
		if err := Apply(cfg); err != nil {
			t.Fatal(err)
		}
		checkInstalled(t, cfg)
		w.expect(t, app, peerIP4+":9001", "peer", false)
		w.expect(t, app, peerIP4+":80", "outbound", true)
	})
	t.Run("remove", func(t *testing.T) {
		for range 2 { // the second time there is nothing to remove, which is fine
			if err := Remove(); err != nil {
				t.Fatal(err)
			}
		}
		conn, err := nftables.New()
		if err != nil {
			t.Fatal(err)
		}
		if tables, err := conn.ListTablesOfFamily(nftables.TableFamilyINet); err != nil {
			t.Fatal(err)
		} else {
			for _, tb := range tables {
				if tb.Name == TableName {
					t.Fatal("the table is still there after Remove")
				}
			}
		}
		w.expect(t, app, peerIP4+":80", "peer", false)
		w.expect(t, peer, podIP4+":8080", "app", false)
	})
}

// checkInstalled compares the rules in the kernel with cfg's, rule by rule
// as counts (nftables' own expression decoding is the library's business),
// which shows that applying twice leaves one copy, not two.
func checkInstalled(t *testing.T, cfg Config) {
	t.Helper()
	conn, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	chains, err := conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, c := range chains {
		if c.Table.Name != TableName {
			continue
		}
		rules, err := conn.GetRules(c.Table, c)
		if err != nil {
			t.Fatal(err)
		}
		got[c.Name] = len(rules)
	}
	want := map[string]int{}
	for _, c := range cfg.chains() {
		want[c.name] = len(c.rules)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("rules per chain in the kernel: %v, want %v", got, want)
	}
}

// A world is the listeners of a test and what arrives at them.
type world struct {
	t       *testing.T
	arrived chan arrival
	seq     atomic.Int64
}

// An arrival is one accepted connection: which listener took it, the token
// the client sent on it, and where the client meant to go (invalid when the
// connection was not redirected).
type arrival struct {
	listener, token string
	orig            netip.AddrPort
	err             error
}

func newWorld(t *testing.T) *world {
	return &world{t: t, arrived: make(chan arrival, 16)}
}

// listen opens a listener named name in the pod.
func (w *world) listen(name, addr string) {
	ln, err := net.Listen(network(addr), addr)
	if err != nil {
		w.t.Fatalf("listen %s: %v", addr, err)
	}
	w.serve(name, ln)
}

// serve reports every connection ln accepts as an arrival at name.
func (w *world) serve(name string, ln net.Listener) {
	w.t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go w.receive(name, c)
		}
	}()
}

// network is tcp6 for "[host]:port", tcp4 otherwise: one listener per family.
func network(addr string) string {
	if strings.HasPrefix(addr, "[") {
		return "tcp6"
	}
	return "tcp4"
}

func (w *world) receive(name string, c net.Conn) {
	defer c.Close()
	a := arrival{listener: name}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	a.token, a.err = bufio.NewReader(c).ReadString('\n')
	if orig, err := origdst.Lookup(c); err == nil {
		a.orig = orig
	} else if !errors.Is(err, origdst.ErrNotRedirected) {
		a.err = errors.Join(a.err, err)
	}
	w.arrived <- a
}

// expect dials dst with dial and checks that the connection arrives at the
// listener named want, redirected (and then meant for dst) or not.
func (w *world) expect(t *testing.T, dial func(string) (net.Conn, error), dst, want string, redirected bool) {
	t.Helper()
	c, err := dial(dst)
	if err != nil {
		t.Errorf("dial %s: %v", dst, err)
		return
	}
	defer c.Close()
	token := fmt.Sprintf("connection %d to %s\n", w.seq.Add(1), dst)
	if _, err := c.Write([]byte(token)); err != nil {
		t.Errorf("dial %s: write: %v", dst, err)
		return
	}
	timeout := time.After(10 * time.Second)
	for {
		var a arrival
		select {
		case a = <-w.arrived:
		case <-timeout:
			t.Errorf("dial %s: no listener saw the connection", dst)
			return
		}
		if a.token != token {
			continue // a leftover from an earlier check that failed
		}
		switch {
		case a.err != nil:
			t.Errorf("dial %s: at %s: %v", dst, a.listener, a.err)
		case a.listener != want:
			t.Errorf("dial %s: reached %s, want %s", dst, a.listener, want)
		case redirected && a.orig.String() != netip.MustParseAddrPort(dst).String():
			t.Errorf("dial %s: reached %s redirected from %v, want from %s", dst, a.listener, a.orig, dst)
		case !redirected && a.orig.IsValid():
			t.Errorf("dial %s: reached %s, but redirected from %v", dst, a.listener, a.orig)
		}
		return
	}
}
