//go:build !unix

package netx

import (
	"errors"
	"os"
	"syscall"
)

var errNoHandoff = errors.New("handing sockets to another process is supported on Unix only")

func dupSocket(syscall.Conn, string) (*os.File, error) { return nil, errNoHandoff }

func checkInherited(int, string) error { return errNoHandoff }
