package discovery

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/switchboard-net/switchboard/services/prober/internal/netnstest"
)

// TestDiscoveryAcrossNamespaces runs two nodes in two network namespaces
// joined by a veth pair: each finds the other by multicast announcement
// and by query, with the addresses filled in from the datagrams.
func TestDiscoveryAcrossNamespaces(t *testing.T) {
	l := netnstest.NewLink(t, false)
	cfg := Config{Group: "239.255.74.2:7403", Announce: 100 * time.Millisecond}
	var nodes [2]*Node
	for i := range nodes {
		var err error
		netnstest.Do(t, l.NS[i], func() {
			nodes[i], err = Listen(cfg, Self{Name: []string{"alpha", "beta"}[i], GRPCAddr: ":7400", BandwidthAddr: "[::]:7402"})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	for _, n := range nodes {
		go func() { _ = n.Run(ctx); done <- struct{}{} }()
	}
	defer func() { cancel(); <-done; <-done }()

	qctx, qcancel := context.WithTimeout(ctx, 10*time.Second)
	defer qcancel()
	for i, n := range nodes {
		other := l.Addr[1-i]
		var peers []Peer
		// Bounded: poll until the other node is heard or 10 s pass.
		for qctx.Err() == nil {
			var err error
			if peers, err = n.Query(qctx, 200*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			if len(peers) > 0 {
				break
			}
		}
		if len(peers) != 1 {
			t.Fatalf("node %d heard %+v", i, peers)
		}
		p := peers[0]
		want := []string{"alpha", "beta"}[1-i]
		if p.Name != want || p.Addr != other || p.GRPCAddr != netip.AddrPortFrom(other, 7400).String() ||
			p.BandwidthAddr != netip.AddrPortFrom(other, 7402).String() {
			t.Fatalf("node %d heard %+v, want %s at %s", i, p, want, other)
		}
	}
}

func TestBroadcastOnly(t *testing.T) {
	// A query reaches nodes by subnet broadcast even where the group is
	// not joined: broadcastOf must compute the subnet's address.
	l := netnstest.NewLink(t, false)
	var n *Node
	var err error
	netnstest.Do(t, l.NS[0], func() { n, err = Listen(Config{Group: "239.255.74.2:7403"}, Self{Name: "a"}) })
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	want := netip.AddrFrom4([4]byte{l.Addr[0].As4()[0], l.Addr[0].As4()[1], l.Addr[0].As4()[2], 255})
	found := false
	for _, b := range n.bcast {
		found = found || b == want
	}
	if !found {
		t.Fatalf("broadcast addresses %v lack %v", n.bcast, want)
	}
}

func TestParseMessage(t *testing.T) {
	for _, tt := range []struct {
		in string
		ok bool
	}{
		{`{"v":1,"t":"announce","id":"ab","name":"x","grpc":":7400","bw":"10.0.0.1:7402"}`, true},
		{`{"v":1,"t":"query","id":"ab"}`, true},
		{`{"v":2,"t":"query","id":"ab"}`, false},
		{`{"v":1,"t":"shout","id":"ab"}`, false},
		{`{"v":1,"t":"query","id":""}`, false},
		{`{"v":1,"t":"announce","id":"ab","grpc":"nope"}`, false},
		{`not json`, false},
	} {
		if _, err := parseMessage([]byte(tt.in)); (err == nil) != tt.ok {
			t.Errorf("parseMessage(%s) = %v, want ok=%v", tt.in, err, tt.ok)
		}
	}
}

func TestFill(t *testing.T) {
	src := netip.MustParseAddr("10.0.0.9")
	for in, want := range map[string]string{":7400": "10.0.0.9:7400", "0.0.0.0:1": "10.0.0.9:1", "[::]:2": "10.0.0.9:2", "1.2.3.4:5": "1.2.3.4:5", "": ""} {
		if got := fill(in, src); got != want {
			t.Errorf("fill(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzParseMessage(f *testing.F) {
	f.Add([]byte(`{"v":1,"t":"announce","id":"ab","name":"x","grpc":":7400"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseMessage(b)
		if err != nil {
			return
		}
		if m.ID == "" || len(b) > MaxMessage {
			t.Fatalf("accepted %+v", m)
		}
	})
}
