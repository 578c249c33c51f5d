package httpproxy

import (
	"testing"
	"unsafe"
)

// The Exchange is the one allocation the chain adds per request, and holds
// the Forwarder's own per-request state (flushGate, guardedBody, outcome,
// observedBody), which were five allocations of their own (about 200 bytes
// in their size classes) besides the 288 bytes of the rest, and the
// request's context (exchangeCtx, a WithValue context of 48 bytes):
// together they fit the 480-byte size class. A field that pushes it to the next class
// costs every request 32 bytes.
func TestExchangeSize(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("sizes are for 64-bit platforms")
	}
	if n := unsafe.Sizeof(Exchange{}); n > 480 {
		t.Errorf("Exchange is %d bytes, more than the 480-byte size class", n)
	}
}
