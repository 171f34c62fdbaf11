package resolver

import (
	"testing"

	"github.com/miekg/dns"
)

func preparedA(t *testing.T, weights ...uint32) *prepared {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion("web.service.switchboard.", dns.TypeA)
	m.Authoritative = true
	for i := range weights {
		m.Answer = append(m.Answer, &dns.A{Hdr: hdr("web.service.switchboard.", dns.TypeA, 60), A: []byte{10, 0, 0, byte(i + 1)}})
	}
	p, err := prepare(m, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(weights) > 1 && (p.rrN != len(weights) || p.rrLen != 16) {
		t.Fatalf("rotation not detected: rrN %d rrLen %d", p.rrN, p.rrLen)
	}
	if len(weights) > 0 && !allEqual(weights) {
		var sum uint32
		for _, w := range weights {
			sum += w
			p.cumWeights = append(p.cumWeights, sum)
		}
	}
	return p
}

func TestAppendToPatches(t *testing.T) {
	p := preparedA(t, 1, 1, 1)
	tests := []struct {
		name    string
		rep     reply
		tc      bool
		answers int
		opt     bool
	}{
		{"plain", reply{id: 7, rd: true, qname: "WEB.service.Switchboard.", qtype: dns.TypeA, maxSize: 512}, false, 3, false},
		{"EDNS adds OPT", reply{id: 8, qname: "web.service.switchboard.", qtype: dns.TypeA, maxSize: 1232, edns: true, do: true}, false, 3, true},
		{"too big: TC, no answers", reply{id: 9, qname: "web.service.switchboard.", qtype: dns.TypeA, maxSize: 60}, true, 0, false},
		{"too big with EDNS keeps OPT", reply{id: 10, qname: "web.service.switchboard.", qtype: dns.TypeA, maxSize: 60, edns: true}, true, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := p.appendTo(nil, &tt.rep)
			if err != nil {
				t.Fatal(err)
			}
			m := new(dns.Msg)
			if err := m.Unpack(out); err != nil {
				t.Fatal(err)
			}
			if m.Id != tt.rep.id || m.RecursionDesired != tt.rep.rd || !m.Authoritative || m.Truncated != tt.tc || len(m.Answer) != tt.answers {
				t.Fatalf("reply %v", m)
			}
			if m.Question[0].Name != tt.rep.qname {
				t.Errorf("question %q, want the query's case %q", m.Question[0].Name, tt.rep.qname)
			}
			for _, rr := range m.Answer {
				if rr.Header().Name != tt.rep.qname {
					t.Errorf("owner %q, want %q", rr.Header().Name, tt.rep.qname)
				}
			}
			opt := m.IsEdns0()
			if (opt != nil) != tt.opt || opt != nil && (opt.UDPSize() != advertisedUDPSize || opt.Do() != tt.rep.do) {
				t.Errorf("OPT %v, want present=%v", opt, tt.opt)
			}
		})
	}
}

func TestAppendToCountsDownTTLs(t *testing.T) {
	p := preparedA(t, 1)
	out, _ := p.appendTo(nil, &reply{qname: "web.service.switchboard.", qtype: dns.TypeA, maxSize: 512, elapsed: 25})
	m := new(dns.Msg)
	if err := m.Unpack(out); err != nil {
		t.Fatal(err)
	}
	if got := m.Answer[0].Header().Ttl; got != 35 {
		t.Fatalf("TTL %d after 25 s of 60, want 35", got)
	}
	out, _ = p.appendTo(nil, &reply{qname: "web.service.switchboard.", qtype: dns.TypeA, maxSize: 512, elapsed: 90})
	_ = m.Unpack(out)
	if got := m.Answer[0].Header().Ttl; got != 0 {
		t.Fatalf("TTL %d past expiry, want 0", got)
	}
}

func TestRotationFollowsWeights(t *testing.T) {
	tests := []struct {
		weights []uint32
		rounds  int
		want    map[byte]int // first address octet -> times first
	}{
		{[]uint32{1, 1, 1}, 9, map[byte]int{1: 3, 2: 3, 3: 3}},
		{[]uint32{1, 3}, 8, map[byte]int{1: 2, 2: 6}},
		{[]uint32{5, 0 + 1, 4}, 10, map[byte]int{1: 5, 2: 1, 3: 4}},
	}
	for _, tt := range tests {
		p := preparedA(t, tt.weights...)
		got := map[byte]int{}
		for range tt.rounds {
			out, err := p.appendTo(nil, &reply{qname: "web.service.switchboard.", qtype: dns.TypeA, maxSize: 512})
			if err != nil {
				t.Fatal(err)
			}
			m := new(dns.Msg)
			if err := m.Unpack(out); err != nil {
				t.Fatal(err)
			}
			if len(m.Answer) != len(tt.weights) {
				t.Fatalf("rotation lost records: %v", m.Answer)
			}
			got[m.Answer[0].(*dns.A).A[3]]++
		}
		for k, v := range tt.want {
			if got[k] != v {
				t.Errorf("weights %v: first-record counts %v, want %v", tt.weights, got, tt.want)
				break
			}
		}
	}
}
