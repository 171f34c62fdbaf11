package resolver

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// FuzzParseZone: the master-file reader never panics, and what it accepts
// builds into an authority snapshot or fails with an error.
func FuzzParseZone(f *testing.F) {
	f.Add("$ORIGIN example.test.\n@ 300 IN SOA ns h 1 2 3 4 5\nwww IN A 192.0.2.1\n")
	f.Add("@ IN SOA ns h 1 2 3 4 5\na IN CNAME b\nb IN MX 10 a\n")
	f.Add("example.test. 60 IN SOA . . 0 0 0 0 0\n*.example.test. 60 IN TXT \"x\"\n")
	f.Fuzz(func(t *testing.T, text string) {
		z, err := parseZone(strings.NewReader(text), "fuzz.zone")
		if err != nil {
			return
		}
		b := newAuthorityBuilder()
		b.addZone(z.soa, "fuzz")
		for _, rr := range z.rrs {
			_ = b.add(sourced{rr: rr, source: "fuzz"})
		}
		_, _ = b.build()
	})
}

// FuzzQuery: any packet through the UDP fast path and the full path never
// panics, and whatever is answered parses as a reply with the query's ID.
func FuzzQuery(f *testing.F) {
	s := fuzzServer(f)
	for _, name := range []string{"web.service.switchboard.", "WWW.example.test.", "nope.example.test.", "alias.example.test."} {
		for _, edns := range []bool{false, true} {
			m := new(dns.Msg)
			m.SetQuestion(name, dns.TypeA)
			if edns {
				m.SetEdns0(4096, true)
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
		if out, ok := s.fast(nil, pkt, client, nil); ok {
			check(out, "fast")
		}
		check(s.serveWire(pkt, netip.AddrFrom4([4]byte{192, 0, 2, 1}), true, false), "full")
	})
}

func fuzzServer(f *testing.F) *server {
	z, err := loadZoneFile("testdata/example.zone")
	if err != nil {
		f.Fatal(err)
	}
	s := newTestServer(z)
	return s
}
