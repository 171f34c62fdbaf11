package resolver

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// FuzzParseZone: the master-file reader never panics, with or without an
// origin for the file; what it accepts builds into an authority snapshot
// (or fails with an error), and lookup of every name in it, of names
// below them and of a few types, gives a reply that packs, with each
// record of the answer once (no loop repeats a CNAME).
func FuzzParseZone(f *testing.F) {
	f.Add("$ORIGIN example.test.\n@ 300 IN SOA ns h 1 2 3 4 5\nwww IN A 192.0.2.1\n", "")
	f.Add("@ IN SOA ns h 1 2 3 4 5\na IN CNAME b\nb IN MX 10 a\n", "example.test")
	f.Add("example.test. 60 IN SOA . . 0 0 0 0 0\n*.example.test. 60 IN TXT \"x\"\n", "")
	f.Add("@ SOA ns h 1 2 3 4 5\n* A 192.0.2.1\nx.y A 192.0.2.2\nsub NS ns.sub\nns.sub A 192.0.2.3\n"+
		"l1 CNAME l2\nl2 CNAME l1\n*.c CNAME x.c\nm MX 1 a.sub\nm MX 2 q.w\n*.w AAAA ::1\n", "example.")
	f.Fuzz(func(t *testing.T, text, origin string) {
		src := zoneSource{path: "fuzz.zone"}
		if origin != "" {
			var err error
			if src, err = parseZoneSource("fuzz.zone=" + origin); err != nil {
				return
			}
		}
		z, err := parseZone([]byte(text), src)
		if err != nil || len(z.rrs) > 500 {
			return // ($GENERATE makes big zones: slow, not more interesting)
		}
		b := newAuthorityBuilder()
		in := b.addZone(z.soa, "fuzz")
		for _, rr := range z.rrs {
			_ = b.add(sourced{rr: rr, source: "fuzz"}, in)
		}
		a, err := b.build()
		if err != nil {
			return
		}
		for name := range a.nodes {
			for _, qname := range []string{name, "x." + name, "a.b." + name} {
				if _, ok := dns.IsDomainName(qname); !ok || len(qname) > 255 {
					continue
				}
				for _, qtype := range []uint16{dns.TypeA, dns.TypeMX, dns.TypeCNAME, dns.TypeANY, dns.TypeDS, dns.TypeNS} {
					m := a.lookup(qname, qtype)
					if _, err := m.Pack(); err != nil {
						t.Fatalf("%s %s: answer does not pack: %v", qname, dns.TypeToString[qtype], err)
					}
					seen := map[string]bool{}
					for _, rr := range m.Answer {
						if k := strings.ToLower(rr.String()); seen[k] {
							t.Fatalf("%s %s: %s twice in the answer", qname, dns.TypeToString[qtype], rr)
						} else {
							seen[k] = true
						}
					}
				}
			}
		}
	})
}

// FuzzQuery: any packet through the UDP fast path and the full path never
// panics, and whatever is answered parses as a reply with the query's ID.
func FuzzQuery(f *testing.F) {
	s := fuzzServer(f)
	for _, name := range []string{"web.service.switchboard.", "WWW.example.test.", "nope.example.test.", "alias.example.test.",
		"Host3.example.", "host.sub.example.", "ns.sub.example.", "loop1.example.", "a.cnl.example.", "z.y.w.example.", "many.example."} {
		for _, edns := range []bool{false, true} {
			m := new(dns.Msg)
			m.SetQuestion(name, dns.TypeA)
			if edns {
				m.SetEdns0(4096, true)
				m.Question[0].Qclass = dns.ClassANY
			}
			pkt, _ := m.Pack()
			f.Add(pkt)
		}
	}
	f.Add([]byte{0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0})
	client := netip.AddrFrom4([4]byte{127, 0, 0, 1})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		if len(pkt) < hdrLen {
			return
		}
		check := func(out []byte, path string) {
			if out == nil {
				return
			}
			r := new(dns.Msg)
			if err := r.Unpack(out); err != nil {
				t.Fatalf("%s path: reply does not parse: %v", path, err)
			}
			if r.Id != uint16(pkt[0])<<8|uint16(pkt[1]) || !r.Response {
				t.Fatalf("%s path: reply id %d response %v", path, r.Id, r.Response)
			}
		}
		if out, ok := s.fast(nil, pkt, client, nil, s.met.shared()); ok {
			check(out, "fast")
			// The full path gives the same answer (A/AAAA order aside).
			if want := s.serveWire(pkt, client, true, false); !sameReply(out, want) {
				t.Fatalf("fast path answered\n%v\nfull path\n%v", unpacked(out), unpacked(want))
			}
		}
		check(s.serveWire(pkt, netip.AddrFrom4([4]byte{192, 0, 2, 1}), true, false), "full")
	})
}

// unpacked is a packed reply for a message, or why it does not unpack.
func unpacked(b []byte) string {
	m := new(dns.Msg)
	if err := m.Unpack(b); err != nil {
		return err.Error()
	}
	return m.String()
}

// sameReply reports whether two packed replies say the same: header,
// question, and each section's records in any order.
func sameReply(a, b []byte) bool {
	ma, mb := new(dns.Msg), new(dns.Msg)
	if ma.Unpack(a) != nil || mb.Unpack(b) != nil {
		return false
	}
	if ma.MsgHdr != mb.MsgHdr || !slices.Equal(ma.Question, mb.Question) {
		return false
	}
	for _, sec := range [][2][]dns.RR{{ma.Answer, mb.Answer}, {ma.Ns, mb.Ns}, {ma.Extra, mb.Extra}} {
		var x, y []string
		for _, rr := range sec[0] {
			x = append(x, rr.String())
		}
		for _, rr := range sec[1] {
			y = append(y, rr.String())
		}
		slices.Sort(x)
		slices.Sort(y)
		if !slices.Equal(x, y) {
			return false
		}
	}
	return true
}

func fuzzServer(f testing.TB) *server {
	var zs []*staticZone
	for _, path := range []string{"testdata/example.zone", "testdata/knot/example.zone"} {
		z, err := loadZoneFile(zoneSource{path: path})
		if err != nil {
			f.Fatal(err)
		}
		zs = append(zs, z)
	}
	return newTestServer(zs...)
}
