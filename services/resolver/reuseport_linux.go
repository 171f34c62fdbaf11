package resolver

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// reusePortSupported: on Linux several UDP sockets share the DNS port
// (SO_REUSEPORT), and the kernel spreads queries over them, one reader
// goroutine each.
const reusePortSupported = true

func reusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("SO_REUSEPORT: %w", serr)
	}
	return nil
}
