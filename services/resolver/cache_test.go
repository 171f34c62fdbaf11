package resolver

import (
	"fmt"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func cachedMsg(t *testing.T, name string) *prepared {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	m.Answer = []dns.RR{mustRR(name + " 60 IN A 192.0.2.1")}
	p, err := prepare(m, false)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCacheBoundAndSecondChance(t *testing.T) {
	c := newCache(2 * cacheShards) // two entries per shard
	now := time.Now()
	// Three names that land in one shard.
	var names []string
	for i := 0; len(names) < 3; i++ {
		n := fmt.Sprintf("n%d.example.net.", i)
		if len(names) == 0 || c.shard(n) == c.shard(names[0]) {
			names = append(names, n)
		}
	}
	a, b, d := names[0], names[1], names[2]
	c.put(a, dns.TypeA, cachedMsg(t, a), 60, false, now)
	c.put(b, dns.TypeA, cachedMsg(t, b), 60, false, now)
	if p, _ := c.get(a, dns.TypeA, now); p == nil { // a is used: it gets a second chance
		t.Fatal("a missing")
	}
	c.put(d, dns.TypeA, cachedMsg(t, d), 60, false, now)
	for _, tt := range []struct {
		name string
		want bool
	}{{a, true}, {b, false}, {d, true}} {
		if p, _ := c.get(tt.name, dns.TypeA, now); (p != nil) != tt.want {
			t.Errorf("%s cached = %v, want %v", tt.name, p != nil, tt.want)
		}
	}
	if c.entries.Load() != 2 || c.evictions.Load() != 1 {
		t.Errorf("entries %d evictions %d, want 2 and 1", c.entries.Load(), c.evictions.Load())
	}
	// Expiry and the elapsed seconds.
	if p, el := c.get(a, dns.TypeA, now.Add(30*time.Second)); p == nil || el != 30 {
		t.Errorf("after 30s: %v, elapsed %d", p != nil, el)
	}
	if p, _ := c.get(a, dns.TypeA, now.Add(61*time.Second)); p != nil {
		t.Error("entry served after its TTL")
	}
	if c.entries.Load() != 1 {
		t.Errorf("expired entry not removed: %d entries", c.entries.Load())
	}
}

func TestCacheTTL(t *testing.T) {
	soa := "example.net. 3600 IN SOA ns.example.net. h.example.net. 1 2 3 4 30"
	tests := []struct {
		name     string
		rcode    int
		answer   []string
		ns       []string
		ttl      uint32
		negative bool
		ok       bool
	}{
		{"positive: smallest TTL", dns.RcodeSuccess, []string{"a.example.net. 300 IN A 192.0.2.1", "a.example.net. 100 IN A 192.0.2.2"}, nil, 100, false, true},
		{"positive: capped at an hour", dns.RcodeSuccess, []string{"a.example.net. 86400 IN A 192.0.2.1"}, nil, 3600, false, true},
		{"NXDOMAIN: min(SOA TTL, MINIMUM)", dns.RcodeNameError, nil, []string{soa}, 30, true, true},
		{"NODATA with SOA", dns.RcodeSuccess, nil, []string{soa}, 30, true, true},
		{"NXDOMAIN without SOA is not cached", dns.RcodeNameError, nil, nil, 0, true, false},
		{"SERVFAIL is not cached", dns.RcodeServerFailure, nil, nil, 0, false, false},
		{"TTL 0 is not cached", dns.RcodeSuccess, []string{"a.example.net. 0 IN A 192.0.2.1"}, nil, 0, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := new(dns.Msg)
			m.Rcode = tt.rcode
			for _, s := range tt.answer {
				m.Answer = append(m.Answer, mustRR(s))
			}
			for _, s := range tt.ns {
				m.Ns = append(m.Ns, mustRR(s))
			}
			ttl, neg, ok := cacheTTL(m)
			if ttl != tt.ttl || neg != tt.negative || ok != tt.ok {
				t.Fatalf("cacheTTL = %d %v %v, want %d %v %v", ttl, neg, ok, tt.ttl, tt.negative, tt.ok)
			}
		})
	}
}
