//go:build !linux

package wire

import (
	"errors"
	"net"
	"syscall"
)

// rawConn returns nil: outside Linux the session reads through net.Conn.
func rawConn(net.Conn) syscall.RawConn { return nil }

// readvOp is unused outside Linux.
type readvOp struct{}

func readvRaw(syscall.RawConn, *readvOp, [][]byte, bool) (int, error) {
	return 0, errors.New("wire: readv not available")
}
