package netx

import (
	"context"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// blackhole returns a loopback address whose accept queue is full, so the
// kernel drops further SYNs and a dial to it hangs until its deadline.
func blackhole(t *testing.T) string {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil { // never accepted from
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*unix.SockaddrInet4).Port))
}

// TestDialTimeout: a dial to an address that never answers ends at the
// Dialer's Timeout when the context has no deadline, and at the context's
// deadline when that comes first.
func TestDialTimeout(t *testing.T) {
	tests := []struct {
		name    string
		timeout time.Duration // Dialer.Timeout
		ctxWait time.Duration // context deadline; 0 for none
		want    time.Duration // the bound that should end the dial
	}{
		{"dialer timeout, no context deadline", 200 * time.Millisecond, 0, 200 * time.Millisecond},
		{"context deadline first", testTimeout, 200 * time.Millisecond, 200 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := blackhole(t)
			d := &Dialer{Timeout: tt.timeout}
			var hung error
			// Fill the queue: dials succeed until the kernel starts dropping.
			for range 8 {
				ctx := context.Background()
				cancel := func() {}
				if tt.ctxWait > 0 {
					ctx, cancel = context.WithTimeout(ctx, tt.ctxWait)
				}
				start := time.Now()
				c, err := d.DialContext(ctx, "tcp", addr)
				el := time.Since(start)
				cancel()
				if err == nil {
					t.Cleanup(func() { c.Close() })
					continue
				}
				hung = err
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					t.Fatalf("dial error %v, want a timeout", err)
				}
				if el < tt.want || el > tt.want+testTimeout/2 {
					t.Fatalf("dial gave up after %v, want about %v", el, tt.want)
				}
				break
			}
			if hung == nil {
				t.Fatal("every dial succeeded; the accept queue never filled")
			}
		})
	}
}
