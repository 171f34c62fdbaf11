//go:build !linux

package netnstest

import (
	"context"
	"errors"
	"net"
	"testing"
)

// Do needs Linux network namespaces; elsewhere it skips the test.
func Do(t testing.TB, ns string, fn func()) {
	t.Helper()
	if ns == "" {
		fn()
		return
	}
	t.Skip("network namespaces are Linux only")
}

// DialContext needs Linux network namespaces; elsewhere only "" works.
func DialContext(ctx context.Context, ns, network, addr string) (net.Conn, error) {
	if ns != "" {
		return nil, errors.New("network namespaces are Linux only")
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// ListenPacket needs Linux network namespaces; elsewhere only "" works.
func ListenPacket(ns, network, addr string) (net.PacketConn, error) {
	if ns != "" {
		return nil, errors.New("network namespaces are Linux only")
	}
	return net.ListenPacket(network, addr)
}
