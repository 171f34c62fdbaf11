//go:build darwin || freebsd || netbsd || openbsd || dragonfly

package netx

import "golang.org/x/sys/unix"

// peekSocket peeks without blocking.
func peekSocket(fd int, buf []byte) error {
	_, _, err := unix.Recvfrom(fd, buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
	return err
}
