//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package netx

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// Init sets the probe up for c.
func (p *IdleProbe) Init(c net.Conn) {
	p.rc, p.fn = nil, nil
	rc, ok := probeTarget(c)
	if !ok {
		return
	}
	p.rc = rc
	p.fn = func(fd uintptr) bool {
		err := peekSocket(int(fd), p.buf[:])
		// EAGAIN: nothing to read and no end of stream, the healthy case.
		// No error means the peek returned the peer's close (0 bytes) or
		// bytes nobody asked for; any other error is a broken connection.
		p.live = err == unix.EAGAIN || err == unix.EWOULDBLOCK
		return true // never wait for readiness
	}
}

// probeTarget returns the socket beneath this package's wrappers.
func probeTarget(c net.Conn) (syscall.RawConn, bool) {
	sc, ok := Unwrap(c).(syscall.Conn)
	if !ok {
		return nil, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, false
	}
	return rc, true
}
