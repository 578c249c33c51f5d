package loadgen

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// pacer ticks every interval. On Linux it is a periodic timerfd read through
// the Go netpoller. time.Sleep cannot be used: when the runtime is idle it
// waits in epoll with millisecond granularity (a 200 µs sleep at 5000 RPS
// becomes 1 ms), which would add up to a millisecond of generator-made latency
// to every request. The kernel fires a timerfd from a high-resolution timer
// and its readiness wakes epoll at once.
type pacer struct {
	f   *os.File
	buf [8]byte
}

func newPacer(interval time.Duration) (*pacer, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("loadgen: timerfd_create: %w", err)
	}
	ts := unix.NsecToTimespec(int64(interval))
	spec := unix.ItimerSpec{Interval: ts, Value: ts}
	if err := unix.TimerfdSettime(fd, 0, &spec, nil); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("loadgen: timerfd_settime: %w", err)
	}
	// A non-blocking fd given to os.NewFile is registered with the netpoller,
	// so Read parks the goroutine instead of blocking a thread.
	return &pacer{f: os.NewFile(uintptr(fd), "loadgen-timerfd")}, nil
}

// wait blocks until at least one tick and returns how many ticks passed.
func (p *pacer) wait(ctx context.Context) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	// Bound each read so a cancelled ctx is noticed within a tick or 100 ms.
	_ = p.f.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	n, err := p.f.Read(p.buf[:])
	if err != nil {
		if os.IsTimeout(err) {
			return 0, nil
		}
		return 0, err
	}
	if n != 8 {
		return 0, fmt.Errorf("loadgen: short timerfd read (%d bytes)", n)
	}
	return int64(binary.NativeEndian.Uint64(p.buf[:])), nil
}

func (p *pacer) stop() { p.f.Close() }
