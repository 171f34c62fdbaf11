package resolver

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// lookupServer serves the Knot comparison zone (RFC 4592's example and
// more), testdata/lookup/other.test.zone and the service zone of
// newTestServer.
func lookupServer(t testing.TB) *server {
	t.Helper()
	var zs []*staticZone
	for _, v := range []string{"testdata/knot/example.zone", "testdata/lookup/other.test.zone=other.test"} {
		src, err := parseZoneSource(v)
		if err != nil {
			t.Fatal(err)
		}
		z, err := loadZoneFile(src)
		if err != nil {
			t.Fatal(err)
		}
		zs = append(zs, z)
	}
	return newTestServer(zs...)
}

// lookupCase is a question and the whole expected answer, CoreDNS-style:
// records in master-file form, TTL included, in any order.
type lookupCase struct {
	qname  string
	qtype  uint16
	rcode  int
	noAA   bool // a referral
	answer []string
	ns     []string
	extra  []string
}

const (
	exampleNegSOA = "example. 300 IN SOA ns1.example. hostmaster.example. 2026120201 3600 600 86400 300"
	otherNegSOA   = "other.test. 120 IN SOA ns.other.test. hostmaster.other.test. 7 3600 600 86400 120"
)

var (
	host1Addrs = []string{"host1.example. 3600 IN A 192.0.2.1", "host1.example. 3600 IN AAAA 2001:db8::1"}
	subNS      = []string{"sub.example. 3600 IN NS ns.sub.example.", "sub.example. 3600 IN NS ns1.example.",
		"sub.example. 3600 IN NS ns2.example.net."}
	subGlue = []string{"ns.sub.example. 3600 IN A 192.0.2.100", "ns.sub.example. 3600 IN AAAA 2001:db8::100",
		"ns1.example. 3600 IN A 192.0.2.53", "ns1.example. 3600 IN AAAA 2001:db8::53"}
	aliasChain = []string{"alias.example. 3600 IN CNAME alias2.example.", "alias2.example. 3600 IN CNAME host1.example."}
)

func cat(parts ...[]string) []string { return slices.Concat(parts...) }

var lookupCases = []lookupCase{
	// RFC 4592 §2.2.1.
	{qname: "host3.example.", qtype: dns.TypeMX, answer: []string{"host3.example. 3600 IN MX 10 host1.example."}, extra: host1Addrs},
	{qname: "host3.example.", qtype: dns.TypeA, ns: []string{exampleNegSOA}},
	{qname: "foo.bar.example.", qtype: dns.TypeTXT, answer: []string{`foo.bar.example. 3600 IN TXT "this is a wildcard"`}},
	{qname: "host1.example.", qtype: dns.TypeMX, ns: []string{exampleNegSOA}},
	{qname: "sub.*.example.", qtype: dns.TypeMX, ns: []string{exampleNegSOA}},
	{qname: "_telnet._tcp.host1.example.", qtype: dns.TypeSRV, rcode: dns.RcodeNameError, ns: []string{exampleNegSOA}},
	{qname: "host.subdel.example.", qtype: dns.TypeA, noAA: true,
		ns: []string{"subdel.example. 3600 IN NS ns.example.com.", "subdel.example. 3600 IN NS ns.example.net."}},
	{qname: "ghost.*.example.", qtype: dns.TypeMX, rcode: dns.RcodeNameError, ns: []string{exampleNegSOA}},
	// Wildcards: the literal name, ANY, empty non-terminals.
	{qname: "*.example.", qtype: dns.TypeTXT, answer: []string{`*.example. 3600 IN TXT "this is a wildcard"`}},
	{qname: "host3.example.", qtype: dns.TypeANY, answer: []string{"host3.example. 3600 IN MX 10 host1.example."}, extra: host1Addrs},
	{qname: "host2.example.", qtype: dns.TypeA, ns: []string{exampleNegSOA}},
	{qname: "a.b.w.example.", qtype: dns.TypeA, answer: []string{"a.b.w.example. 3600 IN A 192.0.2.7"}},
	{qname: "y.w.example.", qtype: dns.TypeA, ns: []string{exampleNegSOA}},
	{qname: "z.y.w.example.", qtype: dns.TypeA, rcode: dns.RcodeNameError, ns: []string{exampleNegSOA}},
	// Cuts: referral at, below and through CNAMEs; DS from the parent.
	{qname: "sub.example.", qtype: dns.TypeNS, noAA: true, ns: subNS, extra: subGlue},
	{qname: "ns.sub.example.", qtype: dns.TypeA, noAA: true, ns: subNS, extra: subGlue},
	{qname: "a.deep.ns.sub.example.", qtype: dns.TypeTXT, noAA: true, ns: subNS, extra: subGlue},
	{qname: "sub.example.", qtype: dns.TypeDS, ns: []string{exampleNegSOA}},
	{qname: "subdel.example.", qtype: dns.TypeDS,
		answer: []string{"subdel.example. 3600 IN DS 60485 5 1 2BB183AF5F22588179A53B0A98631FAD1A292118"}},
	{qname: "todeleg.example.", qtype: dns.TypeA, answer: []string{"todeleg.example. 3600 IN CNAME host.sub.example."},
		ns: subNS, extra: subGlue},
	// CNAMEs: chains, loops, limits.
	{qname: "alias.example.", qtype: dns.TypeAAAA, answer: cat(aliasChain, []string{"host1.example. 3600 IN AAAA 2001:db8::1"})},
	{qname: "alias.example.", qtype: dns.TypeMX, answer: aliasChain, ns: []string{exampleNegSOA}},
	{qname: "loop1.example.", qtype: dns.TypeA, answer: []string{"loop1.example. 3600 IN CNAME loop2.example.",
		"loop2.example. 3600 IN CNAME loop1.example."}},
	{qname: "self.example.", qtype: dns.TypeTXT, answer: []string{"self.example. 3600 IN CNAME self.example."}},
	{qname: "q.cnl.example.", qtype: dns.TypeA, answer: []string{"q.cnl.example. 3600 IN CNAME x.cnl.example.",
		"x.cnl.example. 3600 IN CNAME x.cnl.example."}},
	{qname: "c1.example.", qtype: dns.TypeA, answer: []string{"c1.example. 3600 IN CNAME c2.example.",
		"c2.example. 3600 IN CNAME c3.example.", "c3.example. 3600 IN CNAME c4.example.",
		"c4.example. 3600 IN CNAME c5.example.", "c5.example. 3600 IN CNAME c6.example."}},
	{qname: "dangling.example.", qtype: dns.TypeA, rcode: dns.RcodeNameError,
		answer: []string{"dangling.example. 3600 IN CNAME gone.host1.example."}, ns: []string{exampleNegSOA}},
	// Between our zones: chased, the rcode and SOA of the last name.
	{qname: "back.other.test.", qtype: dns.TypeA, answer: cat([]string{"back.other.test. 600 IN CNAME alias.example."},
		aliasChain, []string{"host1.example. 3600 IN A 192.0.2.1"})},
	{qname: "nx.other.test.", qtype: dns.TypeA, rcode: dns.RcodeNameError,
		answer: []string{"nx.other.test. 600 IN CNAME nothere.host1.example."}, ns: []string{exampleNegSOA}},
	{qname: "away.other.test.", qtype: dns.TypeA, answer: []string{"away.other.test. 600 IN CNAME www.example.org."}},
	{qname: "ref.other.test.", qtype: dns.TypeA, answer: []string{"ref.other.test. 600 IN CNAME ns.sub.example."},
		ns: subNS, extra: subGlue},
	{qname: "other.test.", qtype: dns.TypeMX, ns: []string{otherNegSOA}},
	// The service zone: its own name server at the apex.
	{qname: "switchboard.", qtype: dns.TypeNS, answer: []string{"switchboard. 5 IN NS ns.switchboard."},
		extra: []string{"ns.switchboard. 5 IN A 127.0.0.1"}},
	{qname: "switchboard.", qtype: dns.TypeSOA,
		answer: []string{"switchboard. 5 IN SOA ns.switchboard. hostmaster.switchboard. 1 3600 600 86400 5"}},
	{qname: "ns.switchboard.", qtype: dns.TypeA, answer: []string{"ns.switchboard. 5 IN A 127.0.0.1"}},
	{qname: "web-2.web.instance.switchboard.", qtype: dns.TypeA, answer: []string{"web-2.web.instance.switchboard. 5 IN A 10.0.3.3"}},
	{qname: "web-9.web.instance.switchboard.", qtype: dns.TypeA, rcode: dns.RcodeNameError,
		ns: []string{"switchboard. 5 IN SOA ns.switchboard. hostmaster.switchboard. 1 3600 600 86400 5"}},
}

// TestLookup runs lookup, the one RFC 1034 §4.3.2 function, over the
// table, then checks that what the fast path would send for the same
// question is the same answer.
func TestLookup(t *testing.T) {
	s := lookupServer(t)
	a := s.auth.Load()
	for _, tc := range lookupCases {
		t.Run(tc.qname+"/"+dns.TypeToString[tc.qtype], func(t *testing.T) {
			m := a.lookup(tc.qname, tc.qtype)
			if m.Rcode != tc.rcode || m.Authoritative == tc.noAA {
				t.Errorf("rcode %s aa=%v, want %s aa=%v", dns.RcodeToString[m.Rcode], m.Authoritative,
					dns.RcodeToString[tc.rcode], !tc.noAA)
			}
			checkSection(t, "answer", m.Answer, tc.answer)
			checkSection(t, "authority", m.Ns, tc.ns)
			checkSection(t, "additional", m.Extra, tc.extra)

			// The server's answer (precomputed or not) is the same.
			r := new(dns.Msg)
			r.SetQuestion(tc.qname, tc.qtype)
			r.RecursionDesired = false
			out, _, err := s.respond(nil, r, netip.MustParseAddr("192.0.2.1"), false, false) // may not recurse: no RA
			if err != nil {
				t.Fatal(err)
			}
			got := new(dns.Msg)
			if err := got.Unpack(out); err != nil {
				t.Fatal(err)
			}
			got.Id = 0
			if messageView(got) != messageView(m) {
				t.Errorf("served:\n%s\nlookup:\n%s", messageView(got), messageView(m))
			}
		})
	}
}

func checkSection(t *testing.T, name string, rrs []dns.RR, want []string) {
	t.Helper()
	var got []string
	for _, rr := range rrs {
		got = append(got, strings.Join(strings.Fields(rr.String()), " "))
	}
	want = slices.Clone(want)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s section:\n  %s\nwant:\n  %s", name, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// TestPrecomputedAnswersAreLookups: for every name in the snapshot and
// many types, the precomputed response (the UDP fast path's) equals what
// lookup builds for the question.
func TestPrecomputedAnswersAreLookups(t *testing.T) {
	s := lookupServer(t)
	a := s.auth.Load()
	types := []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeNS, dns.TypeSOA, dns.TypeCNAME, dns.TypeMX, dns.TypeTXT,
		dns.TypeSRV, dns.TypeDS, dns.TypePTR, dns.TypeANY, dns.TypeHINFO}
	n := 0
	for name, nd := range a.nodes {
		for _, qtype := range types {
			p := nd.answer(qtype)
			if p == nil {
				continue // the slow path: lookup itself
			}
			n++
			out, err := p.appendTo(nil, &reply{qname: name, qtype: qtype, qclass: dns.ClassINET, maxSize: dns.MaxMsgSize})
			if err != nil {
				t.Fatal(err)
			}
			got := new(dns.Msg)
			if err := got.Unpack(out); err != nil {
				t.Fatal(err)
			}
			if want := messageView(a.lookup(name, qtype)); messageView(got) != want {
				t.Errorf("%s %s precomputed:\n%s\nlookup:\n%s", name, dns.TypeToString[qtype], messageView(got), want)
			}
		}
	}
	if n < 100 {
		t.Fatalf("only %d precomputed answers checked", n)
	}
}

// TestNestedZones: a zone we serve inside another answers for its names;
// the parent's records there are not used, but the names above the
// child's apex still exist in the parent.
func TestNestedZones(t *testing.T) {
	parent := "$TTL 60\n@ SOA ns hostmaster 1 3600 600 86400 60\n@ NS ns\nns A 192.0.2.1\n" +
		"a.b NS ns.a.b\nns.a.b A 192.0.2.2\n"
	child := "$TTL 60\n@ SOA ns hostmaster 9 3600 600 86400 60\n@ NS ns\nns A 192.0.2.3\nwww A 192.0.2.4\n"
	var zs []*staticZone
	for _, z := range []struct{ text, origin string }{{parent, "p.test."}, {child, "a.b.p.test."}} {
		sz, err := parseZone([]byte(z.text), zoneSource{path: z.origin + "zone", origin: z.origin})
		if err != nil {
			t.Fatal(err)
		}
		zs = append(zs, sz)
	}
	a := newTestServer(zs...).auth.Load()
	for _, tc := range []lookupCase{
		{qname: "ns.a.b.p.test.", qtype: dns.TypeA, answer: []string{"ns.a.b.p.test. 60 IN A 192.0.2.3"}},
		{qname: "a.b.p.test.", qtype: dns.TypeNS, answer: []string{"a.b.p.test. 60 IN NS ns.a.b.p.test."},
			extra: []string{"ns.a.b.p.test. 60 IN A 192.0.2.3"}},
		{qname: "www.a.b.p.test.", qtype: dns.TypeA, answer: []string{"www.a.b.p.test. 60 IN A 192.0.2.4"}},
		{qname: "b.p.test.", qtype: dns.TypeA, ns: []string{"p.test. 60 IN SOA ns.p.test. hostmaster.p.test. 1 3600 600 86400 60"}},
		{qname: "c.p.test.", qtype: dns.TypeA, rcode: dns.RcodeNameError,
			ns: []string{"p.test. 60 IN SOA ns.p.test. hostmaster.p.test. 1 3600 600 86400 60"}},
	} {
		m := a.lookup(tc.qname, tc.qtype)
		if m.Rcode != tc.rcode || !m.Authoritative {
			t.Errorf("%s: rcode %s aa=%v", tc.qname, dns.RcodeToString[m.Rcode], m.Authoritative)
		}
		checkSection(t, tc.qname+" answer", m.Answer, tc.answer)
		checkSection(t, tc.qname+" authority", m.Ns, tc.ns)
		checkSection(t, tc.qname+" additional", m.Extra, tc.extra)
	}
}
