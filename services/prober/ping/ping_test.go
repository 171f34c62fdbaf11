package ping

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestPingLoopback(t *testing.T) {
	for _, a := range []string{"127.0.0.1", "::1"} {
		t.Run(a, func(t *testing.T) {
			addr := netip.MustParseAddr(a)
			if addr.Is6() && !hasIPv6Loopback() {
				t.Skip("no IPv6 loopback")
			}
			var seen []Reply
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			res, err := Ping(ctx, addr, Options{Count: 5, Interval: 20 * time.Millisecond, Timeout: time.Second, Size: 100,
				OnReply: func(r Reply) { seen = append(seen, r) }})
			if err != nil {
				t.Fatal(err)
			}
			if res.Sent != 5 || res.Received != 5 || res.Loss() != 0 {
				t.Fatalf("sent %d received %d loss %.0f%%", res.Sent, res.Received, res.Loss())
			}
			if !(res.Min > 0 && res.Min <= res.Avg && res.Avg <= res.Max) {
				t.Fatalf("min/avg/max %v/%v/%v", res.Min, res.Avg, res.Max)
			}
			if len(seen) != 5 {
				t.Fatalf("OnReply saw %d replies", len(seen))
			}
			for i, r := range res.Replies {
				if r.Seq != i+1 || r.From != addr || r.TTL == 0 {
					t.Errorf("reply %d = %+v", i, r)
				}
			}
		})
	}
}

func TestPingRejectsBadSize(t *testing.T) {
	if _, err := Ping(context.Background(), netip.MustParseAddr("127.0.0.1"), Options{Size: 3}); err == nil {
		t.Fatal("size 3 accepted")
	}
}

func TestTraceLoopback(t *testing.T) {
	for _, a := range []string{"127.0.0.1", "::1"} {
		addr := netip.MustParseAddr(a)
		if addr.Is6() && !hasIPv6Loopback() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var got []Hop
		hops, reached, err := Trace(ctx, addr, TraceOptions{MaxHops: 5, Probes: 2, Timeout: time.Second,
			OnHop: func(h Hop) { got = append(got, h) }})
		cancel()
		if err != nil {
			t.Skip("traceroute needs raw sockets:", err)
		}
		if !reached || len(hops) != 1 || !hops[0].Reached || hops[0].Addr != addr || len(got) != 1 {
			t.Fatalf("%s: hops %+v reached %v", a, hops, reached)
		}
		for _, r := range hops[0].RTTs {
			if r <= 0 {
				t.Fatalf("%s: lost probe on loopback: %+v", a, hops[0])
			}
		}
	}
}

func TestMatchTimeExceeded(t *testing.T) {
	// A Time Exceeded quoting an IPv4 header and our echo id 0x1234 seq 7.
	inner := make([]byte, 28)
	inner[0] = 0x45
	copy(inner[20:], []byte{8, 0, 0, 0, 0x12, 0x34, 0, 7})
	msg := append([]byte{11, 0, 0, 0, 0, 0, 0, 0}, inner...)
	c := &conn{}
	if k, ok := c.match(msg, 0x1234, 7); !ok || k != matchExceeded {
		t.Fatalf("match = %v %v", k, ok)
	}
	if _, ok := c.match(msg, 0x1234, 8); ok {
		t.Fatal("matched another seq")
	}
}

func hasIPv6Loopback() bool {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		return false
	}
	ln.Close()
	return true
}
