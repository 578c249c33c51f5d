package httpproxy

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

func TestReplayBodyReplaysSmallBodies(t *testing.T) {
	b := newReplayBody(strings.NewReader("hello world"))
	first, ok := b.attempt()
	if !ok {
		t.Fatal("no first attempt")
	}
	// The first attempt fails half-way.
	buf := make([]byte, 5)
	if _, err := io.ReadFull(first, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("first read %q %v", buf, err)
	}
	second, ok := b.attempt()
	if !ok {
		t.Fatal("small body not replayable")
	}
	all, err := io.ReadAll(second)
	if err != nil || string(all) != "hello world" {
		t.Fatalf("second attempt read %q %v", all, err)
	}
	third, _ := b.attempt()
	if all, _ := io.ReadAll(third); string(all) != "hello world" {
		t.Fatalf("third attempt read %q", all)
	}
}

func TestReplayBodyGivesUpPastTheBuffer(t *testing.T) {
	big := bytes.Repeat([]byte("x"), RetryBufferSize+10)
	b := newReplayBody(bytes.NewReader(big))
	first, _ := b.attempt()
	all, err := io.ReadAll(first)
	if err != nil || len(all) != len(big) {
		t.Fatalf("the attempt that overflowed must still stream the whole body: %d bytes, %v", len(all), err)
	}
	if _, ok := b.attempt(); ok {
		t.Fatal("a body larger than the retry buffer was offered for replay")
	}
}
