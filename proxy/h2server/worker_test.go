package h2server

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// goid is the calling goroutine's ID, from its stack's first line.
func goid() string {
	var b [64]byte
	s := string(b[:runtime.Stack(b[:], false)])
	s = s[len("goroutine "):]
	for i := 0; i < len(s); i++ {
		if s[i] == ' ' {
			return s[:i]
		}
	}
	return s
}

// waitGoroutines waits until at most n goroutines run.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for runtime.NumGoroutine() > n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := runtime.NumGoroutine(); got > n {
		t.Fatalf("%d goroutines, want at most %d", got, n)
	}
}

// A function run after another has finished runs on the same goroutine;
// idle workers end after their idle time, and all at once on stopIdle.
func TestWorkersReuse(t *testing.T) {
	before := runtime.NumGoroutine()
	p := &workers{idleFor: time.Hour}
	var seen sync.Map
	for range 5 {
		done := make(chan struct{})
		p.run(func() { seen.Store(goid(), true); close(done) })
		<-done
		waitIdle(t, p, 1)
	}
	n := 0
	seen.Range(func(any, any) bool { n++; return true })
	if n != 1 {
		t.Errorf("5 functions in turn ran on %d goroutines, want 1", n)
	}
	p.stopIdle()
	waitGoroutines(t, before)

	// Idle for idleFor: ended.
	p = &workers{idleFor: 20 * time.Millisecond}
	done := make(chan struct{})
	p.run(func() { close(done) })
	<-done
	waitIdle(t, p, 0) // ended on its own: nothing else stops it
	waitGoroutines(t, before)
}

// waitIdle waits until n workers are idle.
func waitIdle(t *testing.T, p *workers, n int) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		p.mu.Lock()
		got := len(p.idle)
		p.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d workers idle, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// Many functions at once, from many goroutines, with workers ending on
// their idle time meanwhile and a function that ends its goroutine: each
// runs exactly once, and the workers all end.
func TestWorkersConcurrent(t *testing.T) {
	before := runtime.NumGoroutine()
	p := &workers{idleFor: time.Millisecond}
	const n = 2000
	var ran [n]atomic.Int32
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			if i%100 == 0 {
				time.Sleep(2 * time.Millisecond) // let some workers time out
			}
			p.run(func() {
				defer wg.Done()
				ran[i].Add(1)
				if i == n/2 {
					runtime.Goexit() // the worker goes with it
				}
			})
		}()
	}
	wg.Wait()
	for i := range n {
		if got := ran[i].Load(); got != 1 {
			t.Fatalf("function %d ran %d times", i, got)
		}
	}
	p.stopIdle()
	waitGoroutines(t, before)
}

// Stop ends the idle workers and, when its function returns, the one
// still running then, with no idle time to wait (an hour here); a
// function run after Stop runs, on a goroutine that ends with it.
func TestWorkersStop(t *testing.T) {
	before := runtime.NumGoroutine()
	w := &Workers{p: workers{idleFor: time.Hour}}
	done := make(chan struct{})
	w.Run(func() { close(done) })
	<-done
	waitIdle(t, &w.p, 1)
	release, running := make(chan struct{}), make(chan struct{})
	w.Run(func() { close(running); <-release }) // takes the idle worker
	<-running
	w.Run(func() {}) // a second worker, idle by the time of Stop
	waitIdle(t, &w.p, 1)
	w.Stop()
	waitIdle(t, &w.p, 0)
	close(release)
	waitGoroutines(t, before)

	ran := make(chan struct{})
	w.Run(func() { close(ran) })
	<-ran
	waitGoroutines(t, before)
	waitIdle(t, &w.p, 0)
}
