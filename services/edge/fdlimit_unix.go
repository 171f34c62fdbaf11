//go:build unix

package edge

import "syscall"

// fileLimit is the process's limit on open file descriptors (the soft
// limit, which the Go runtime raises to the hard one at start), or 0 when
// unknown.
func fileLimit() uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0
	}
	return l.Cur
}
