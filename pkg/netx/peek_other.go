//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package netx

// initPeek does nothing where the socket cannot be peeked; such
// connections are assumed alive.
func (c *PoolConn) initPeek() {}
