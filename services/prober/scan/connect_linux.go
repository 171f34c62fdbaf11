package scan

import (
	"net/netip"

	"golang.org/x/sys/unix"
)

// connectNow connects to a loopback address without the network poller.
// On loopback the kernel runs the whole handshake (or the RST) inside
// connect(2), so the outcome is known as soon as it returns: a zero-timeout
// poll and SO_ERROR read it. done is false when the outcome is still
// pending (a full backlog, say); the caller then dials normally.
func connectNow(ap netip.AddrPort) (st State, done bool) {
	family, sa := unix.AF_INET, unix.Sockaddr(nil)
	if a := ap.Addr(); a.Is4() {
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}
	} else {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: a.As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return Unknown, false
	}
	defer unix.Close(fd)
	// Close with RST, leaving no TIME-WAIT behind per open port.
	_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	err = unix.Connect(fd, sa)
	if err == unix.EINPROGRESS {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		if n, perr := unix.Poll(pfd, 0); perr != nil || n == 0 {
			return Unknown, false
		}
		e, gerr := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if gerr != nil {
			return Unknown, false
		}
		err = nil
		if e != 0 {
			err = unix.Errno(e)
		}
	}
	switch err {
	case nil:
		if selfConnected(fd) {
			// The kernel picked the target port as our source port and
			// the SYN met itself: nobody listens there.
			return Closed, true
		}
		return Open, true
	case unix.ECONNREFUSED:
		return Closed, true
	}
	return Unknown, false
}

// selfConnected reports a TCP simultaneous open with itself (local and
// remote address equal), which a scan of the ephemeral range on loopback
// can produce.
func selfConnected(fd int) bool {
	la, err1 := unix.Getsockname(fd)
	ra, err2 := unix.Getpeername(fd)
	if err1 != nil || err2 != nil {
		return false
	}
	switch l := la.(type) {
	case *unix.SockaddrInet4:
		r, ok := ra.(*unix.SockaddrInet4)
		return ok && l.Port == r.Port && l.Addr == r.Addr
	case *unix.SockaddrInet6:
		r, ok := ra.(*unix.SockaddrInet6)
		return ok && l.Port == r.Port && l.Addr == r.Addr
	}
	return false
}
