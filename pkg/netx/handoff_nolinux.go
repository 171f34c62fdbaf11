//go:build unix && !linux

package netx

import "errors"

// acceptsConn is not checked beyond Linux.
func acceptsConn(int) (bool, error) { return false, errors.ErrUnsupported }
