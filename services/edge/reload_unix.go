//go:build unix

package edge

import (
	"os"
	"syscall"
)

// reloadSignal asks the edge to reload its configuration (reload.go).
var reloadSignal os.Signal = syscall.SIGHUP
