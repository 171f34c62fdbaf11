//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package netx

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// initPeek prepares the non-blocking MSG_PEEK read that alive uses.
func (c *PoolConn) initPeek() {
	sc, ok := Unwrap(c.Conn).(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	c.rc = rc
	c.peekFn = func(fd uintptr) bool {
		err := peekSocket(int(fd), c.peekBuf[:])
		// EAGAIN: nothing to read and no end of stream, the healthy case.
		// No error means the peek returned the peer's close (0 bytes) or
		// bytes nobody asked for; any other error is a broken connection.
		c.peekLive = err == unix.EAGAIN || err == unix.EWOULDBLOCK
		return true // never wait for readiness
	}
}
