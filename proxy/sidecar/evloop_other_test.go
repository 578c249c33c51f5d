//go:build !linux

package sidecar

// loopServed: no event loops here (evloop_other.go).
func (p *Proxy) loopServed() int64 { return 0 }
