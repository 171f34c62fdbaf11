package netx

import "net"

// transparent is implemented by this package's connection wrappers, which
// add bookkeeping (tracking) but never change the bytes. Wrappers
// that do change them, such as *tls.Conn, are deliberately not unwrapped.
type transparent interface {
	netxInner() net.Conn
}

// Unwrap returns the connection beneath this package's wrappers (the
// connections a Listener accepts), typically a
// *net.TCPConn. Other connections, including *tls.Conn, are returned as
// they are.
func Unwrap(c net.Conn) net.Conn {
	for {
		t, ok := c.(transparent)
		if !ok {
			return c
		}
		c = t.netxInner()
	}
}

// closeWriter is a connection that can shut down its sending side alone.
// *net.TCPConn, *net.UnixConn and *tls.Conn implement it.
type closeWriter interface {
	CloseWrite() error
}

// closeReader is a connection that can shut down its receiving side alone.
type closeReader interface {
	CloseRead() error
}
