package netnstest

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// Do runs fn on a thread switched into the namespace ns: sockets fn opens
// belong to ns for their whole life, whichever goroutine uses them later.
// fn runs on another goroutine: it must not call t.Fatal.
func Do(t testing.TB, ns string, fn func()) {
	t.Helper()
	if err := in(ns, fn); err != nil {
		t.Fatal(err)
	}
}

// DialContext opens a connection from inside namespace ns (as a host in it
// would), for clients such as grpc.WithContextDialer that dial on their own
// goroutines: it returns errors instead of failing a test.
func DialContext(ctx context.Context, ns, network, addr string) (net.Conn, error) {
	var (
		c   net.Conn
		err error
	)
	var d net.Dialer
	if e := in(ns, func() { c, err = d.DialContext(ctx, network, addr) }); e != nil {
		return nil, e
	}
	return c, err
}

// ListenPacket opens a UDP socket inside namespace ns.
func ListenPacket(ns, network, addr string) (net.PacketConn, error) {
	var (
		pc  net.PacketConn
		err error
	)
	if e := in(ns, func() { pc, err = net.ListenPacket(network, addr) }); e != nil {
		return nil, e
	}
	return pc, err
}

// in runs fn on a thread switched into namespace ns ("" is the caller's).
func in(ns string, fn func()) error {
	if ns == "" {
		fn()
		return nil
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is left locked (and so discarded when the goroutine
		// ends) if it cannot be switched back.
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			done <- err
			return
		}
		defer orig.Close()
		f, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			done <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("setns back: %w", err)
			return
		}
		runtime.UnlockOSThread()
		done <- nil
	}()
	return <-done
}
