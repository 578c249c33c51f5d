package h2client

import (
	"bufio"
	"bytes"
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/meridian-mesh/meridian/proxy/internal/h2head"
)

const (
	initialWindow = 65535 // RFC 9113 6.9.2
	maxWindow     = 1<<31 - 1
	// Before the server's SETTINGS, streams are limited to Go's initial
	// guess; a SETTINGS without MAX_CONCURRENT_STREAMS lifts it to Go's
	// default ("unlimited" per RFC 9113).
	initialMaxConcurrent = 100
	defaultMaxConcurrent = 1000
	maxReadFrameSize     = 1 << 20 // Go's transport's
	inflowMinRefresh     = 4 << 10
)

var clientPreface = []byte(http2.ClientPreface)

// conn is one HTTP/2 connection. Its reader goroutine reads frames and
// delivers them to streams; requests write their own frames under wmu.
type conn struct {
	cl *Client
	o  Options
	nc net.Conn
	br *bufio.Reader
	fr *http2.Framer
	hr *h2head.Reader // fr's frames, header blocks decoded (the reader's)

	// wmu serializes writes: the framer's writing half, bw, the HPACK
	// encoder, and stream ids going out in order.
	wmu  sync.Mutex
	bw   *bufio.Writer
	werr error
	henc *hpack.Encoder
	hbuf bytes.Buffer

	mu              sync.Mutex
	cond            sync.Cond // send-window waiters
	streams         map[uint32]*stream
	nextID          uint32
	reserved        int
	maxConcurrent   uint32
	maxFrameSize    uint32
	peerMaxHeaders  uint64
	initialSendWin  int32 // the peer's SETTINGS_INITIAL_WINDOW_SIZE
	sendWin         int64 // the connection's send window
	inflow          inflow
	seenSettings    bool
	wantSettingsAck bool
	goAway          bool
	goAwayCode      http2.ErrCode
	doNotReuse      bool
	closed          bool
	err             error // why it closed
	pings           map[[8]byte]chan struct{}
	idleSince       time.Time
	idleTimer       *time.Timer
	readerDone      chan struct{}
	lastRead        atomic.Int64 // unix nanoseconds
	pingTimer       *time.Timer

	// pending are streams whose response headers came in the frames the
	// reader has buffered: they are woken when it has processed them all,
	// so that a response's DATA and trailers that arrived with its
	// HEADERS are in before its caller runs (the forwarder then sends
	// them on in one write).
	pending []*stream
}

func newConn(cl *Client, nc net.Conn, o Options) (*conn, error) {
	cc := &conn{
		cl:              cl,
		o:               o,
		nc:              nc,
		streams:         make(map[uint32]*stream),
		nextID:          1,
		maxConcurrent:   initialMaxConcurrent,
		maxFrameSize:    16 << 10,
		peerMaxHeaders:  1<<64 - 1,
		initialSendWin:  initialWindow,
		sendWin:         initialWindow,
		wantSettingsAck: true,
		pings:           make(map[[8]byte]chan struct{}),
		readerDone:      make(chan struct{}),
		idleSince:       time.Now(),
	}
	cc.cond.L = &cc.mu
	cc.bw = bufio.NewWriterSize(stickyErrWriter{nc, &cc.werr}, 16<<10)
	cc.br = bufio.NewReaderSize(nc, 16<<10)
	cc.fr = http2.NewFramer(cc.bw, cc.br)
	cc.fr.SetMaxReadFrameSize(maxReadFrameSize)
	cc.fr.MaxHeaderListSize = o.MaxHeaderListSize
	cc.fr.SetReuseFrames() // the reader copies DATA out before reading on
	cc.hr = h2head.NewReader(cc.fr, cc.br, hpack.NewDecoder(4096, nil))
	cc.henc = hpack.NewEncoder(&cc.hbuf)
	cc.inflow.init(int32(o.ConnWindow) + initialWindow)

	cc.bw.Write(clientPreface)
	cc.fr.WriteSettings(
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(o.StreamWindow)},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: maxReadFrameSize},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: o.MaxHeaderListSize},
	)
	cc.fr.WriteWindowUpdate(0, uint32(o.ConnWindow))
	cc.bw.Flush()
	if cc.werr != nil {
		nc.Close()
		return nil, cc.werr
	}
	cc.lastRead.Store(time.Now().UnixNano())
	if o.IdleTimeout > 0 {
		cc.idleTimer = time.AfterFunc(o.IdleTimeout, cc.onIdleTimer)
	}
	if o.SendPingTimeout > 0 {
		cc.pingTimer = time.AfterFunc(o.SendPingTimeout, cc.onPingTimer)
	}
	go cc.readLoop()
	return cc, nil
}

// stickyErrWriter keeps the first write error: every later write fails.
type stickyErrWriter struct {
	w   io.Writer
	err *error
}

func (s stickyErrWriter) Write(p []byte) (int, error) {
	if *s.err != nil {
		return 0, *s.err
	}
	n, err := s.w.Write(p)
	*s.err = err
	return n, err
}

// reserve takes a stream slot for a request if the connection can
// take one.
func (cc *conn) reserve() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if !cc.usableLocked() {
		return false
	}
	if uint32(len(cc.streams)+cc.reserved) >= cc.maxConcurrent {
		return false
	}
	cc.reserved++
	return true
}

func (cc *conn) usableLocked() bool {
	return !cc.closed && !cc.goAway && !cc.doNotReuse && cc.nextID < maxWindow-1
}

func (cc *conn) unreserveLocked() {
	cc.reserved--
	cc.maybeIdleLocked()
}

// maybeIdleLocked notes when the connection goes idle, and closes one
// that drains (GOAWAY) once its last stream is done.
func (cc *conn) maybeIdleLocked() {
	if len(cc.streams) != 0 || cc.reserved != 0 {
		return
	}
	cc.idleSince = time.Now()
	if (cc.goAway || cc.doNotReuse) && !cc.closed {
		go cc.close(errConnUnusable)
	}
}

func (cc *conn) onIdleTimer() {
	cc.mu.Lock()
	if cc.closed {
		cc.mu.Unlock()
		return
	}
	idle := len(cc.streams) == 0 && cc.reserved == 0
	left := cc.o.IdleTimeout - time.Since(cc.idleSince)
	if !idle || left > 0 {
		if !idle || left <= 0 {
			left = cc.o.IdleTimeout
		}
		cc.idleTimer.Reset(left)
		cc.mu.Unlock()
		return
	}
	cc.mu.Unlock()
	cc.closeIfIdle()
}

// closeIfIdle closes the connection, GOAWAY first, if no stream uses it.
func (cc *conn) closeIfIdle() {
	cc.mu.Lock()
	if cc.closed || len(cc.streams) != 0 || cc.reserved != 0 {
		cc.mu.Unlock()
		return
	}
	cc.doNotReuse = true
	last := cc.nextID - 2
	if cc.nextID < 2 {
		last = 0
	}
	cc.mu.Unlock()
	cc.wmu.Lock()
	cc.fr.WriteGoAway(last, http2.ErrCodeNo, nil)
	cc.bw.Flush()
	cc.wmu.Unlock()
	cc.close(errConnUnusable)
}

// onPingTimer sends a PING when nothing came for SendPingTimeout, and
// closes the connection if its answer does not come within PingTimeout
// (Go's health check); else it waits for the next quiet period.
func (cc *conn) onPingTimer() {
	since := time.Since(time.Unix(0, cc.lastRead.Load()))
	if since < cc.o.SendPingTimeout {
		cc.pingTimer.Reset(cc.o.SendPingTimeout - since)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), cc.o.PingTimeout)
	err := cc.ping(ctx)
	cancel()
	if err != nil {
		cc.close(fmt.Errorf("h2client: connection lost: no PING answer within %v: %w", cc.o.PingTimeout, err))
		return
	}
	cc.mu.Lock()
	closed := cc.closed
	cc.mu.Unlock()
	if !closed {
		cc.pingTimer.Reset(cc.o.SendPingTimeout)
	}
}

// ping sends a PING and waits for its acknowledgement.
func (cc *conn) ping(ctx context.Context) error {
	c := make(chan struct{})
	var p [8]byte
	for {
		crand.Read(p[:])
		cc.mu.Lock()
		if cc.closed {
			err := cc.err
			cc.mu.Unlock()
			return err
		}
		if _, dup := cc.pings[p]; !dup {
			cc.pings[p] = c
			cc.mu.Unlock()
			break
		}
		cc.mu.Unlock()
	}
	errc := make(chan error, 1)
	go func() { // the write may block behind a stalled peer: the timeout still counts
		cc.wmu.Lock()
		defer cc.wmu.Unlock()
		cc.fr.WritePing(false, p)
		errc <- cc.bw.Flush()
	}()
	for {
		select {
		case <-c:
			return nil
		case err := <-errc:
			if err != nil {
				return err
			}
			errc = nil
		case <-ctx.Done():
			return ctx.Err()
		case <-cc.readerDone:
			return cc.err
		}
	}
}

// close ends the connection: streams still on it fail with err (or the
// reader's error, when it ended first).
func (cc *conn) close(err error) {
	cc.mu.Lock()
	if cc.closed {
		cc.mu.Unlock()
		return
	}
	cc.closed = true
	cc.err = err
	streams := make([]*stream, 0, len(cc.streams))
	for _, cs := range cc.streams {
		streams = append(streams, cs)
	}
	cc.cond.Broadcast()
	cc.mu.Unlock()
	cc.cl.forget(cc)
	cc.nc.Close()
	if cc.idleTimer != nil {
		cc.idleTimer.Stop()
	}
	if cc.pingTimer != nil {
		cc.pingTimer.Stop()
	}
	for _, cs := range streams {
		cs.abort(err, false)
	}
}

// connError ends the connection for a protocol error of the peer's: GOAWAY
// with the code, then close.
func (cc *conn) connError(code http2.ErrCode, why string) {
	err := fmt.Errorf("h2client: connection error %v from the server: %s", code, why)
	cc.mu.Lock()
	last := uint32(0)
	if cc.nextID > 1 {
		last = cc.nextID - 2
	}
	cc.mu.Unlock()
	cc.wmu.Lock()
	cc.fr.WriteGoAway(last, code, nil)
	cc.bw.Flush()
	cc.wmu.Unlock()
	cc.close(err)
}

// writeWindowUpdates gives back receive window (0: none of that level).
func (cc *conn) writeWindowUpdates(id uint32, connAdd, streamAdd int32) {
	if connAdd == 0 && streamAdd == 0 {
		return
	}
	cc.wmu.Lock()
	if connAdd > 0 {
		cc.fr.WriteWindowUpdate(0, uint32(connAdd))
	}
	if streamAdd > 0 {
		cc.fr.WriteWindowUpdate(id, uint32(streamAdd))
	}
	cc.bw.Flush()
	cc.wmu.Unlock()
}

// writeReset sends RST_STREAM.
func (cc *conn) writeReset(id uint32, code http2.ErrCode) {
	cc.wmu.Lock()
	cc.fr.WriteRSTStream(id, code)
	cc.bw.Flush()
	cc.wmu.Unlock()
}

// inflow is a receive window (x/net/http2's): credit goes back in batches
// of at least 4 KiB, or when it is a good part of what is left.
type inflow struct {
	avail, unsent int32
}

func (f *inflow) init(n int32) { f.avail = n }

func (f *inflow) add(n int) int32 {
	if n <= 0 {
		return 0
	}
	unsent := int64(f.unsent) + int64(n)
	if unsent+int64(f.avail) > maxWindow {
		unsent = maxWindow - int64(f.avail) // never past the largest window
	}
	f.unsent = int32(unsent)
	if f.unsent < inflowMinRefresh && f.unsent < f.avail {
		return 0
	}
	f.avail += f.unsent
	f.unsent = 0
	return int32(unsent)
}

func (f *inflow) take(n uint32) bool {
	if n > uint32(f.avail) {
		return false
	}
	f.avail -= int32(n)
	return true
}

var errFromPeer = errors.New("received from peer")
