package bandwidth

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

func startServer(t *testing.T) string {
	t.Helper()
	return startServerAllow(t, nil)
}

func startServerAllow(t *testing.T, allow func(netip.Addr) bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	pc, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer(ln, pc, nil, allow).Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return ln.Addr().String()
}

func TestTCPBothDirections(t *testing.T) {
	addr := startServer(t)
	for _, rev := range []bool{false, true} {
		r, err := Run(context.Background(), nil, addr, Options{Protocol: "tcp", Duration: 300 * time.Millisecond, Reverse: rev})
		if err != nil {
			t.Fatalf("reverse=%v: %v", rev, err)
		}
		if r.Bytes == 0 || r.BitsPerSecond < 10e6 || r.Duration <= 0 {
			t.Fatalf("reverse=%v: %+v", rev, r)
		}
	}
}

func TestUDPBothDirections(t *testing.T) {
	addr := startServer(t)
	for _, rev := range []bool{false, true} {
		var progress int
		r, err := Run(context.Background(), nil, addr, Options{Protocol: "udp", Duration: 500 * time.Millisecond, Reverse: rev,
			Rate: 10_000_000, PacketSize: 1000, OnProgress: func(string) { progress++ }})
		if err != nil {
			t.Fatalf("reverse=%v: %v", rev, err)
		}
		// 10 Mbit/s of 1000-byte datagrams for 0.5 s is about 625.
		if r.PacketsSent < 400 || r.PacketsSent > 800 {
			t.Fatalf("reverse=%v: sent %d datagrams: %+v", rev, r.PacketsSent, r)
		}
		// Loopback at 10 Mbit/s loses nothing unless the host is starved.
		if r.LossPercent > 20 || r.Bytes == 0 {
			t.Fatalf("reverse=%v: %+v", rev, r)
		}
		if !rev && progress == 0 {
			t.Errorf("no UDP acknowledgements seen")
		}
	}
}

func TestServerRefusesClientsOutsideTheAllowlist(t *testing.T) {
	addr := startServerAllow(t, func(netip.Addr) bool { return false })
	_, err := Run(context.Background(), nil, addr, Options{Protocol: "udp", Reverse: true, Duration: time.Second})
	if err == nil || !strings.Contains(err.Error(), "allowlist") {
		t.Fatalf("Run = %v, want a refusal", err)
	}
}

func TestRequestValidation(t *testing.T) {
	good := request{mode: modeUDPUp, duration: time.Second, rate: 1e6, size: 1200, token: 7}
	if _, err := parseRequest(good.marshal()); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []request{
		{mode: 9, duration: time.Second},
		{mode: modeTCPUp, duration: 0},
		{mode: modeTCPUp, duration: 2 * MaxDuration},
		{mode: modeUDPUp, duration: time.Second, rate: 1e6, size: 10},
		{mode: modeUDPUp, duration: time.Second, rate: 0, size: 1200},
	} {
		if _, err := parseRequest(bad.marshal()); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if _, err := parseRequest([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n12345")); err == nil {
		t.Error("HTTP accepted")
	}
}

func TestJitterAndReorder(t *testing.T) {
	var s udpStats
	t0 := time.Unix(100, 0)
	// Sent every 10 ms; arrivals 10, 12 (late), then seq 3 before 2.
	s.add(0, t0.UnixNano(), 100, t0.Add(time.Millisecond))
	s.add(1, t0.Add(10*time.Millisecond).UnixNano(), 100, t0.Add(13*time.Millisecond))
	s.add(3, t0.Add(30*time.Millisecond).UnixNano(), 100, t0.Add(31*time.Millisecond))
	s.add(2, t0.Add(20*time.Millisecond).UnixNano(), 100, t0.Add(32*time.Millisecond))
	if s.received != 4 || s.reordered != 1 || s.highest != 3 {
		t.Fatalf("%+v", s)
	}
	if s.jitter <= 0 {
		t.Fatal("no jitter")
	}
}

func FuzzParseRequest(f *testing.F) {
	f.Add(request{mode: modeUDPUp, duration: time.Second, rate: 1e6, size: 1200}.marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseRequest(b)
		if err != nil {
			return
		}
		if r.duration > MaxDuration || r.mode < modeTCPUp || r.mode > modeUDPDown {
			t.Fatalf("accepted %+v", r)
		}
	})
}
