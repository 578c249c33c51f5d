// Package evloop serves non-blocking sockets by callbacks from one
// goroutine, the way nginx serves them from one thread: an epoll set,
// level-triggered, raw system calls that never enter the scheduler, no
// goroutine per connection. See README.md.
package evloop
