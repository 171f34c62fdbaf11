//go:build !unix

package edge

import "os"

// reloadSignal is nil: without SIGHUP, reloads come from the runtime API
// and the file watcher.
var reloadSignal os.Signal
