package netx

import (
	"context"
	"fmt"
	"net"
	"syscall"
)

// SocketOptions are the socket settings services apply to the TCP sockets
// they dial and listen on. The zero value keeps Go's and the kernel's
// defaults; note that Go already enables TCP_NODELAY on every TCP connection.
type SocketOptions struct {
	// Nagle re-enables Nagle's algorithm (clears TCP_NODELAY) on dialed and
	// accepted connections. Leave it false for request/response and proxy
	// traffic, where coalescing small writes only adds latency.
	Nagle bool
	// ReadBuffer and WriteBuffer set SO_RCVBUF and SO_SNDBUF, in bytes,
	// before the socket connects or listens, so the advertised window scale
	// reflects them; accepted connections inherit the listener's values.
	// Zero keeps the kernel's automatic tuning, which setting a value turns
	// off for that socket. The kernel may round or double the figure.
	ReadBuffer, WriteBuffer int
	// ReusePort sets SO_REUSEPORT on listening sockets, so several
	// listeners (in one process or many) can bind the same address and the
	// kernel spreads new connections among them. It is ignored when dialing.
	ReusePort bool
}

// control returns the function net.Dialer and net.ListenConfig call on the
// raw socket before connect or bind, or nil when there is nothing to set.
func (o SocketOptions) control(listening bool) func(ctx context.Context, network, address string, c syscall.RawConn) error {
	if o.ReadBuffer == 0 && o.WriteBuffer == 0 && !(listening && o.ReusePort) {
		return nil
	}
	if o.ReadBuffer < 0 || o.WriteBuffer < 0 {
		return func(context.Context, string, string, syscall.RawConn) error {
			return fmt.Errorf("netx: negative socket buffer size (read %d, write %d)", o.ReadBuffer, o.WriteBuffer)
		}
	}
	return func(_ context.Context, network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = setSockopts(fd, o, listening)
		})
		if err != nil {
			return fmt.Errorf("netx: socket options for %s %s: %w", network, address, err)
		}
		if serr != nil {
			return fmt.Errorf("netx: socket options for %s %s: %w", network, address, serr)
		}
		return nil
	}
}

// applyConn sets the options that only take effect on a connected socket,
// and with buffers the buffer sizes too, for connections accepted from a
// listening socket that did not have them. Set after the handshake, the
// sizes still bound the window; its scale was chosen with the kernel's
// defaults, which allow any size up to net.ipv4.tcp_rmem's maximum.
func (o SocketOptions) applyConn(c net.Conn, buffers bool) error {
	buffers = buffers && (o.ReadBuffer != 0 || o.WriteBuffer != 0)
	if !o.Nagle && !buffers {
		return nil
	}
	tc, ok := Unwrap(c).(*net.TCPConn)
	if !ok {
		return nil
	}
	if buffers {
		if o.ReadBuffer < 0 || o.WriteBuffer < 0 {
			return fmt.Errorf("netx: negative socket buffer size (read %d, write %d)", o.ReadBuffer, o.WriteBuffer)
		}
		if o.ReadBuffer > 0 {
			if err := tc.SetReadBuffer(o.ReadBuffer); err != nil {
				return fmt.Errorf("netx: SO_RCVBUF=%d: %w", o.ReadBuffer, err)
			}
		}
		if o.WriteBuffer > 0 {
			if err := tc.SetWriteBuffer(o.WriteBuffer); err != nil {
				return fmt.Errorf("netx: SO_SNDBUF=%d: %w", o.WriteBuffer, err)
			}
		}
	}
	if !o.Nagle {
		return nil
	}
	if err := tc.SetNoDelay(false); err != nil {
		return fmt.Errorf("netx: clear TCP_NODELAY: %w", err)
	}
	return nil
}

// ListenConfig returns a net.ListenConfig that applies o to every socket it
// creates, for callers that need a listener other than a stream one (UDP,
// for instance). Connection-level options (Nagle) are not applied by it.
func (o SocketOptions) ListenConfig() net.ListenConfig {
	lc := net.ListenConfig{}
	if ctl := o.control(true); ctl != nil {
		lc.Control = func(network, address string, c syscall.RawConn) error {
			return ctl(context.Background(), network, address, c)
		}
	}
	return lc
}
