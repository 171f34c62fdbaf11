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
		_, _, err := unix.Recvfrom(int(fd), c.peekBuf[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		// EAGAIN: nothing to read and no end of stream, the healthy case.
		// n == 0 with no error: the peer closed. n > 0: unexpected bytes.
		c.peekLive = err == unix.EAGAIN || err == unix.EWOULDBLOCK
		return true // never wait for readiness
	}
}
