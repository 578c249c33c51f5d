package main

import (
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestServicesTalk runs emoji, voting and web as the Deployments do, wired
// by address, and lists emojis through web.
func TestServicesTalk(t *testing.T) {
	emojiAddr, votingAddr, webAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	errs := make(chan error, 3)
	for _, args := range [][]string{
		{"emoji", "--addr=" + emojiAddr},
		{"voting", "--addr=" + votingAddr},
		{"web", "--addr=" + webAddr, "--emoji-addr=" + emojiAddr, "--voting-addr=" + votingAddr},
	} {
		go func() { errs <- run(args) }()
	}
	t.Cleanup(func() {
		// run stops on SIGTERM, as in a pod.
		syscall.Kill(syscall.Getpid(), syscall.SIGTERM)
		for range 3 {
			select {
			case err := <-errs:
				if err != nil {
					t.Errorf("service: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("a service did not stop on SIGTERM")
			}
		}
	})
	var list []map[string]any
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + webAddr + "/api/list")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&list)
			resp.Body.Close()
			if err == nil && resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("web never listed emojis: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(list) < 10 {
		t.Fatalf("web listed %d emojis, want the catalogue", len(list))
	}
}

func TestUnknownService(t *testing.T) {
	for _, args := range [][]string{nil, {"nope"}} {
		if err := run(args); err == nil || !strings.Contains(err.Error(), "usage") {
			t.Errorf("run(%q) = %v, want a usage error", args, err)
		}
	}
}
