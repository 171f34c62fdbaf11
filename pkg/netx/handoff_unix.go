//go:build unix

package netx

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// dupSocket duplicates c's descriptor (close-on-exec) into a file that
// keeps it non-blocking: os.NewFile of a non-blocking descriptor does not
// switch it to blocking mode when os/exec asks for its Fd.
func dupSocket(c syscall.Conn, name string) (*os.File, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("dup: %w", derr)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// checkInherited checks that fd is open and, when network is set, is a
// socket of that kind (listening, for a stream), and marks it
// close-on-exec so that it does not leak into this process's own children.
func checkInherited(fd int, network string) error {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		return fmt.Errorf("not open: %w", err)
	}
	syscall.CloseOnExec(fd)
	if network == "" {
		return nil
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return fmt.Errorf("not a socket: %w", err)
	}
	want := unix.SOCK_STREAM
	if network == "udp" || network == "udp4" || network == "udp6" {
		want = unix.SOCK_DGRAM
	}
	if typ != want {
		return errors.New("not a socket of that type")
	}
	if want == unix.SOCK_STREAM {
		if ok, err := acceptsConn(fd); err == nil && !ok {
			return errors.New("not a listening socket")
		}
	}
	return nil
}
