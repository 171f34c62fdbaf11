package netx

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

func TestDialRefusedFails(t *testing.T) {
	l := listenLoopback(t)
	addr := l.Addr().String()
	l.Close()
	d := &Dialer{Timeout: testTimeout}
	start := time.Now()
	_, err := d.DialContext(context.Background(), "tcp", addr)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial closed port: %v, want ECONNREFUSED", err)
	}
	if el := time.Since(start); el > testTimeout/2 {
		t.Fatalf("refused dial took %v", el)
	}
}

func TestDialContextAlreadyDone(t *testing.T) {
	l := listenLoopback(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := (&Dialer{}).DialContext(ctx, "tcp", l.Addr().String())
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("dial with cancelled context: %v, want context.Canceled", err)
	}
}

func TestDialSocketOptionErrors(t *testing.T) {
	l := listenLoopback(t)
	d := &Dialer{Socket: SocketOptions{ReadBuffer: -1}}
	if _, err := d.DialContext(testContext(t), "tcp", l.Addr().String()); err == nil {
		t.Fatal("dial with a negative buffer size succeeded")
	}
}

func TestDialSucceeds(t *testing.T) {
	l := listenLoopback(t)
	d := &Dialer{KeepAlive: -1}
	c, err := d.DialContext(testContext(t), "tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*net.TCPConn); !ok {
		t.Fatalf("dialed %T, want *net.TCPConn", c)
	}
}
