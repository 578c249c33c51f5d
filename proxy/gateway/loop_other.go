//go:build !linux

package gateway

import "crypto/tls"

type (
	loopGroup  = *struct{}
	loopServer = *struct{}
)

func (g *Gateway) startLoop() error { return nil }

func (g *Gateway) closeLoop() {}

func (g *Gateway) loopServed() int64 { return 0 }

func (ps *portServer) loopListen() bool { return false }

func (ps *portServer) loopDrain() {}

func (ps *portServer) loopCut() {}

func (ps *portServer) loopStopWorkers() {}

func (ps *portServer) loopTLS(*tls.Conn, tls.ConnectionState) bool { return false }
