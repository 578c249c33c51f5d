package sidecar

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"

	"github.com/meridian-mesh/meridian/proxy/detect"
	"github.com/meridian-mesh/meridian/proxy/outbound"
	"github.com/meridian-mesh/meridian/proxy/tlsid"
)

var errNotMeshed = errors.New("not a meshed client")

// terminateMTLS looks at an inbound TLS ClientHello. From a meshed peer (its
// SNI names an identity of our trust domain) it terminates mTLS: a.Conn
// becomes the decrypted stream, a.peer the client's SPIFFE ID, and the
// protocol inside is what ALPN said. Any other TLS is left untouched for the
// application (a.Conn replays the bytes read) and reported as detect.TLS.
func (p *Proxy) terminateMTLS(ctx context.Context, a *accepted) (detect.Protocol, error) {
	rc := &helloConn{Conn: a.Conn, recording: true}
	base := p.cfg.Identity.ServerConfig()
	td := p.cfg.Identity.ID().TrustDomain()
	meshed := false
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
			if !tlsid.IsMeshedServerName(chi.ServerName, td) {
				return nil, errNotMeshed
			}
			meshed = true
			rc.recording = false
			rc.buf = nil
			return base, nil
		},
	}
	tc := tls.Server(rc, cfg)
	hctx, cancel := context.WithTimeout(ctx, outbound.HandshakeTimeout)
	defer cancel()
	err := tc.HandshakeContext(hctx)
	if !meshed {
		// Not ours: replay what the handshake read, to whoever is behind.
		a.Conn = &replayConn{Conn: a.Conn, r: io.MultiReader(bytes.NewReader(rc.buf), a.Conn)}
		return detect.TLS, nil
	}
	if err != nil {
		return detect.Opaque, err
	}
	p.mtlsIn.Add(1)
	cs := tc.ConnectionState()
	if id, ok := tlsid.PeerID(cs); ok {
		a.peer = id.String()
	}
	a.Conn = tc
	switch cs.NegotiatedProtocol {
	case tlsid.ALPNH2:
		return p.detectInside(a, detect.HTTP2)
	case tlsid.ALPNHTTP1:
		return p.detectInside(a, detect.HTTP1)
	case tlsid.ALPNOpaque:
		return detect.Opaque, nil
	}
	return p.detectInside(a, detect.Opaque)
}

// detectInside runs protocol detection on the decrypted stream when ALPN
// did not settle it (want Opaque), else trusts ALPN.
func (p *Proxy) detectInside(a *accepted, want detect.Protocol) (detect.Protocol, error) {
	if want != detect.Opaque {
		return want, nil
	}
	proto, dc, err := detect.DetectUntil(a.Conn, p.cfg.DetectTimeout, a.lineDeadline)
	if err != nil {
		return detect.Opaque, err
	}
	a.Conn = dc
	return proto, nil
}

// helloConn records what a TLS server reads until it has seen the
// ClientHello, and swallows what it writes until it is known to be meshed
// (so a refused ClientHello draws no alert).
type helloConn struct {
	net.Conn
	recording bool
	buf       []byte
}

func (c *helloConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if c.recording {
		c.buf = append(c.buf, b[:n]...)
	}
	return n, err
}

func (c *helloConn) Write(b []byte) (int, error) {
	if c.recording {
		return len(b), nil
	}
	return c.Conn.Write(b)
}

// replayConn reads r (bytes already consumed, then the connection).
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(b []byte) (int, error) { return c.r.Read(b) }

func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
