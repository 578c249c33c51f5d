//go:build !linux

package gateway

import "crypto/tls"

type loopState struct{}

type loopListener = any

func (g *Gateway) startLoop() error { return nil }

func (g *Gateway) closeLoop() {}

func (ps *portServer) loopListen() bool { return false }

func (ps *portServer) loopDrain() {}

func (ps *portServer) loopCut() {}

type loopClient struct{}

func (ps *portServer) loopTLS(*tls.Conn, tls.ConnectionState) bool { return false }
