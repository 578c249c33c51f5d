package sidecar

import (
	"io"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// Both listeners advertise HTTP/2's default frame size. Go's own default
// (1MB) makes a Go client, the next proxy's transport among them, keep up to
// 512KB of scratch per stream whose request body is open: bench/README.md
// measured 115–268MB in the outbound proxy with 256 gRPC calls in flight,
// and 34–42MB with 16KB frames.
func TestHTTP2MaxFrameSize(t *testing.T) {
	p := startProxy(t, Config{InboundForward: "127.0.0.1:1"})
	for _, addr := range []string{p.out, p.in} {
		c := dialTCP(t, addr)
		c.SetDeadline(time.Now().Add(testTimeout))
		if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
			t.Fatal(err)
		}
		fr := http2.NewFramer(c, c)
		if err := fr.WriteSettings(); err != nil {
			t.Fatal(err)
		}
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		sf, ok := f.(*http2.SettingsFrame)
		if !ok || sf.IsAck() {
			t.Fatalf("%s: first frame %v, want the server's SETTINGS", addr, f)
		}
		if v, ok := sf.Value(http2.SettingMaxFrameSize); !ok || v != 16<<10 {
			t.Fatalf("%s: SETTINGS_MAX_FRAME_SIZE %d (sent: %v), want 16384", addr, v, ok)
		}
		c.Close()
	}
}
