package gateway

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// The PROXY protocol (HAProxy's, versions 1 and 2): a load balancer in
// front of the gateway says first who the client is. A port with
// Port.proxy_protocol requires the header on every connection; the client's
// address it gives is the connection's RemoteAddr from then on (and so the
// address X-Forwarded-For appends).

// v2Signature starts a version 2 header.
var v2Signature = []byte("\r\n\r\n\x00\r\nQUIT\n")

// readProxyHeader reads a PROXY header from br and returns the client's
// address, or nil for a header that names none (v1 UNKNOWN, v2 LOCAL:
// the balancer's own health checks), whose connection keeps its peer.
func readProxyHeader(br *bufio.Reader) (net.Addr, error) {
	head, err := br.Peek(len(v2Signature))
	if err != nil {
		return nil, fmt.Errorf("PROXY header: %w", err)
	}
	if bytes.Equal(head, v2Signature) {
		return readProxyV2(br)
	}
	if !bytes.HasPrefix(head, []byte("PROXY ")) {
		return nil, errors.New("PROXY header: the connection does not start with one (the port requires it)")
	}
	return readProxyV1(br)
}

func readProxyV1(br *bufio.Reader) (net.Addr, error) {
	// At most 107 bytes, CRLF included.
	var line []byte
	for len(line) < 107 {
		b, err := br.ReadByte()
		if err != nil {
			return nil, fmt.Errorf("PROXY v1 header: %w", err)
		}
		line = append(line, b)
		if b == '\n' {
			break
		}
	}
	s, ok := strings.CutSuffix(string(line), "\r\n")
	if !ok {
		return nil, errors.New("PROXY v1 header: no CRLF within 107 bytes")
	}
	f := strings.Split(s, " ")
	if len(f) >= 2 && f[1] == "UNKNOWN" {
		return nil, nil
	}
	if len(f) != 6 || (f[1] != "TCP4" && f[1] != "TCP6") {
		return nil, fmt.Errorf("PROXY v1 header %q: want PROXY TCP4|TCP6 SRC DST SPORT DPORT", s)
	}
	ip, err := netip.ParseAddr(f[2])
	if err != nil || ip.Is4() != (f[1] == "TCP4") {
		return nil, fmt.Errorf("PROXY v1 header %q: source %q is not an %s address", s, f[2], f[1])
	}
	port, err := strconv.ParseUint(f[4], 10, 16)
	if err != nil {
		return nil, fmt.Errorf("PROXY v1 header %q: source port %q", s, f[4])
	}
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(port))), nil
}

func readProxyV2(br *bufio.Reader) (net.Addr, error) {
	h, err := br.Peek(16)
	if err != nil {
		return nil, fmt.Errorf("PROXY v2 header: %w", err)
	}
	verCmd, fam, n := h[12], h[13], int(binary.BigEndian.Uint16(h[14:16]))
	if verCmd>>4 != 2 {
		return nil, fmt.Errorf("PROXY v2 header: version %d", verCmd>>4)
	}
	body := make([]byte, 16+n)
	if _, err := readFull(br, body); err != nil {
		return nil, fmt.Errorf("PROXY v2 header: %w", err)
	}
	body = body[16:]
	switch verCmd & 0xf {
	case 0: // LOCAL
		return nil, nil
	case 1: // PROXY
	default:
		return nil, fmt.Errorf("PROXY v2 header: command %d", verCmd&0xf)
	}
	switch fam {
	case 0x11: // TCP over IPv4
		if len(body) < 12 {
			return nil, errors.New("PROXY v2 header: short IPv4 addresses")
		}
		ip := netip.AddrFrom4([4]byte(body[0:4]))
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, binary.BigEndian.Uint16(body[8:10]))), nil
	case 0x21: // TCP over IPv6
		if len(body) < 36 {
			return nil, errors.New("PROXY v2 header: short IPv6 addresses")
		}
		ip := netip.AddrFrom16([16]byte(body[0:16]))
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, binary.BigEndian.Uint16(body[32:34]))), nil
	}
	return nil, nil // UNSPEC or a family the gateway does not serve: keep the peer
}

func readFull(br *bufio.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := br.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// clientConn is a connection whose client address came in a PROXY header.
type clientConn struct {
	replayConn
	client net.Addr
}

func (c *clientConn) RemoteAddr() net.Addr { return c.client }
