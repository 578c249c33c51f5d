package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// anonKiB is the process's anonymous memory (heap, stacks, runtime): its
// resident set less the binary's pages, which are shared page cache.
func anonKiB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "Anonymous:" {
			n, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatalf("smaps_rollup %q: %v", l, err)
			}
			return n
		}
	}
	t.Fatalf("no Anonymous line in /proc/%d/smaps_rollup", pid)
	return 0
}

// startBuiltProxy builds meridian-proxy and runs it with args and a static
// destination app.test to backend, until the test ends. It returns the
// process and its outbound address once it is ready.
func startBuiltProxy(t *testing.T, backend string, args ...string) (*os.Process, string) {
	t.Helper()
	bin := buildProxy(t)
	out, in, admin := freeAddr(t), freeAddr(t), freeAddr(t)
	var log bytes.Buffer
	cmd := exec.Command(bin, append([]string{"--outbound-addr", out, "--inbound-addr", in, "--admin-addr", admin,
		"--dst", "app.test:80=" + backend, "--drain-timeout", "1s", "--log-level", "debug"}, args...)...)
	cmd.Stderr = &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("proxy log:\n%s", log.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + admin + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return cmd.Process, out
			}
		}
		select {
		case <-exited:
			t.Fatalf("the proxy exited before it was ready:\n%s", log.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("the proxy was not ready within 30s")
		}
	}
}

// After a burst of load the proxy gives its heap back to the OS within
// seconds of going quiet (--release-memory-after), where Go by itself
// keeps it for minutes (its next collection is the forced one, every two
// minutes, and the scavenger returns pages slowly after it): a 5000 RPS
// run left 30-50 MB held per proxy.
func TestMemoryReturnedAfterLoad(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	if testing.Short() {
		t.Skip("builds and runs the proxy binary")
	}
	body := bytes.Repeat([]byte("x"), 64<<10)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write(body)
	})}
	go app.Serve(ln)
	defer app.Close()
	proc, out := startBuiltProxy(t, ln.Addr().String(), "--release-memory-after", "1s",
		"--detect-timeout", "10s") // a loaded machine may delay a first request that long
	idle := anonKiB(t, proc.Pid)

	// The burst: many requests in flight at once, each with a body both
	// ways, over one connection per client (a connection a shared
	// Transport dialled but left idle unused would be taken, after
	// --detect-timeout, for a server-speaks-first protocol). Bounded in
	// count and time.
	const clients, each = 256, 20
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed error
	trs := make([]*http.Transport, clients)
	for i := range trs {
		trs[i] = &http.Transport{MaxConnsPerHost: 1, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", out)
		}}
		wg.Add(1)
		go func(tr *http.Transport) {
			defer wg.Done()
			for range each {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://app.test/", bytes.NewReader(body))
				resp, err := tr.RoundTrip(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err != nil {
					mu.Lock()
					failed = err
					mu.Unlock()
					return
				}
			}
		}(trs[i])
	}
	wg.Wait()
	if failed != nil {
		t.Fatalf("the burst: %v", failed)
	}
	peak := anonKiB(t, proc.Pid)
	for _, tr := range trs {
		tr.CloseIdleConnections()
	}

	// The proxy's idle connections to the application (up to 256, for
	// 90s) stay, with their buffers (about 10 MB); the rest of the heap is
	// garbage. Bounded: half the way back to idle, polled for up to 20s.
	bound := idle + (peak-idle)/2
	deadline := time.Now().Add(20 * time.Second)
	for {
		now := anonKiB(t, proc.Pid)
		if now <= bound {
			t.Logf("anonymous memory: %d KiB idle, %d KiB after %d requests (%d at once), %d KiB now (bound %d KiB)",
				idle, peak, clients*each, clients, now, bound)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("anonymous memory still %d KiB 20s after the load (idle %d KiB, peak %d KiB): want at most %d KiB",
				now, idle, peak, bound)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
