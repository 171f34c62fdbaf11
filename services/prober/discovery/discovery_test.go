package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/switchboard-net/switchboard/pkg/netnstest"
)

// TestDiscoveryAcrossNamespaces runs two nodes in two network namespaces
// joined by a veth pair: each finds the other by multicast announcement
// and by query, with the addresses filled in from the datagrams.
func TestDiscoveryAcrossNamespaces(t *testing.T) {
	l := netnstest.NewLink(t, false)
	cfg := Config{Key: testKey, Group: "239.255.74.2:7403", Announce: 100 * time.Millisecond}
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
	netnstest.Do(t, l.NS[0], func() { n, err = Listen(Config{Key: testKey, Group: "239.255.74.2:7403"}, Self{Name: "a"}) })
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
		{`{"v":2,"t":"announce","id":"ab","ts":1,"name":"x","grpc":":7400","bw":"10.0.0.1:7402"}`, true},
		{`{"v":2,"t":"query","id":"ab","ts":1}`, true},
		{`{"v":1,"t":"query","id":"ab"}`, false},
		{`{"v":2,"t":"shout","id":"ab"}`, false},
		{`{"v":2,"t":"query","id":""}`, false},
		{`{"v":2,"t":"announce","id":"ab","grpc":"nope"}`, false},
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
	f.Add([]byte(`{"v":2,"t":"announce","id":"ab","ts":1,"name":"x","grpc":":7400"}`))
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

var testKey = []byte("0123456789abcdef-test-key")

// loopbackNode is a node reading a socket on 127.0.0.1 (no announcements,
// no multicast), reporting drops and new peers on channels.
func loopbackNode(t *testing.T) (n *Node, addr *net.UDPAddr, drops chan string, peers chan Peer) {
	t.Helper()
	drops, peers = make(chan string, 16), make(chan Peer, 16)
	n, err := newNode(Config{Key: testKey, OnDrop: func(r string) { drops <- r }, OnNewPeer: func(p Peer) { peers <- p }}, Self{Name: "here"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.lconn = c
	done := make(chan struct{})
	go func() { defer close(done); n.read(c) }()
	t.Cleanup(func() { c.Close(); <-done })
	return n, c.LocalAddr().(*net.UDPAddr), drops, peers
}

func body(t *testing.T, m message) []byte {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOnlyAuthenticFreshDatagramsAreHeard sends datagrams over real UDP
// sockets on loopback: a spoofed announcement (no MAC, the old unsigned
// format, another key, a tampered body, a stale or future time, a replay)
// is dropped and counted with its reason and never reaches the peer table;
// an authentic one is accepted.
func TestOnlyAuthenticFreshDatagramsAreHeard(t *testing.T) {
	n, addr, drops, peers := loopbackNode(t)
	client, err := net.DialUDP("udp4", nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	now := time.Now().UnixMilli()
	announce := func(id string, ts int64) message {
		return message{V: version, Type: typeAnnounce, ID: id, TS: ts, Name: id, GRPC: ":7400"}
	}
	valid := seal(testKey, body(t, announce("good", now)))
	tampered := seal(testKey, body(t, announce("tampered", now)))
	tampered[len(tampered)-macSize-3] ^= 1 // a byte of the body, under the MAC
	tests := []struct {
		name     string
		datagram []byte
		drop     string // "" = accepted
	}{
		{"no MAC", body(t, announce("nomac", now)), DropUnauthenticated},
		{"unsigned v1", []byte(`{"v":1,"t":"announce","id":"v1","name":"v1","grpc":":7400"}`), DropUnauthenticated},
		{"wrong key", seal([]byte("another-key-of-16-bytes"), body(t, announce("wrongkey", now))), DropUnauthenticated},
		{"tampered", tampered, DropUnauthenticated},
		{"stale", seal(testKey, body(t, announce("stale", now-int64(5*time.Minute/time.Millisecond)))), DropStale},
		{"future", seal(testKey, body(t, announce("future", now+int64(5*time.Minute/time.Millisecond)))), DropStale},
		{"authentic", valid, ""},
		{"replayed", valid, DropReplayed},
		{"older from the same sender", seal(testKey, body(t, announce("good", now-1))), DropReplayed},
		{"authentic junk", seal(testKey, []byte(`{"v":2,"t":"shout","id":"x","ts":1}`)), DropMalformed},
		{"newer from the same sender", seal(testKey, body(t, message{V: version, Type: typeAnnounce, ID: "good", TS: now + 1, Name: "good", GRPC: ":7401"})), ""},
	}
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for _, tt := range tests {
		if _, err := client.Write(tt.datagram); err != nil {
			t.Fatal(err)
		}
		// Each datagram ends in a drop or in the peer table; wait for
		// the one that shows what happened.
		if tt.drop != "" {
			select {
			case got := <-drops:
				if got != tt.drop {
					t.Errorf("%s: dropped as %q, want %q", tt.name, got, tt.drop)
				}
			case p := <-peers:
				t.Errorf("%s: accepted as %+v, want dropped as %q", tt.name, p, tt.drop)
			case <-timeout.C:
				t.Fatalf("%s: neither dropped nor accepted", tt.name)
			}
			continue
		}
		if tt.name == "newer from the same sender" {
			// A known peer is updated, not new, so nothing is reported:
			// send a marker the node drops and wait for that drop; the
			// socket is read in order, so the update was handled first.
			if _, err := client.Write(seal(testKey, []byte(`{"v":2,"t":"marker"}`))); err != nil {
				t.Fatal(err)
			}
			select {
			case got := <-drops:
				if got != DropMalformed {
					t.Fatalf("%s: dropped as %q", tt.name, got)
				}
			case <-timeout.C:
				t.Fatalf("%s: marker not dropped", tt.name)
			}
			if got := n.Peers(); len(got) != 1 || got[0].GRPCAddr != "127.0.0.1:7401" {
				t.Fatalf("%s: peer table %+v, want the update", tt.name, got)
			}
			continue
		}
		select {
		case p := <-peers:
			if p.Name != "good" || p.Addr != netip.MustParseAddr("127.0.0.1") || p.GRPCAddr != "127.0.0.1:7400" {
				t.Errorf("%s: accepted %+v", tt.name, p)
			}
		case r := <-drops:
			t.Fatalf("%s: dropped as %q, want accepted", tt.name, r)
		case <-timeout.C:
			t.Fatalf("%s: neither dropped nor accepted", tt.name)
		}
	}
	if got := n.Peers(); len(got) != 1 || got[0].Name != "good" {
		t.Fatalf("peer table %+v, want only the authentic sender", got)
	}
}

// TestQueriesAnsweredOnlyWhenAuthentic: an unauthenticated query is
// dropped (not answered: a node is neither an oracle nor a reflector for
// strangers); an authentic one gets an authentic answer.
func TestQueriesAnsweredOnlyWhenAuthentic(t *testing.T) {
	_, addr, drops, _ := loopbackNode(t)
	client, err := net.DialUDP("udp4", nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	q := message{V: version, Type: typeQuery, ID: "asker", TS: time.Now().UnixMilli()}
	if _, err := client.Write(body(t, q)); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-drops:
		if r != DropUnauthenticated {
			t.Fatalf("unsigned query dropped as %q", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("unsigned query not dropped")
	}
	q.TS++
	if _, err := client.Write(seal(testKey, body(t, q))); err != nil {
		t.Fatal(err)
	}
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, MaxMessage+1)
	k, err := client.Read(b)
	if err != nil {
		t.Fatal(err)
	}
	raw, ok := open(testKey, b[:k])
	if !ok {
		t.Fatalf("answer %q does not authenticate", b[:k])
	}
	m, err := parseMessage(raw)
	if err != nil || m.Type != typeAnswer || m.Name != "here" {
		t.Fatalf("answer %+v, %v", m, err)
	}
	// The unsigned query was dropped before the answering code (its drop
	// was seen above); nothing but the one answer comes back.
	_ = client.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := client.Read(b); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a second datagram came back: %v", err)
	}
}

func TestKeyRequired(t *testing.T) {
	for _, key := range [][]byte{nil, []byte("short")} {
		if _, err := Listen(Config{Key: key}, Self{Name: "x"}); err == nil {
			t.Errorf("Listen with a %d-byte key succeeded", len(key))
		}
	}
}
