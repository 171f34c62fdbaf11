package netx

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

func listenTracked(t *testing.T, opts ListenOptions) *Listener {
	t.Helper()
	l, err := Listen(testContext(t), "tcp", "127.0.0.1:0", opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func dial(t *testing.T, addr net.Addr) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr.String(), testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(testTimeout))
	return c
}

func accept(t *testing.T, l net.Listener) net.Conn {
	t.Helper()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// notDone reports whether ch has not yielded a value yet.
func notDone[T any](ch <-chan T) bool {
	select {
	case <-ch:
		return false
	default:
		return true
	}
}

func TestListenerShutdownWaitsForConnections(t *testing.T) {
	l := listenTracked(t, ListenOptions{})
	dial(t, l.Addr())
	dial(t, l.Addr())
	s1, s2 := accept(t, l), accept(t, l)
	if n := l.Active(); n != 2 {
		t.Fatalf("Active = %d, want 2", n)
	}

	done := make(chan error, 1)
	go func() { done <- l.Shutdown(testContext(t)) }()
	// Shutdown stops accepting at once: new connections are refused.
	waitFor(t, "listener to stop accepting", func() bool {
		c, err := net.DialTimeout("tcp", l.Addr().String(), testTimeout)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Shutdown: %v, want net.ErrClosed", err)
	}
	s1.Close()
	waitFor(t, "one connection left", func() bool { return l.Active() == 1 })
	if !notDone(done) {
		t.Fatal("Shutdown returned with a connection still open")
	}
	s2.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown = %v, want nil", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Shutdown did not return after the last connection closed")
	}
	if l.Accepted() != 2 || l.Active() != 0 {
		t.Fatalf("Accepted, Active = %d, %d; want 2, 0", l.Accepted(), l.Active())
	}
}

func TestListenerShutdownForceCloses(t *testing.T) {
	l := listenTracked(t, ListenOptions{})
	client := dial(t, l.Addr())
	accept(t, l)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := l.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want context.DeadlineExceeded", err)
	}
	if n, err := client.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("client read after force-close = %d, %v; want EOF", n, err)
	}
	if l.Active() != 0 {
		t.Fatalf("Active = %d after force-close", l.Active())
	}
}

func TestListenerServe(t *testing.T) {
	l := listenTracked(t, ListenOptions{})
	served := make(chan error, 1)
	blocked := make(chan struct{})
	go func() {
		served <- l.Serve(func(ctx context.Context, c net.Conn) {
			buf := make([]byte, 5)
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			if string(buf) == "block" {
				close(blocked)
				<-ctx.Done() // a handler that only stops when told
				return
			}
			c.Write(buf)
		})
	}()

	echo := dial(t, l.Addr())
	echo.Write([]byte("hello"))
	got := make([]byte, 5)
	if _, err := io.ReadFull(echo, got); err != nil || string(got) != "hello" {
		t.Fatalf("echo = %q, %v", got, err)
	}
	// The handler returned, so Serve closed the connection.
	if _, err := echo.Read(got); err != io.EOF {
		t.Fatalf("read after handler returned: %v, want EOF", err)
	}

	stuck := dial(t, l.Addr())
	stuck.Write([]byte("block"))
	<-blocked
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := l.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want context.DeadlineExceeded", err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve = %v, want nil after Shutdown", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Serve did not return after Shutdown")
	}
	if _, err := stuck.Read(got); err != io.EOF {
		t.Fatalf("blocked client read after Shutdown: %v, want EOF", err)
	}
}

func TestListenerShutdownWithoutConnections(t *testing.T) {
	l := listenTracked(t, ListenOptions{})
	if err := l.Shutdown(testContext(t)); err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	if err := l.Shutdown(testContext(t)); err != nil {
		t.Fatalf("second Shutdown = %v", err)
	}
}

func TestListenerMaxConns(t *testing.T) {
	l := listenTracked(t, ListenOptions{MaxConns: 1})
	dial(t, l.Addr())
	first := accept(t, l)

	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
		accepted <- c
	}()
	dial(t, l.Addr()) // completes in the kernel's queue, not accepted yet
	if !notDone(accepted) {
		t.Fatal("second connection accepted while at MaxConns")
	}
	first.Close()
	select {
	case c := <-accepted:
		if c == nil {
			t.Fatal("Accept failed")
		}
	case <-time.After(testTimeout):
		t.Fatal("second connection not accepted after the first closed")
	}
	// A Close while Accept waits for a slot ends the wait.
	waiting := make(chan error, 1)
	go func() { _, err := l.Accept(); waiting <- err }()
	l.Close()
	if err := <-waiting; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
	}
}

func TestListenerConnUnwrap(t *testing.T) {
	l := listenTracked(t, ListenOptions{})
	dial(t, l.Addr())
	c := accept(t, l)
	if _, ok := c.(*net.TCPConn); ok {
		t.Fatal("accepted connection is not tracked")
	}
	if _, ok := Unwrap(c).(*net.TCPConn); !ok {
		t.Fatalf("Unwrap = %T, want *net.TCPConn", Unwrap(c))
	}
	if err := c.(closeWriter).CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
}

// scriptedListener returns the queued accept results in order, then
// blocks until closed.
type scriptedListener struct {
	results chan acceptResult
	closed  chan struct{}
}

type acceptResult struct {
	c   net.Conn
	err error
}

func (s *scriptedListener) Accept() (net.Conn, error) {
	select {
	case r := <-s.results:
		return r.c, r.err
	case <-s.closed:
		return nil, net.ErrClosed
	}
}

func (s *scriptedListener) Close() error   { close(s.closed); return nil }
func (s *scriptedListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// TestListenerServeAcceptErrors: running out of descriptors is retried,
// other accept errors end Serve.
func TestListenerServeAcceptErrors(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		wantErr bool
	}{
		{"EMFILE retried", syscall.EMFILE, false},
		{"ENFILE retried", syscall.ENFILE, false},
		{"other error ends Serve", errors.New("listener broke"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inner := &scriptedListener{results: make(chan acceptResult, 3), closed: make(chan struct{})}
			l := NewListener(inner, ListenOptions{})
			client, server := net.Pipe()
			defer client.Close()
			inner.results <- acceptResult{err: &net.OpError{Op: "accept", Net: "tcp", Err: tt.err}}
			inner.results <- acceptResult{c: server}
			handled := make(chan struct{})
			served := make(chan error, 1)
			go func() { served <- l.Serve(func(context.Context, net.Conn) { close(handled) }) }()
			if tt.wantErr {
				if err := <-served; err == nil {
					t.Fatal("Serve = nil, want the accept error")
				}
				server.Close()
				return
			}
			select {
			case <-handled:
			case <-time.After(testTimeout):
				t.Fatal("connection after a transient error was not served")
			}
			if err := l.Shutdown(testContext(t)); err != nil {
				t.Fatal(err)
			}
			if err := <-served; err != nil {
				t.Fatalf("Serve = %v", err)
			}
		})
	}
}

// gateListener is a net.Listener whose Accept blocks until the test hands
// it a connection, whatever Close does meanwhile (as a kernel accept that
// has already taken a connection off the queue does).
type gateListener struct {
	entered chan struct{}
	conns   chan net.Conn
	closed  chan struct{}
	once    sync.Once
}

func (g *gateListener) Accept() (net.Conn, error) {
	g.entered <- struct{}{}
	if c, ok := <-g.conns; ok {
		return c, nil
	}
	return nil, net.ErrClosed
}

func (g *gateListener) Close() error { g.once.Do(func() { close(g.closed) }); return nil }

func (g *gateListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// TestListenerKeepsConnectionAcceptedWhileClosing: a connection the inner
// listener returns after Close began is tracked and served, and Shutdown
// waits for it instead of declaring the listener drained.
func TestListenerKeepsConnectionAcceptedWhileClosing(t *testing.T) {
	g := &gateListener{entered: make(chan struct{}, 1), conns: make(chan net.Conn, 1), closed: make(chan struct{})}
	l := NewListener(g, ListenOptions{})
	got := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			t.Error(err)
		}
		got <- c
	}()
	<-g.entered
	shut := make(chan error, 1)
	go func() { shut <- l.Shutdown(testContext(t)) }()
	<-g.closed // Close began
	if !notDone(shut) {
		t.Fatal("Shutdown returned while an Accept was still in progress")
	}
	a, b := net.Pipe()
	defer b.Close()
	g.conns <- a
	c := <-got
	if c == nil {
		t.Fatal("the connection accepted as Close began was dropped")
	}
	if l.Active() != 1 {
		t.Fatalf("Active = %d, want 1", l.Active())
	}
	if !notDone(shut) {
		t.Fatal("Shutdown returned with a live connection")
	}
	c.Close()
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Shutdown: %v", err)
	}
}

// TestListenerServeInnerClosed: Serve ends cleanly when the listener it
// wraps is closed by someone else (a runtime closing every listener).
func TestListenerServeInnerClosed(t *testing.T) {
	inner := listenLoopback(t)
	l := NewListener(inner, ListenOptions{})
	served := make(chan error, 1)
	go func() { served <- l.Serve(func(context.Context, net.Conn) {}) }()
	inner.Close()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve = %v, want nil", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Serve did not return")
	}
	if err := l.Shutdown(testContext(t)); err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
}
