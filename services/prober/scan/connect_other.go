//go:build !linux

package scan

import "net/netip"

// connectNow has no fast path here: every port goes through the dialer.
func connectNow(netip.AddrPort) (State, bool) { return Unknown, false }
