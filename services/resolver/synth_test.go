package resolver

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// askFast sends name/qtype through the UDP fast path and returns the reply.
func askFast(t *testing.T, s *server, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	pkt, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	out, ok := s.fast(nil, pkt, netip.AddrFrom4([4]byte{127, 0, 0, 1}), nil, s.met.shared())
	if !ok {
		t.Fatalf("%s %s: not answered on the fast path", name, dns.TypeToString[qtype])
	}
	r := new(dns.Msg)
	if err := r.Unpack(out); err != nil {
		t.Fatalf("%s %s: reply does not parse: %v", name, dns.TypeToString[qtype], err)
	}
	return r
}

func rrStrings(rrs []dns.RR) []string {
	var s []string
	for _, rr := range rrs {
		s = append(s, strings.ToLower(rr.String()))
	}
	slices.Sort(s)
	return s
}

// TestSynthesizedAnswersOnTheFastPath: names without a precomputed answer
// (NXDOMAIN, NODATA at a wildcard, wildcard synthesis, referrals below a
// cut, other types at a CNAME) are answered on the UDP fast path with
// what lookup gives, the question's case echoed, the first time and when
// kept.
func TestSynthesizedAnswersOnTheFastPath(t *testing.T) {
	s := fuzzServer(t)
	for _, tt := range []struct {
		name  string
		qtype uint16
		rcode int
	}{
		{"Nope.Example.Test.", dns.TypeA, dns.RcodeNameError},
		{"host3.EXAMPLE.", dns.TypeMX, dns.RcodeSuccess},       // *.example. MX
		{"a.b.host3.example.", dns.TypeA, dns.RcodeSuccess},    // the wildcard, two labels down
		{"Host.Sub.Example.", dns.TypeA, dns.RcodeSuccess},     // referral
		{"alias.example.test.", dns.TypeTXT, dns.RcodeSuccess}, // CNAME, then the target's NODATA
		{"z.y.w.example.", dns.TypeA, dns.RcodeNameError},
	} {
		t.Run(tt.name, func(t *testing.T) {
			want := s.auth.Load().lookup(lowerASCII(tt.name), tt.qtype)
			for i := range 3 {
				r := askFast(t, s, tt.name, tt.qtype)
				if r.Rcode != tt.rcode || r.Rcode != want.Rcode || r.Authoritative != want.Authoritative {
					t.Fatalf("ask %d: rcode %s aa %v, want %s aa %v", i+1, dns.RcodeToString[r.Rcode], r.Authoritative,
						dns.RcodeToString[want.Rcode], want.Authoritative)
				}
				if r.Question[0].Name != tt.name {
					t.Fatalf("ask %d: question %q, want %q echoed", i+1, r.Question[0].Name, tt.name)
				}
				for _, sec := range []struct {
					name      string
					got, want []dns.RR
				}{{"answer", r.Answer, want.Answer}, {"authority", r.Ns, want.Ns}, {"additional", r.Extra, want.Extra}} {
					if g, w := rrStrings(sec.got), rrStrings(sec.want); !slices.Equal(g, w) {
						t.Fatalf("ask %d: %s %v, want %v", i+1, sec.name, g, w)
					}
				}
			}
		})
	}
}

// TestSynthesizedAnswersFollowZoneChanges: an answer kept for a name that
// did not exist is not served once the name exists (a new snapshot).
func TestSynthesizedAnswersFollowZoneChanges(t *testing.T) {
	s := fuzzServer(t)
	if r := askFast(t, s, "fresh.example.test.", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Fatalf("before: %v, want NXDOMAIN", r)
	}
	s.setManaged(1, []*registryv1.Record{{Name: "fresh.example.test.", Type: "A", Ttl: 60, Data: "192.0.2.99"}})
	r := askFast(t, s, "fresh.example.test.", dns.TypeA)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.99" {
		t.Fatalf("after the record was added: %v, want its A", r)
	}
}

// TestSynthesizedAnswersBounded: a flood of distinct missing names is
// answered (NXDOMAIN each) and keeps at most the bound.
func TestSynthesizedAnswersBounded(t *testing.T) {
	s := fuzzServer(t)
	n := 3 * synthShards * synthPerShard
	for i := range n {
		name := fmt.Sprintf("r%d.example.test.", i)
		if r := askFast(t, s, name, dns.TypeA); r.Rcode != dns.RcodeNameError {
			t.Fatalf("%s: %v, want NXDOMAIN", name, r)
		}
	}
	kept := 0
	a := s.auth.Load()
	for i := range a.synth.shards {
		kept += len(a.synth.shards[i].m)
	}
	if kept > synthShards*synthPerShard || kept < synthShards*synthPerShard/2 {
		t.Fatalf("%d answers kept after %d distinct names, want at most %d (and the store used)", kept, n, synthShards*synthPerShard)
	}
}
