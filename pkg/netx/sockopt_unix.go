//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package netx

import (
	"fmt"

	"golang.org/x/sys/unix"
)

func setSockopts(fd uintptr, o SocketOptions, listening bool) error {
	s := int(fd)
	if o.ReadBuffer > 0 {
		if err := unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUF, o.ReadBuffer); err != nil {
			return fmt.Errorf("SO_RCVBUF=%d: %w", o.ReadBuffer, err)
		}
	}
	if o.WriteBuffer > 0 {
		if err := unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_SNDBUF, o.WriteBuffer); err != nil {
			return fmt.Errorf("SO_SNDBUF=%d: %w", o.WriteBuffer, err)
		}
	}
	if listening && o.ReusePort {
		if err := unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return fmt.Errorf("SO_REUSEPORT: %w", err)
		}
	}
	return nil
}
