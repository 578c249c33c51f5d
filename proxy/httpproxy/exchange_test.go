package httpproxy

import (
	"testing"
	"unsafe"
)

// The Exchange is the one allocation the chain adds per request, in place
// of the single handler's state (272 bytes, the 288-byte size class): a
// field that pushes it to the next class costs every request 32 bytes.
func TestExchangeSize(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("sizes are for 64-bit platforms")
	}
	if n := unsafe.Sizeof(Exchange{}); n > 288 {
		t.Errorf("Exchange is %d bytes, more than the 288-byte size class", n)
	}
}
