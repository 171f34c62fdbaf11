package netx

import (
	"context"
	"net"
	"time"
)

// DefaultDialTimeout bounds a dial when Dialer.Timeout is zero.
const DefaultDialTimeout = 10 * time.Second

// Dialer opens outgoing connections with a bounded connect time, TCP
// keep-alive and SocketOptions. The zero value is ready to use.
type Dialer struct {
	// Timeout bounds each dial, including name resolution, even when the
	// context has no deadline; an earlier context deadline wins. Zero means
	// DefaultDialTimeout.
	Timeout time.Duration
	// KeepAlive is the TCP keep-alive probe period. Zero means Go's default
	// (15 s); negative disables keep-alive.
	KeepAlive time.Duration
	// Socket holds the socket options applied to each connection.
	Socket SocketOptions
	// LocalAddr, if set, is the local address to dial from.
	LocalAddr net.Addr
}

// DialContext connects to addr on the named network ("tcp", "tcp4",
// "tcp6", "unix", ...). Errors are the standard library's *net.OpError,
// which name the operation and address. A dial that runs out of time,
// whether by Timeout or by the context's deadline, is a net.Error whose
// Timeout method reports true.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = DefaultDialTimeout
	}
	nd := net.Dialer{
		Timeout:        timeout,
		KeepAlive:      d.KeepAlive,
		LocalAddr:      d.LocalAddr,
		ControlContext: d.Socket.control(false),
	}
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if err := d.Socket.applyConn(c, false); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}
