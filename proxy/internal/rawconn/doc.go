// Package rawconn makes a TCP connection's reads and writes without the
// runtime's syscall bookkeeping, which wakes the runtime's monitor thread
// (sysmon) whenever it sleeps: see README.md.
package rawconn
