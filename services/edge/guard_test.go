package edge

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/switchboard-net/switchboard/pkg/netx"
)

// TestIsLocal lists the addresses the wire listener does not tunnel to by
// default.
func TestIsLocal(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1":          true,
		"127.1.2.3":          true,
		"::1":                true,
		"::ffff:127.0.0.1":   true,
		"169.254.169.254":    true,
		"fe80::1":            true,
		"0.0.0.0":            true,
		"::":                 true,
		"0.1.2.3":            true,
		"10.0.0.1":           false,
		"192.168.1.10":       false,
		"172.16.0.1":         false,
		"8.8.8.8":            false,
		"2001:db8::1":        false,
		"fd00::1":            false,
		"::ffff:10.0.0.1":    false,
		"169.253.255.255":    false,
		"fec0::1":            false,
		"128.0.0.1":          false,
		"::ffff:169.254.1.1": true,
	} {
		if got := isLocal(netip.MustParseAddr(addr)); got != want {
			t.Errorf("isLocal(%s) = %v, want %v", addr, got, want)
		}
	}
}

// TestLocalGuardRefusesBeforeDialling checks that the guard refuses local
// literals and names without a connection attempt.
func TestLocalGuardRefusesBeforeDialling(t *testing.T) {
	g := localGuard{d: &netx.Dialer{}}
	for _, addr := range []string{"127.0.0.1:1", "[::1]:1", "169.254.169.254:80", "[fe80::1%lo]:1", "0.0.0.0:1", "localhost:1"} {
		_, err := g.DialContext(context.Background(), "tcp", addr)
		if !errors.Is(err, errLocalEndpoint) {
			t.Errorf("dial %s: %v, want errLocalEndpoint", addr, err)
		}
	}
}
