package ping

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/switchboard-net/switchboard/pkg/netnstest"
)

// TestPingReportsLoss drops every second echo reply with an nftables rule
// in the far namespace of a veth pair: the summary shows exactly 50% loss.
// (An nft rule rather than netem: it is deterministic, and needs no
// sch_netem module.)
func TestPingReportsLoss(t *testing.T) {
	l := netnstest.NewLink(t, false)
	netnstest.DropEveryOther(t, l.NS[1], "icmp type echo-reply")
	var res *Result
	var err error
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	netnstest.Do(t, l.NS[0], func() {
		res, err = Ping(ctx, l.Addr[1], Options{Count: 40, Interval: 10 * time.Millisecond, Timeout: 300 * time.Millisecond})
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 40 || res.Received != 20 || res.Loss() != 50 {
		t.Fatalf("sent %d received %d (loss %.0f%%) with 50%% of replies dropped", res.Sent, res.Received, res.Loss())
	}
	lost := 0
	for _, r := range res.Replies {
		if !r.Received {
			lost++
			if r.RTT != 0 {
				t.Errorf("lost reply %d has RTT %v", r.Seq, r.RTT)
			}
		}
	}
	if lost != res.Sent-res.Received {
		t.Fatalf("%d replies marked lost, summary says %d", lost, res.Sent-res.Received)
	}
	t.Logf("loss %.1f%% (%d/%d), rtt min/avg/max/mdev %v/%v/%v/%v", res.Loss(), res.Received, res.Sent, res.Min, res.Avg, res.Max, res.Mdev)
}

// TestPingUnreachable pings an address on the link that nobody owns.
func TestPingUnreachable(t *testing.T) {
	l := netnstest.NewLink(t, false)
	a := l.Addr[1].As4()
	a[3] = 77
	var res *Result
	var err error
	netnstest.Do(t, l.NS[0], func() {
		res, err = Ping(context.Background(), netip.AddrFrom4(a), Options{Count: 3, Interval: 50 * time.Millisecond, Timeout: 200 * time.Millisecond})
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 3 || res.Received != 0 || res.Loss() != 100 {
		t.Fatalf("sent %d received %d loss %.0f%%", res.Sent, res.Received, res.Loss())
	}
}

// TestTraceThroughRouter traces across a namespace that routes between
// two links: two hops, the router then the destination.
func TestTraceThroughRouter(t *testing.T) {
	a := netnstest.NewLink(t, false) // a.NS[0] client, a.NS[1] router
	b := netnstest.NewLink(t, false) // b.NS[0] (moved into the router), b.NS[1] destination
	// Put b's first end into a's router namespace.
	b.Exec(t, 0, "ip", "link", "set", b.Dev[0], "netns", a.NS[1])
	netnstest.Run(t, "ip", "netns", "exec", a.NS[1], "ip", "addr", "add", b.Addr[0].String()+"/24", "dev", b.Dev[0])
	netnstest.Run(t, "ip", "netns", "exec", a.NS[1], "ip", "link", "set", b.Dev[0], "up")
	netnstest.Run(t, "ip", "netns", "exec", a.NS[1], "sysctl", "-qw", "net.ipv4.ip_forward=1")
	a.Exec(t, 0, "ip", "route", "add", b.Addr[1].String(), "via", a.Addr[1].String())
	b.Exec(t, 1, "ip", "route", "add", a.Addr[0].String(), "via", b.Addr[0].String())

	var hops []Hop
	var reached bool
	var err error
	netnstest.Do(t, a.NS[0], func() {
		hops, reached, err = Trace(context.Background(), b.Addr[1], TraceOptions{MaxHops: 5, Probes: 2, Timeout: 500 * time.Millisecond})
	})
	if err != nil {
		t.Fatal(err)
	}
	if !reached || len(hops) != 2 || hops[0].Addr != a.Addr[1] || hops[0].Reached || hops[1].Addr != b.Addr[1] || !hops[1].Reached {
		t.Fatalf("reached %v hops %+v; want %v then %v", reached, hops, a.Addr[1], b.Addr[1])
	}
}

// TestPingDatagramSocket allows unprivileged ICMP in a fresh namespace
// (net.ipv4.ping_group_range is per namespace) so that Ping takes the
// datagram-socket path, for IPv4 and IPv6.
func TestPingDatagramSocket(t *testing.T) {
	l := netnstest.NewLink(t, false)
	l.Exec(t, 0, "sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647")
	for _, a := range []string{"127.0.0.1", "::1"} {
		var c *conn
		var res *Result
		var err, perr error
		netnstest.Do(t, l.NS[0], func() {
			if c, err = open(netip.MustParseAddr(a).Is6(), false); err == nil {
				c.close()
			}
			res, perr = Ping(context.Background(), netip.MustParseAddr(a), Options{Count: 3, Interval: 10 * time.Millisecond})
		})
		if err != nil || perr != nil {
			t.Fatalf("%s: open %v, ping %v", a, err, perr)
		}
		if !c.dgram {
			t.Fatalf("%s: a raw socket was used although datagram sockets are allowed", a)
		}
		if res.Received != 3 || res.Replies[0].TTL == 0 || res.Replies[0].From != netip.MustParseAddr(a) {
			t.Fatalf("%s: %+v", a, res)
		}
	}
}
