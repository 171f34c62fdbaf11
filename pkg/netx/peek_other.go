//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package netx

import "net"

// Init does nothing where the socket cannot be peeked: every connection
// counts as reusable.
func (p *IdleProbe) Init(c net.Conn) { p.rc, p.fn = nil, nil }
