package h1loop

import (
	"context"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-mesh/meridian/proxy/httpproxy/h1client"
	"github.com/meridian-mesh/meridian/proxy/internal/evloop"
)

// Group is a proxy's event loops: each connection is one loop's alone,
// with that loop's pools of kept-alive connections to the endpoints.
type Group struct {
	loops []*Loop
	next  atomic.Uint32
}

// NewGroup starts n loops (n <= 0: one per processor the runtime uses),
// each holding a processor of its own while it wakes at least holdRate
// times a second, until it has been idle for hold (evloop's Hold; hold 0:
// never).
func NewGroup(n int, hold time.Duration, holdRate int) (*Group, error) {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	g := &Group{}
	for range n {
		l, err := evloop.New()
		if err != nil {
			g.Close()
			return nil, err
		}
		l.Hold(hold, holdRate)
		g.loops = append(g.loops, &Loop{l: l, servers: map[*Server]*serverConns{}, pools: map[poolKey]*pool{}, h2pools: map[poolKey]*h2pool{}, rw: h1client.NewRequestWriter()})
		go l.Run(context.Background())
	}
	return g, nil
}

// Close ends the loops, and every connection on them.
func (g *Group) Close() {
	for _, lp := range g.loops {
		lp.l.Close()
	}
}

// Loops are the group's loops, in order.
func (g *Group) Loops() []*Loop { return g.loops }

// Served counts the final responses the group's loops passed on.
func (g *Group) Served() int64 {
	var n int64
	for _, lp := range g.loops {
		n += lp.served.Load()
	}
	return n
}

// pick is the loop a new connection is served on: each in turn.
func (g *Group) pick() *Loop {
	return g.loops[int(g.next.Add(1)%uint32(len(g.loops)))]
}

// each runs f on every loop and waits for them all.
func (g *Group) each(f func(*Loop)) {
	var wg sync.WaitGroup
	for _, lp := range g.loops {
		wg.Add(1)
		lp.l.Post(func() { defer wg.Done(); f(lp) })
	}
	wg.Wait()
}

// Loop is one of a Group's event loops and what lives on it.
type Loop struct {
	l       *evloop.Loop
	servers map[*Server]*serverConns // the servers' connections served here
	pools   map[poolKey]*pool        // upstream connections by endpoint (and identity)
	h2pools map[poolKey]*h2pool      // HTTP/2 ones (relay_linux.go)
	rw      *h1client.RequestWriter  // reused
	// TLS connections': spare plaintext buffers, and what crypto/tls
	// writes, sent at once.
	plainBufs [][]byte
	tlsOut    []byte
	tlsJoin   []byte // a head and body joined into one record
	date      []byte // "Date: ...\r\n", for dateSec
	dateSec   int64
	served    atomic.Int64 // final responses passed on
}

// Served counts the final responses the loop passed on.
func (lp *Loop) Served() int64 { return lp.served.Load() }

// serverConns is a Server's connections on one loop.
type serverConns struct{ conns map[*client]struct{} }

func (lp *Loop) conns(s *Server) *serverConns {
	sc := lp.servers[s]
	if sc == nil {
		sc = &serverConns{conns: map[*client]struct{}{}}
		lp.servers[s] = sc
	}
	return sc
}

func (lp *Loop) dateLine() []byte {
	now := lp.l.Now()
	if s := now.Unix(); s != lp.dateSec || lp.date == nil {
		lp.dateSec = s
		lp.date = append(append(append(lp.date[:0], "Date: "...), now.UTC().Format(http.TimeFormat)...), "\r\n"...)
	}
	return lp.date
}
