package sidecar

import (
	"bytes"
	"fmt"
	"net/http"
	"testing"

	"github.com/coder/websocket"
)

// A WebSocket upgrade goes through both proxies; messages flow both ways
// on the upgraded connection.
func TestWebSocket(t *testing.T) {
	ctx := testContext(t)
	app := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		// Speak first, then echo every message back with a prefix.
		if err := c.Write(r.Context(), websocket.MessageText, []byte("hello from "+r.Host)); err != nil {
			return
		}
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, append([]byte("echo:"), msg...)); err != nil {
				return
			}
		}
	}))
	a := clientProxy(t, dst("ws.test:80", serverSidecars(t, app.addr)...))
	d := &countingDialer{addr: a.out}
	tr := &http.Transport{DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)

	c, resp, err := websocket.Dial(ctx, "ws://ws.test/chat", &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatalf("dial through the proxies: %v", err)
	}
	defer c.CloseNow()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake answered %s", resp.Status)
	}
	typ, msg, err := c.Read(ctx)
	if err != nil || typ != websocket.MessageText || string(msg) != "hello from ws.test" {
		t.Fatalf("server's first message: %v %q %v", typ, msg, err)
	}
	for i := range 20 {
		typ := websocket.MessageText
		out := []byte(fmt.Sprintf("message %d", i))
		if i%2 == 1 {
			typ = websocket.MessageBinary
			out = bytes.Repeat([]byte{byte(i), 0, 0xff}, 500*i) // under the default 32 KiB read limit
		}
		if err := c.Write(ctx, typ, out); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		gotTyp, got, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if gotTyp != typ || !bytes.Equal(got, append([]byte("echo:"), out...)) {
			t.Fatalf("message %d came back as %v of %d bytes", i, gotTyp, len(got))
		}
	}
	if err := c.Close(websocket.StatusNormalClosure, "done"); err != nil {
		t.Errorf("close handshake through the proxies: %v", err)
	}
}
