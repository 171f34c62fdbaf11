//go:build !linux

package resolver

import "syscall"

// reusePortSupported is false here: one UDP socket serves DNS.
const reusePortSupported = false

func reusePort(_, _ string, _ syscall.RawConn) error { return nil }
