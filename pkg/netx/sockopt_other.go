//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package netx

import "errors"

func setSockopts(fd uintptr, o SocketOptions, listening bool) error {
	return errors.New("socket buffer sizes and SO_REUSEPORT are not supported on this platform")
}
