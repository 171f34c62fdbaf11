package netx

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ListenOptions configure Listen and NewListener.
type ListenOptions struct {
	// Socket holds the socket options for the listening socket; accepted
	// connections inherit its buffer sizes and get its Nagle setting.
	// NewListener sets the buffer sizes on each accepted connection.
	Socket SocketOptions
	// KeepAlive is the TCP keep-alive probe period for accepted
	// connections. Zero means Go's default (15 s); negative disables it.
	// NewListener ignores it (the listener already exists).
	KeepAlive time.Duration
	// MaxConns bounds the connections open at once: Accept waits for one
	// to close before taking another from the kernel's queue. Zero means
	// no bound.
	MaxConns int
}

// Listen announces on the local address with the given options and returns
// a tracking Listener. network is "tcp", "tcp4", "tcp6" or "unix".
func Listen(ctx context.Context, network, addr string, opts ListenOptions) (*Listener, error) {
	lc := net.ListenConfig{KeepAlive: opts.KeepAlive}
	if ctl := opts.Socket.control(true); ctl != nil {
		lc.Control = func(network, address string, c syscall.RawConn) error {
			return ctl(ctx, network, address, c)
		}
	}
	inner, err := lc.Listen(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	l := NewListener(inner, opts)
	l.inherits = true // accepted connections inherit the buffer sizes
	return l, nil
}

// Listener wraps a net.Listener and tracks every connection it accepts
// until that connection is closed, so a server can shut down gracefully:
// stop accepting, let live connections finish, then force-close the rest.
//
// Accepted connections are wrappers that keep the kernel's zero-copy paths:
// io.Copy between them, and Join, still reach *net.TCPConn's splice.
type Listener struct {
	inner    net.Listener
	socket   SocketOptions
	slots    chan struct{} // nil when MaxConns is zero
	closing  chan struct{} // closed when Close or Shutdown begins
	drained  chan struct{} // closed once closing and nothing is live
	ctx      context.Context
	cancel   context.CancelFunc
	accepted atomic.Uint64

	inherits bool // inner has socket's buffer sizes (made by Listen)

	closeOnce sync.Once
	closeErr  error

	mu        sync.Mutex
	isClosing bool
	isDrained bool
	conns     map[*trackedConn]struct{}
	handlers  int // Serve handlers still running
	accepting int // Accept calls inside inner.Accept
}

var _ net.Listener = (*Listener)(nil)

// NewListener starts tracking the connections accepted from inner.
// opts.MaxConns applies, and opts.Socket's Nagle, ReadBuffer and
// WriteBuffer are set on each accepted TCP connection (inner's own socket
// is left as it is); ReusePort and KeepAlive must be set when inner is
// created.
func NewListener(inner net.Listener, opts ListenOptions) *Listener {
	ctx, cancel := context.WithCancel(context.Background())
	l := &Listener{
		inner:   inner,
		socket:  opts.Socket,
		closing: make(chan struct{}),
		drained: make(chan struct{}),
		ctx:     ctx,
		cancel:  cancel,
		conns:   make(map[*trackedConn]struct{}),
	}
	if opts.MaxConns > 0 {
		l.slots = make(chan struct{}, opts.MaxConns)
	}
	return l
}

// Accept waits for and returns the next connection. After Close or
// Shutdown it returns an error satisfying errors.Is(err, net.ErrClosed);
// a connection the kernel handed over as Close began is still returned
// and tracked, never dropped: the client connected before the listener
// closed, and (when a successor shares the socket) would otherwise be
// reset although another process was ready to serve it.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		if l.slots != nil {
			select {
			case l.slots <- struct{}{}:
			case <-l.closing:
				return nil, l.closedErr()
			}
		}
		l.mu.Lock()
		if l.isClosing {
			l.mu.Unlock()
			l.release()
			return nil, l.closedErr()
		}
		l.accepting++
		l.mu.Unlock()
		c, err := l.inner.Accept()
		if err == nil {
			if aerr := l.socket.applyConn(c, !l.inherits); aerr != nil {
				// The connection is unusable as configured; the peer sees
				// it closed and the listener carries on.
				c.Close()
				c = nil
			}
		}
		var tc *trackedConn
		l.mu.Lock()
		l.accepting--
		if c != nil {
			tc = &trackedConn{Conn: c, l: l}
			l.conns[tc] = struct{}{}
		}
		l.checkDrainedLocked()
		l.mu.Unlock()
		if err != nil {
			l.release()
			return nil, err
		}
		if tc == nil {
			l.release()
			continue
		}
		l.accepted.Add(1)
		return tc, nil
	}
}

func (l *Listener) closedErr() error {
	return &net.OpError{Op: "accept", Net: l.inner.Addr().Network(), Addr: l.inner.Addr(), Err: net.ErrClosed}
}

func (l *Listener) release() {
	if l.slots != nil {
		<-l.slots
	}
}

// Addr returns the listener's network address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

// Active reports how many accepted connections are still open.
func (l *Listener) Active() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// Accepted reports how many connections the listener has accepted in all.
func (l *Listener) Accepted() uint64 { return l.accepted.Load() }

// Close stops accepting new connections. Connections already accepted stay
// open; use Shutdown to wait for them.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.isClosing = true
		l.checkDrainedLocked()
		l.mu.Unlock()
		close(l.closing)
		l.closeErr = l.inner.Close()
	})
	return l.closeErr
}

// Shutdown stops accepting, then waits until every accepted connection has
// been closed and every Serve handler has returned. If ctx ends first it
// force-closes the connections still open, cancels the handlers' context
// and returns an error wrapping ctx.Err(); handlers are expected to return
// promptly once their connection fails.
func (l *Listener) Shutdown(ctx context.Context) error {
	l.Close()
	select {
	case <-l.drained:
		l.cancel()
		return nil
	case <-ctx.Done():
	}
	l.cancel()
	l.mu.Lock()
	live := make([]*trackedConn, 0, len(l.conns))
	for c := range l.conns {
		live = append(live, c)
	}
	l.mu.Unlock()
	for _, c := range live {
		c.Close()
	}
	return fmt.Errorf("netx: shutdown of %s force-closed %d connections: %w", l.Addr(), len(live), ctx.Err())
}

func (l *Listener) checkDrainedLocked() {
	if l.isClosing && !l.isDrained && len(l.conns) == 0 && l.handlers == 0 && l.accepting == 0 {
		l.isDrained = true
		close(l.drained)
	}
}

func (l *Listener) remove(c *trackedConn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.checkDrainedLocked()
	l.mu.Unlock()
	l.release()
}

// Serve accepts connections and runs handle for each in its own goroutine,
// closing the connection when handle returns. The handler's context is
// cancelled when Shutdown gives up waiting. Serve returns nil once Close or
// Shutdown stops the listener, or once the listener it wraps is closed
// (by a runtime that closes every listener it opened, say; Shutdown still
// drains), or the first accept error that retrying cannot cure. Running out of file descriptors or buffers is retried with
// a backoff of up to one second.
func (l *Listener) Serve(handle func(ctx context.Context, c net.Conn)) error {
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			select {
			case <-l.closing:
				return nil
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			if !transientAcceptErr(err) {
				return fmt.Errorf("netx: serve %s: %w", l.Addr(), err)
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-l.closing:
				t.Stop()
				return nil
			}
			continue
		}
		delay = 0
		l.mu.Lock()
		l.handlers++
		l.mu.Unlock()
		go func() {
			defer func() {
				c.Close()
				l.mu.Lock()
				l.handlers--
				l.checkDrainedLocked()
				l.mu.Unlock()
			}()
			handle(l.ctx, c)
		}()
	}
}

func transientAcceptErr(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

// trackedConn is a connection accepted by a Listener; closing it removes it
// from the listener's live set.
type trackedConn struct {
	net.Conn
	l    *Listener
	once sync.Once
	err  error
}

func (c *trackedConn) netxInner() net.Conn { return c.Conn }

// NetConn returns the underlying connection.
func (c *trackedConn) NetConn() net.Conn { return c.Conn }

// Close closes the connection and stops tracking it.
func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.err = c.Conn.Close()
		c.l.remove(c)
	})
	return c.err
}

// CloseWrite shuts down the sending side when the connection supports it.
func (c *trackedConn) CloseWrite() error { return closeWrite(c.Conn) }

// CloseRead shuts down the receiving side when the connection supports it.
func (c *trackedConn) CloseRead() error {
	if cr, ok := c.Conn.(closeReader); ok {
		return cr.CloseRead()
	}
	return fmt.Errorf("netx: %T cannot close its read side: %w", c.Conn, errors.ErrUnsupported)
}

// ReadFrom lets io.Copy reach the underlying connection's zero-copy path.
func (c *trackedConn) ReadFrom(r io.Reader) (int64, error) { return readFrom(c.Conn, r) }

// WriteTo lets io.Copy reach the underlying connection's zero-copy path.
func (c *trackedConn) WriteTo(w io.Writer) (int64, error) { return writeTo(c.Conn, w) }

func closeWrite(c net.Conn) error {
	if cw, ok := c.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("netx: %T cannot close its write side: %w", c, errors.ErrUnsupported)
}

// readFrom copies r into dst, unwrapping r so that the kernel's splice
// path sees two *net.TCPConn values.
func readFrom(dst net.Conn, r io.Reader) (int64, error) {
	if rc, ok := r.(net.Conn); ok {
		r = Unwrap(rc)
	}
	if rf, ok := dst.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(writerOnly{dst}, r)
}

// writeTo copies src into w, unwrapping w likewise.
func writeTo(src net.Conn, w io.Writer) (int64, error) {
	if wc, ok := w.(net.Conn); ok {
		w = Unwrap(wc)
	}
	if wt, ok := src.(io.WriterTo); ok {
		return wt.WriteTo(w)
	}
	return io.Copy(w, readerOnly{src})
}

type writerOnly struct{ io.Writer }

type readerOnly struct{ io.Reader }
