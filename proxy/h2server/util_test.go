package h2server

import (
	"bytes"
	"os"
	"runtime"

	"golang.org/x/net/http2/hpack"
)

func newDecoder() *hpack.Decoder                { return hpack.NewDecoder(4096, nil) }
func newEncoder(b *bytes.Buffer) *hpack.Encoder { return hpack.NewEncoder(b) }
func runtimeGoexit()                            { runtime.Goexit() }
func errDeadlineExceeded() error                { return os.ErrDeadlineExceeded }
