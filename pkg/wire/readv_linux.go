package wire

import (
	"io"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// rawConn returns the socket under conn when the session may read it with
// readv: plain TCP and Unix connections.
func rawConn(conn net.Conn) syscall.RawConn {
	var sc syscall.Conn
	switch c := conn.(type) {
	case *net.TCPConn:
		sc = c
	case *net.UnixConn:
		sc = c
	default:
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// readvOp is one readv(2) on a RawConn, kept in the frameReader so that
// its callback does not allocate per call.
type readvOp struct {
	iov         [][]byte
	nonBlocking bool
	n           int
	err         error
	fn          func(fd uintptr) bool
}

func (op *readvOp) do(fd uintptr) bool {
	for {
		op.n, op.err = unix.Readv(int(fd), op.iov)
		if op.err != unix.EINTR {
			break
		}
	}
	if op.err == unix.EAGAIN {
		if op.nonBlocking {
			op.n, op.err = 0, errWouldBlock
			return true
		}
		return false
	}
	return true
}

// readvRaw is one readv(2) on rc. Blocking, it waits for the socket to
// become readable through the runtime's poller (so Close interrupts it);
// nonBlocking returns errWouldBlock when nothing is there.
func readvRaw(rc syscall.RawConn, op *readvOp, iov [][]byte, nonBlocking bool) (int, error) {
	if op.fn == nil {
		op.fn = op.do
	}
	op.iov, op.nonBlocking = iov, nonBlocking
	cerr := rc.Read(op.fn)
	n, err := op.n, op.err
	op.iov, op.n, op.err = nil, 0, nil
	if cerr != nil {
		return 0, cerr
	}
	if n == 0 && err == nil {
		return 0, io.EOF
	}
	if n < 0 {
		n = 0
	}
	return n, err
}
