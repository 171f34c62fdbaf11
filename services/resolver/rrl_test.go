package resolver

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestRRLExempt(t *testing.T) {
	for _, tt := range []struct {
		addr   string
		exempt bool
	}{
		{"127.0.0.1", true},
		{"127.0.0.2", true},
		{"127.255.255.254", true},
		{"::1", true},
		{"::ffff:127.0.0.1", true},
		{"192.0.2.1", false},
		{"10.0.0.1", false},
		{"0.0.0.0", false},
		{"2001:db8::1", false},
		{"::ffff:192.0.2.1", false},
		{"fe80::1", false},
		{"::", false},
	} {
		if got := rrlExempt(netip.MustParseAddr(tt.addr)); got != tt.exempt {
			t.Errorf("rrlExempt(%s) = %v, want %v", tt.addr, got, tt.exempt)
		}
	}
}

// TestRRLDefaults: rate limiting is on unless --rrl-rate=0, at 20
// responses/s per prefix, slipping every second limited response, with
// loopback clients exempt.
func TestRRLDefaults(t *testing.T) {
	for _, tt := range []struct {
		args       []string
		rate       float64
		exempt, on bool
	}{
		{nil, 20, true, true},
		{[]string{"--rrl-rate=0"}, 0, true, false},
		{[]string{"--rrl-rate=5", "--rrl-exempt-loopback=false"}, 5, false, true},
	} {
		cfg := &Config{}
		fs := flag.NewFlagSet("resolver", flag.ContinueOnError)
		cfg.RegisterFlags(fs)
		if err := fs.Parse(tt.args); err != nil {
			t.Fatal(err)
		}
		allow, err := cfg.validate()
		if err != nil {
			t.Fatalf("%v: %v", tt.args, err)
		}
		if cfg.RRLRate != tt.rate || cfg.RRLExemptLoopback != tt.exempt {
			t.Errorf("%v: rate %v, exempt loopback %v; want %v, %v", tt.args, cfg.RRLRate, cfg.RRLExemptLoopback, tt.rate, tt.exempt)
		}
		s := newServer(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil)), cfg, nil, allow, nil)
		if (s.rrl != nil) != tt.on {
			t.Fatalf("%v: limiter %v, want on: %v", tt.args, s.rrl, tt.on)
		}
		if s.rrl != nil && (s.rrl.rate != tt.rate || s.rrl.exemptLoopback != tt.exempt) {
			t.Errorf("%v: limiter rate %v, exempt %v", tt.args, s.rrl.rate, s.rrl.exemptLoopback)
		}
	}
	if rrlSlipEvery != 2 {
		t.Errorf("slip %d, want 2 (every second limited response)", rrlSlipEvery)
	}
}

// TestLimiterLimitsNonLoopback feeds the default limiter 100 responses
// per client in one instant: non-loopback prefixes get their burst (20),
// then every second response slips and the rest drop; loopback is exempt.
func TestLimiterLimitsNonLoopback(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	for _, tt := range []struct {
		addr          string
		exemptLoop    bool
		limited       bool
		samePrefixAs  string // shares the bucket: limited at once afterwards
		otherPrefixAs string // its own bucket: not limited afterwards
	}{
		{"192.0.2.1", true, true, "192.0.2.200", "192.0.3.1"},
		{"2001:db8::1", true, true, "2001:db8:0:ff::1", "2001:db8:0:100::1"},
		{"::ffff:192.0.2.1", true, true, "192.0.2.9", "198.51.100.1"},
		{"127.0.0.1", true, false, "", ""},
		{"::1", true, false, "", ""},
		{"127.0.0.1", false, true, "127.0.0.9", "127.0.1.1"},
	} {
		l := newLimiter(defaultRRLRate, tt.exemptLoop)
		var got [3]int
		for range 100 {
			got[l.check(netip.MustParseAddr(tt.addr), now)]++
		}
		want := [3]int{rrlSend: 100}
		if tt.limited {
			want = [3]int{rrlSend: defaultRRLRate, rrlSlip: 40, rrlDrop: 40}
		}
		if got != want {
			t.Errorf("%s (exempt loopback %v): send/slip/drop %v, want %v", tt.addr, tt.exemptLoop, got, want)
		}
		if !tt.limited {
			continue
		}
		if a := l.check(netip.MustParseAddr(tt.samePrefixAs), now); a == rrlSend {
			t.Errorf("%s after %s: sent, want limited (same prefix)", tt.samePrefixAs, tt.addr)
		}
		if a := l.check(netip.MustParseAddr(tt.otherPrefixAs), now); a != rrlSend {
			t.Errorf("%s after %s: %v, want sent (other prefix)", tt.otherPrefixAs, tt.addr, a)
		}
		if a := l.check(netip.MustParseAddr(tt.addr), now.Add(time.Second)); a != rrlSend {
			t.Errorf("%s a second later: %v, want sent (refilled)", tt.addr, a)
		}
		if l.limited.Load() != 81 {
			t.Errorf("%s: limited counter %d, want 81", tt.addr, l.limited.Load())
		}
	}
}

// TestDefaultRRLLeavesLoopbackAlone: with the default flags (RRL on) a
// loopback client's burst of 100 queries gets 100 full answers over UDP.
func TestDefaultRRLLeavesLoopbackAlone(t *testing.T) {
	e := startEnv(t)
	c, err := net.Dial("udp", e.dns)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const sent = 100
	m := q("www.example.test.", dns.TypeA)
	for i := range sent {
		m.Id = uint16(i + 1)
		wire, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(wire); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 1500)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := range sent {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("after %d answers: %v", i, err)
		}
		r := new(dns.Msg)
		if err := r.Unpack(buf[:n]); err != nil {
			t.Fatal(err)
		}
		if r.Truncated || len(r.Answer) != 1 {
			t.Fatalf("answer %d: %v, want a full answer", i+1, r)
		}
	}
}
