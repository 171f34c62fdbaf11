package netx

import (
	"errors"
	"net"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func sockopt(t *testing.T, c any, level, opt int) int {
	t.Helper()
	sc, ok := c.(syscall.Conn)
	if !ok {
		t.Fatalf("%T has no socket", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), level, opt) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v
}

func TestSocketOptions(t *testing.T) {
	const rbuf, wbuf = 96 << 10, 160 << 10
	opts := SocketOptions{Nagle: true, ReadBuffer: rbuf, WriteBuffer: wbuf}
	l := listenTracked(t, ListenOptions{Socket: opts})
	d := &Dialer{Socket: opts}
	dialed, err := d.DialContext(testContext(t), "tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer dialed.Close()
	accepted := accept(t, l)

	for name, c := range map[string]net.Conn{"dialed": dialed, "accepted": Unwrap(accepted)} {
		// Linux doubles the requested size to allow for bookkeeping.
		if got := sockopt(t, c, unix.SOL_SOCKET, unix.SO_RCVBUF); got < rbuf {
			t.Errorf("%s SO_RCVBUF = %d, want >= %d", name, got, rbuf)
		}
		if got := sockopt(t, c, unix.SOL_SOCKET, unix.SO_SNDBUF); got < wbuf {
			t.Errorf("%s SO_SNDBUF = %d, want >= %d", name, got, wbuf)
		}
		if got := sockopt(t, c, unix.IPPROTO_TCP, unix.TCP_NODELAY); got != 0 {
			t.Errorf("%s TCP_NODELAY = %d, want 0 (Nagle on)", name, got)
		}
	}

	// Default options leave Go's TCP_NODELAY in place.
	plain, err := (&Dialer{}).DialContext(testContext(t), "tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if got := sockopt(t, plain, unix.IPPROTO_TCP, unix.TCP_NODELAY); got == 0 {
		t.Error("default dial has Nagle on")
	}
}

// TestNewListenerSetsBuffers: a listener made elsewhere (a service
// runtime's) cannot pass buffer sizes on, so NewListener sets them on each
// accepted connection; without them the kernel's autotuning is untouched.
func TestNewListenerSetsBuffers(t *testing.T) {
	const rbuf, wbuf = 400 << 10, 300 << 10 // above the usual defaults (128 KiB, 16 KiB)
	for _, tt := range []struct {
		name string
		opts SocketOptions
	}{{"sizes", SocketOptions{ReadBuffer: rbuf, WriteBuffer: wbuf}}, {"default", SocketOptions{}}} {
		t.Run(tt.name, func(t *testing.T) {
			inner, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			l := NewListener(inner, ListenOptions{Socket: tt.opts})
			t.Cleanup(func() { l.Close() })
			dial(t, l.Addr())
			c := Unwrap(accept(t, l))
			gotR := sockopt(t, c, unix.SOL_SOCKET, unix.SO_RCVBUF)
			gotW := sockopt(t, c, unix.SOL_SOCKET, unix.SO_SNDBUF)
			if tt.opts.ReadBuffer == 0 {
				// The listening socket's values, which the defaults gave.
				wantR := sockopt(t, inner, unix.SOL_SOCKET, unix.SO_RCVBUF)
				if gotR != wantR {
					t.Errorf("SO_RCVBUF = %d, want the listener's %d", gotR, wantR)
				}
				return
			}
			// Linux doubles the requested size to allow for bookkeeping.
			if gotR < rbuf || gotW < wbuf {
				t.Errorf("SO_RCVBUF, SO_SNDBUF = %d, %d; want >= %d, %d", gotR, gotW, rbuf, wbuf)
			}
		})
	}
}

func TestListenReusePort(t *testing.T) {
	tests := []struct {
		name      string
		reuse     bool
		wantShare bool
	}{
		{"SO_REUSEPORT", true, true},
		{"default", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := ListenOptions{Socket: SocketOptions{ReusePort: tt.reuse}}
			first := listenTracked(t, opts)
			second, err := Listen(testContext(t), "tcp", first.Addr().String(), opts)
			if err == nil {
				second.Close()
			}
			if shared := err == nil; shared != tt.wantShare {
				t.Fatalf("second listener on %s: %v; want shared = %v", first.Addr(), err, tt.wantShare)
			}
			if !tt.wantShare && !errors.Is(err, syscall.EADDRINUSE) {
				t.Fatalf("second listener error %v, want EADDRINUSE", err)
			}
		})
	}
}

// TestListenConfigPacket: the options also apply to datagram sockets, such
// as a DNS server's UDP listener.
func TestListenConfigPacket(t *testing.T) {
	const rbuf = 200 << 10
	opts := SocketOptions{ReadBuffer: rbuf, ReusePort: true}
	lc := opts.ListenConfig()
	first, err := lc.ListenPacket(testContext(t), "udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if got := sockopt(t, first, unix.SOL_SOCKET, unix.SO_RCVBUF); got < rbuf {
		t.Errorf("SO_RCVBUF = %d, want >= %d", got, rbuf)
	}
	second, err := lc.ListenPacket(testContext(t), "udp", first.LocalAddr().String())
	if err != nil {
		t.Fatalf("second UDP socket with SO_REUSEPORT: %v", err)
	}
	second.Close()
}
