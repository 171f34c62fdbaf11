//go:build unix

package edge

import (
	"os"
	"syscall"
)

// restartSignal asks the edge to restart itself (restart.go).
var restartSignal os.Signal = syscall.SIGUSR2
