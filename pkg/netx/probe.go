package netx

import "syscall"

// IdleProbe tells, without blocking, whether a connection kept idle for
// reuse (a keep-alive connection to a backend) may carry another request:
// the peer has not closed or reset it, and it holds no bytes nobody asked
// for (a late response, a 408 the server sent before closing, junk). It
// peeks at the socket with a non-blocking MSG_PEEK, so a check reads
// nothing and does not allocate; the check runs just before reuse, where
// it catches a peer that closed while the connection sat idle instead of
// letting the next request fail on it.
//
// Init it once per connection; an IdleProbe must not be copied after.
// Where the socket cannot be reached (a *tls.Conn, a platform without
// MSG_PEEK) every connection counts as reusable.
type IdleProbe struct {
	rc   syscall.RawConn
	fn   func(fd uintptr) bool
	buf  [1]byte
	live bool
}

// Reusable reports whether the connection the probe was set up for is
// still open at the peer's end and holds no unread bytes. Bytes already
// read into a user-space buffer are the caller's to check.
func (p *IdleProbe) Reusable() bool {
	if p.rc == nil {
		return true
	}
	p.live = false
	if err := p.rc.Read(p.fn); err != nil {
		return false
	}
	return p.live
}
