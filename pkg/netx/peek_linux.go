package netx

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// peekSocket peeks without blocking. It calls recvfrom directly, without a
// source-address buffer, so the check does not allocate.
func peekSocket(fd int, buf []byte) error {
	_, _, errno := unix.Syscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)),
		uintptr(unix.MSG_PEEK|unix.MSG_DONTWAIT), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}
