//go:build !unix

package edge

import "os"

// restartSignal is nil: restarts need Unix file descriptor passing.
var restartSignal os.Signal
