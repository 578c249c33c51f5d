package evloop

import (
	"context"
	"errors"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Events are the readiness a file descriptor is watched for.
type Events uint32

const (
	// In: readable, or the peer closed or half-closed (a read returns 0).
	In Events = unix.EPOLLIN | unix.EPOLLRDHUP
	// Out: writable.
	Out Events = unix.EPOLLOUT
	// Hangup: an error or a hang-up, reported with In and Out, watched for
	// or not.
	Hangup Events = unix.EPOLLHUP | unix.EPOLLERR
)

// A Handler is told on the loop of the readiness of the descriptor it
// watches. An error or hang-up on the descriptor is reported as In and Out
// (whichever it watches): the next read or write returns the error.
type Handler interface {
	Ready(ev Events)
}

// HandlerFunc is a function as a Handler.
type HandlerFunc func(ev Events)

// Ready calls f.
func (f HandlerFunc) Ready(ev Events) { f(ev) }

// ErrClosed is returned by the methods of a closed Loop.
var ErrClosed = errors.New("evloop: loop closed")

// Loop is one goroutine serving non-blocking descriptors by callbacks: see
// the package documentation. The zero value is not usable: New makes one.
// Post and Close may be called from any goroutine; every other method, and
// every Conn and Timer method, only from the loop (a callback, or a
// function given to Post).
type Loop struct {
	ep     int
	wakeFd int // eventfd: Post's wake-up
	file   *os.File
	rc     syscall.RawConn
	pollF  func(uintptr) bool // pollFn as a value, made once: one allocation per park otherwise

	watched []watch // by descriptor
	events  []unix.EpollEvent
	n       int // events of the last poll
	timers  timerHeap
	now     time.Time // the current iteration's clock (Now)

	deadline time.Time     // the read deadline set on file, zero: none
	hold     time.Duration // Hold's
	holdRate int           // Hold's: wake-ups a second to take a processor
	holding  bool          // on a processor of its own (Hold)
	lastBusy time.Time     // when the last events came
	winStart time.Time     // the start of the window wake-ups are counted in (Hold)
	wakes    int           // wake-ups with events since winStart
	bufs     [][]byte      // spare read buffers (Conn)

	mu     sync.Mutex
	posted []func()
	spare  []func()
	closed bool        // released: Post drops what it is given (mu)
	woken  atomic.Bool // the eventfd was written and not read yet

	// wakeMu orders the eventfd's writes before its close: a write after
	// it would go to whatever the descriptor's number was reused for (a
	// Post from a goroutine that outlived the loop wrote 8 bytes into an
	// unrelated socket).
	wakeMu     sync.RWMutex
	wakeClosed bool

	closing     atomic.Bool
	running     atomic.Bool
	done        chan struct{}
	releaseOnce sync.Once
}

type watch struct {
	h   Handler
	gen uint32 // the registration's, in its events: a descriptor closed and reused within a batch is not told the old one's events
}

// New makes a loop; Run serves it.
func New() (*Loop, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	// The epoll descriptor is itself readable while any of its
	// descriptors is ready: the runtime's poller waits on it for the loop
	// when there is nothing to do (the goroutine parks, its thread runs
	// other goroutines).
	if err := unix.SetNonblock(ep, true); err != nil {
		unix.Close(ep)
		return nil, os.NewSyscallError("fcntl", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(ep)
		return nil, os.NewSyscallError("eventfd", err)
	}
	l := &Loop{ep: ep, wakeFd: wake, events: make([]unix.EpollEvent, 128), done: make(chan struct{}), now: time.Now()}
	l.pollF = l.pollFn
	if err := l.Watch(wake, In, HandlerFunc(l.woke)); err != nil {
		unix.Close(ep)
		unix.Close(wake)
		return nil, err
	}
	if err := l.register(); err != nil {
		unix.Close(ep)
		unix.Close(wake)
		return nil, err
	}
	return l, nil
}

// Hold gives the loop, while it is busy, a processor of its own: once it
// wakes for events at least rate times a second (counted over windows of
// HoldWindow; rate 0: from its first event), it waits in its own
// epoll_pwait, one system call per wake-up where the runtime's poller
// makes four (bench/README.md, "Equal CPU shares"), holding a processor
// that it adds to the process (GOMAXPROCS one higher), so that the other
// goroutines keep as many as they had. Idle for d, or waking less than
// half as often as rate over a window, it gives the processor back
// (GOMAXPROCS one lower) and parks through the runtime's poller. Holding
// has a cost of its own, the runtime's monitor thread awake and
// preempting the loop's goroutine every 10 ms, which the wake-ups saved
// pay for only above a few hundred a second: hence rate. Each change of
// GOMAXPROCS stops the world for a moment, and the runtime's updates of
// it from the CPU limit pause until the last processor is given back: d
// is best long beside the gaps between events (a second), and the rate's
// two thresholds apart. d 0, the default, never holds. Call it before Run.
func (l *Loop) Hold(d time.Duration, rate int) { l.hold, l.holdRate = max(d, 0), max(rate, 0) }

// HoldWindow is the span over which Hold counts a loop's wake-ups: long
// enough that a steady rate's count varies little from one to the next,
// short enough that a loop takes a processor soon after load begins.
const HoldWindow = 100 * time.Millisecond

// hot reports whether the loop wakes often enough to hold a processor
// (Hold's rate): to take one, as often as the rate within the current
// window; to keep it, half as often over the window that just ended.
func (l *Loop) hot() bool {
	if l.holdRate == 0 {
		return true
	}
	span := l.now.Sub(l.winStart)
	if span < HoldWindow {
		return l.holding || l.wakes*int(time.Second/HoldWindow) >= l.holdRate
	}
	// The window has ended (the next one starts now): its rate, over
	// its whole span, which a long wait stretches.
	need := float64(l.holdRate) * span.Seconds()
	if l.holding {
		need /= 2
	}
	hot := float64(l.wakes) >= need
	l.winStart, l.wakes = l.now, 0
	return hot
}

// register puts a duplicate of the epoll descriptor in the runtime's
// poller, for park to wait on.
func (l *Loop) register() error {
	fd, err := unix.FcntlInt(uintptr(l.ep), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("fcntl", err)
	}
	f := os.NewFile(uintptr(fd), "epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return err
	}
	l.file, l.rc, l.deadline = f, rc, time.Time{}
	return nil
}

// unregister takes the epoll descriptor out of the runtime's poller while
// the loop waits on its own: registered, every event on it would wake
// the runtime's poller too.
func (l *Loop) unregister() {
	if l.file != nil {
		l.file.Close()
		l.file, l.rc = nil, nil
	}
}

// Run serves the loop on the calling goroutine until ctx ends or Close is
// called, then closes it: its descriptors (Conns and listeners) are closed
// and its timers dropped. It returns ctx's error, or nil after Close.
func (l *Loop) Run(ctx context.Context) error {
	if !l.running.CompareAndSwap(false, true) {
		<-l.done
		return errors.New("evloop: Run of a loop already run or closed")
	}
	defer close(l.done)
	stop := context.AfterFunc(ctx, func() { l.shutdown() })
	defer stop()
	for !l.closing.Load() {
		// park polls first, and waits only when nothing is ready.
		l.park()
		// One clock read per iteration (after a wait, which may be long):
		// the callbacks' and the timers' time.
		l.now = time.Now()
		if l.n > 0 {
			l.lastBusy = l.now
			l.wakes++
		}
		l.dispatch()
		l.runTimers()
	}
	l.release()
	return ctx.Err()
}

// Close stops the loop from any goroutine: Run closes its descriptors and
// returns. A loop that was never run is closed at once, and a later Run
// returns at once.
func (l *Loop) Close() error {
	l.shutdown()
	if l.running.CompareAndSwap(false, true) {
		l.release()
		close(l.done)
	}
	return nil
}

// Done is closed once the loop has ended and closed what it owned.
func (l *Loop) Done() <-chan struct{} { return l.done }

func (l *Loop) shutdown() {
	if l.closing.CompareAndSwap(false, true) {
		l.wake()
	}
}

// poll takes the ready descriptors without waiting: a raw system call,
// which never enters the scheduler.
func (l *Loop) poll() int {
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(l.ep), uintptr(unsafe.Pointer(&l.events[0])), uintptr(len(l.events)), 0, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			l.n = 0
			return 0
		}
		l.n = int(n)
		return l.n
	}
}

// park waits until a descriptor is ready or the first timer is due,
// through the runtime's poller or, while the loop holds (Hold), in its
// own epoll_pwait, and leaves what is ready in l.events.
func (l *Loop) park() {
	// Busy (an event within the hold, at the hold's rate): wait here, on
	// a processor of the loop's own, out of the runtime's poller
	// (registered, every event would wake that too). Idle or slow: the
	// processor back, and wait there; if the descriptor cannot be
	// registered (out of descriptors), go on waiting here.
	if l.hold > 0 {
		if idle := l.now.Sub(l.lastBusy); idle < l.hold && l.hot() {
			if !l.holding {
				l.unregister()
				l.holdProc(true)
			}
			l.waitHere(l.hold - idle)
			return
		}
		if l.file == nil && l.register() != nil {
			l.waitHere(l.hold)
			return
		}
		l.holdProc(false)
	}
	// The wait's deadline is the first timer's, or earlier: a deadline is
	// moved only forward in time when it has passed, as timers reset
	// later and later (a connection's idle timeout, per request) would
	// otherwise cost a change of the runtime's timer per wait. A wait
	// that ends early for nothing costs one more iteration.
	// A deadline that has passed makes the wait return at once without
	// polling: it is always replaced (by none, without timers).
	passed := !l.deadline.IsZero() && !l.deadline.After(l.now)
	switch {
	case len(l.timers) > 0:
		if when := l.timers[0].when; l.deadline.IsZero() || when.Before(l.deadline) || passed {
			l.file.SetReadDeadline(when)
			l.deadline = when
		}
	case passed:
		l.file.SetReadDeadline(time.Time{})
		l.deadline = time.Time{}
	}
	// The poll before the wait (pollFn's first call) finds nothing on
	// most wake-ups and costs a system call, but cannot be skipped:
	// RawRead clears the readiness the runtime's poller has recorded
	// for the epoll descriptor before it calls pollFn, so what became
	// ready since the last poll is seen only by polling
	// (TestLeftoversServedWithoutNewArrivals stalls without it).
	l.rc.Read(l.pollF)
}

// procs makes the loops' changes to GOMAXPROCS one at a time, and counts
// the processors they hold.
var procs struct {
	sync.Mutex
	held int
}

// addProcs changes GOMAXPROCS by n (a loop's processor, taken or given
// back). The last one given back, the runtime's own setting returns,
// and with it its updates from the CPU limit (an in-place resize), unless
// the environment set GOMAXPROCS.
func addProcs(n int) {
	procs.Lock()
	defer procs.Unlock()
	procs.held += n
	if procs.held == 0 && os.Getenv("GOMAXPROCS") == "" {
		runtime.SetDefaultGOMAXPROCS()
		return
	}
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + n)
}

// holdProc takes a processor for the loop (Hold), or gives it back.
func (l *Loop) holdProc(on bool) {
	if l.holding == on {
		return
	}
	if on {
		addProcs(1)
	} else {
		addProcs(-1)
	}
	l.holding = on
}

// waitHere waits in the loop's own epoll_pwait, holding its processor, for
// up to d or the first timer. A signal (the runtime's preemption) ends it
// early, so that the goroutine can be preempted.
func (l *Loop) waitHere(d time.Duration) {
	if len(l.timers) > 0 {
		d = min(d, l.timers[0].when.Sub(l.now))
	}
	ms := 0
	if d > 0 {
		ms = int((d + time.Millisecond - 1) / time.Millisecond)
	}
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(l.ep), uintptr(unsafe.Pointer(&l.events[0])), uintptr(len(l.events)), uintptr(ms), 0, 0)
	if e != 0 {
		n = 0
	}
	l.n = int(n)
}

// pollFn is park's callback (pollF): false (nothing ready) makes the
// poller wait.
func (l *Loop) pollFn(uintptr) bool { return l.poll() > 0 || l.closing.Load() }

func (l *Loop) dispatch() {
	n := l.n
	l.n = 0
	for i := 0; i < n; i++ {
		e := &l.events[i]
		fd, gen := int(e.Fd), uint32(e.Pad)
		if fd >= len(l.watched) || l.watched[fd].h == nil || l.watched[fd].gen != gen {
			continue // forgotten (and perhaps reused) since the poll
		}
		var ev Events
		if e.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			ev |= In
		}
		if e.Events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			ev |= Out
		}
		ev |= Events(e.Events) & Hangup
		l.watched[fd].h.Ready(ev)
	}
	if n == len(l.events) && n < 4096 {
		l.events = make([]unix.EpollEvent, 2*n)
	}
}

var gens atomic.Uint32

// Watch tells h of fd's readiness for ev (level-triggered: as long as it
// lasts), until Forget. fd must be non-blocking.
func (l *Loop) Watch(fd int, ev Events, h Handler) error {
	for fd >= len(l.watched) {
		l.watched = append(l.watched, watch{})
	}
	gen := gens.Add(1)
	if err := unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: uint32(ev), Fd: int32(fd), Pad: int32(gen)}); err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	l.watched[fd] = watch{h: h, gen: gen}
	return nil
}

// Modify changes what a watched fd is watched for (0: nothing for now).
func (l *Loop) Modify(fd int, ev Events) error {
	if fd >= len(l.watched) || l.watched[fd].h == nil {
		return errors.New("evloop: Modify of a descriptor not watched")
	}
	err := unix.EpollCtl(l.ep, unix.EPOLL_CTL_MOD, fd, &unix.EpollEvent{Events: uint32(ev), Fd: int32(fd), Pad: int32(l.watched[fd].gen)})
	return os.NewSyscallError("epoll_ctl", err)
}

// Forget stops watching fd (before it is closed, or handed to another
// owner). Events of this poll not yet dispatched are dropped.
func (l *Loop) Forget(fd int) error {
	if fd >= len(l.watched) || l.watched[fd].h == nil {
		return nil
	}
	l.watched[fd] = watch{}
	return os.NewSyscallError("epoll_ctl", unix.EpollCtl(l.ep, unix.EPOLL_CTL_DEL, fd, nil))
}

// Post runs f on the loop, soon, after the functions posted before it.
// It may be called from any goroutine; on a closed loop f never runs.
func (l *Loop) Post(f func()) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.posted = append(l.posted, f)
	l.mu.Unlock()
	if l.woken.CompareAndSwap(false, true) {
		l.wake()
	}
}

func (l *Loop) wake() {
	l.wakeMu.RLock()
	if !l.wakeClosed {
		one := uint64(1)
		unix.RawSyscall(unix.SYS_WRITE, uintptr(l.wakeFd), uintptr(unsafe.Pointer(&one)), 8)
	}
	l.wakeMu.RUnlock()
}

// woke runs what was posted: the flag is cleared before the queue is
// taken, so that a Post after the take wakes the loop again.
func (l *Loop) woke(Events) {
	var buf [8]byte
	unix.RawSyscall(unix.SYS_READ, uintptr(l.wakeFd), uintptr(unsafe.Pointer(&buf[0])), 8)
	l.woken.Store(false)
	l.mu.Lock()
	fs := l.posted
	l.posted = l.spare[:0]
	l.mu.Unlock()
	for i, f := range fs {
		f()
		fs[i] = nil
	}
	l.spare = fs[:0]
}

// Now is the time the loop's current iteration started: what its timers
// are measured from, and a clock read callbacks can share.
func (l *Loop) Now() time.Time { return l.now }

// release closes what the loop owns, once.
func (l *Loop) release() {
	l.releaseOnce.Do(func() {
		for fd, w := range l.watched {
			if w.h == nil || fd == l.wakeFd {
				continue
			}
			if c, ok := w.h.(closer); ok {
				c.closeByLoop()
			}
		}
		l.watched = nil
		l.timers = nil
		l.unregister()
		l.holdProc(false)
		unix.Close(l.ep)
		l.wakeMu.Lock()
		l.wakeClosed = true
		unix.Close(l.wakeFd)
		l.wakeMu.Unlock()
		l.mu.Lock()
		l.closed = true
		l.posted = nil
		l.mu.Unlock()
	})
}

// closer is what a loop closes when it ends: its Conns and listeners.
type closer interface{ closeByLoop() }
