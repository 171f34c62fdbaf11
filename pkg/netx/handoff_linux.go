package netx

import "golang.org/x/sys/unix"

// acceptsConn reports whether fd is a listening socket (SO_ACCEPTCONN).
func acceptsConn(fd int) (bool, error) {
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	return v != 0, err
}
