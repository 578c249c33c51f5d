//go:build !linux

package sidecar

type (
	loopGroup  = *struct{}
	loopServer = *struct{}
)

func (p *Proxy) startLoops() error { return nil }

func (p *Proxy) closeLoops() {}

func (p *Proxy) serveOnLoop(*side, *accepted) bool { return false }

func (s *side) loopDrain() {}

func (s *side) loopCut() {}
