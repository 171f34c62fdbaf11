package netx

import (
	"context"
	"net"
	"testing"
)

// TestIdleProbe: an idle connection is reusable until its peer closes or
// resets it or writes to it unasked; wrappers are seen through, and a
// connection without a socket counts as reusable.
func TestIdleProbe(t *testing.T) {
	tests := []struct {
		name string
		peer func(s *net.TCPConn)
	}{
		{"peer closed", func(s *net.TCPConn) { s.Close() }},
		{"peer half-closed", func(s *net.TCPConn) { s.CloseWrite() }},
		{"peer reset", func(s *net.TCPConn) { s.SetLinger(0); s.Close() }},
		{"unexpected bytes", func(s *net.TCPConn) { s.Write([]byte("HTTP/1.1 408 Request Timeout\r\n\r\n")) }},
		{"one unexpected byte", func(s *net.TCPConn) { s.Write([]byte("x")) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, s := tcpPair(t)
			var p IdleProbe
			p.Init(c)
			if !p.Reusable() {
				t.Fatal("healthy connection reported unusable")
			}
			tt.peer(s)
			waitFor(t, "the peer's action to arrive", func() bool { return !p.Reusable() })
			if p.Reusable() {
				t.Fatal("reusable again after the peer's action")
			}
		})
	}
	t.Run("data read stays readable", func(t *testing.T) {
		c, s := tcpPair(t)
		var p IdleProbe
		p.Init(c)
		s.Write([]byte("ab"))
		waitFor(t, "the bytes to arrive", func() bool { return !p.Reusable() })
		b := make([]byte, 2)
		if n, err := c.Read(b); err != nil || n == 0 || b[0] != 'a' {
			t.Fatalf("the peek consumed bytes: read %q, %v", b[:n], err)
		}
	})
	t.Run("through the Listener's wrapper", func(t *testing.T) {
		ln, err := Listen(testContext(t), "tcp", "127.0.0.1:0", ListenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		client, err := (&Dialer{}).DialContext(context.Background(), "tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { client.Close() })
		wrapped, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { wrapped.Close() })
		var p IdleProbe
		p.Init(wrapped)
		if p.rc == nil || !p.Reusable() {
			t.Fatal("the wrapped socket was not probed, or not reusable")
		}
		client.Close()
		waitFor(t, "the close to arrive", func() bool { return !p.Reusable() })
	})
	t.Run("no socket", func(t *testing.T) {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		var p IdleProbe
		p.Init(a)
		if !p.Reusable() {
			t.Fatal("a connection without a socket counts as reusable")
		}
	})
}

func TestIdleProbeAllocatesNothing(t *testing.T) {
	c, _ := tcpPair(t)
	var p IdleProbe
	p.Init(c)
	if n := testing.AllocsPerRun(100, func() { p.Reusable() }); n != 0 {
		t.Fatalf("%v allocations per check", n)
	}
}
