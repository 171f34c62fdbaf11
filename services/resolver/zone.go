package resolver

import (
	"fmt"
	"slices"
	"strings"

	"github.com/miekg/dns"
)

// zone is one zone we are authoritative for.
type zone struct {
	origin string   // lower-case, fully qualified
	soa    *dns.SOA // owner is origin
	negTTL uint32   // min(SOA TTL, SOA MINIMUM): RFC 2308 negative TTL
	source string   // where the SOA comes from
}

// negativeSOA returns the SOA for the authority section of a negative
// answer, its TTL set to the negative TTL.
func (z *zone) negativeSOA() *dns.SOA {
	soa := dns.Copy(z.soa).(*dns.SOA)
	soa.Hdr.Ttl = z.negTTL
	return soa
}

// rrset is the records of one owner and type.
type rrset struct {
	rtype   uint16
	rrs     []dns.RR
	weights []uint32 // per record, for weighted rotation (service zone)
	sources []string // per record
	seen    map[string]int
}

// typedAnswer is a precomputed answer for one query type.
type typedAnswer struct {
	qtype uint16
	p     *prepared
}

// node is one owner name in one of our zones (possibly an empty
// non-terminal, which has no records but does exist).
type node struct {
	name    string
	zone    *zone
	sets    []*rrset // sorted by type
	cname   *dns.CNAME
	answers []typedAnswer
	nodata  *prepared // for any type the node lacks (qtype patched per query)
	anyAns  *prepared // RFC 8482 minimal ANY answer
}

func (n *node) set(t uint16) *rrset {
	for _, s := range n.sets {
		if s.rtype == t {
			return s
		}
	}
	return nil
}

// answer returns the precomputed response for qtype, or nil when the
// query needs the slow path (CNAME chasing).
func (n *node) answer(qtype uint16) *prepared {
	for i := range n.answers {
		if n.answers[i].qtype == qtype {
			return n.answers[i].p
		}
	}
	if qtype == dns.TypeANY {
		return n.anyAns
	}
	if n.cname != nil {
		return nil
	}
	return n.nodata
}

// authority is an immutable snapshot of every zone we serve, with answers
// precomputed; it is replaced whole when zone data changes.
type authority struct {
	zones []*zone // longest origin first
	nodes map[string]*node
}

// find returns the node of name (lower case) and the zone that holds it;
// both nil when name is outside our zones, node nil when it does not exist.
func (a *authority) find(name string) (*node, *zone) {
	if n := a.nodes[name]; n != nil {
		return n, n.zone
	}
	return nil, a.zoneOf(name)
}

// zoneOf returns the zone that name falls in, or nil.
func (a *authority) zoneOf(name string) *zone {
	for _, z := range a.zones {
		if inZone(z.origin, name) {
			return z
		}
	}
	return nil
}

// inZone reports whether name is origin or below it; both are lower-case
// and fully qualified. It does not allocate.
func inZone(origin, name string) bool {
	if origin == "." || name == origin {
		return true
	}
	n := len(name) - len(origin)
	return n > 0 && name[n-1] == '.' && name[n:] == origin
}

// sourced is a record with where it comes from.
type sourced struct {
	rr     dns.RR
	source string
	weight uint32
}

// authorityBuilder collects zones and records, then precomputes answers.
type authorityBuilder struct {
	zones map[string]*zone
	nodes map[string]*node
}

func newAuthorityBuilder() *authorityBuilder {
	return &authorityBuilder{zones: map[string]*zone{}, nodes: map[string]*node{}}
}

// addZone declares a zone by its SOA; the first SOA of an origin wins.
func (b *authorityBuilder) addZone(soa *dns.SOA, source string) {
	origin := lowerASCII(dns.Fqdn(soa.Hdr.Name))
	if _, ok := b.zones[origin]; ok {
		return
	}
	s := dns.Copy(soa).(*dns.SOA)
	s.Hdr.Name = origin
	neg := min(s.Hdr.Ttl, s.Minttl)
	b.zones[origin] = &zone{origin: origin, soa: s, negTTL: neg, source: source}
}

func (b *authorityBuilder) zoneOf(name string) *zone {
	var best *zone
	for origin, z := range b.zones {
		if dns.IsSubDomain(origin, name) && (best == nil || len(origin) > len(best.origin)) {
			best = z
		}
	}
	return best
}

// add puts a record into the zone that holds its owner.
func (b *authorityBuilder) add(s sourced) error {
	rr := dns.Copy(s.rr)
	h := rr.Header()
	h.Name = lowerASCII(dns.Fqdn(h.Name))
	h.Class = dns.ClassINET
	z := b.zoneOf(h.Name)
	if z == nil {
		return fmt.Errorf("%s is outside every served zone", h.Name)
	}
	if h.Rrtype == dns.TypeSOA {
		if h.Name != z.origin {
			return fmt.Errorf("SOA of %s is not at a zone apex", h.Name)
		}
		return nil // the zone's SOA is held by the zone
	}
	n := b.node(h.Name, z)
	if h.Rrtype == dns.TypeCNAME {
		if n.cname != nil || len(n.sets) > 0 {
			return fmt.Errorf("CNAME at %s cannot sit beside other data", h.Name)
		}
		n.cname = rr.(*dns.CNAME)
		return nil
	}
	if n.cname != nil {
		return fmt.Errorf("%s has a CNAME and cannot hold %s", h.Name, dns.TypeToString[h.Rrtype])
	}
	set := n.set(h.Rrtype)
	if set == nil {
		set = &rrset{rtype: h.Rrtype, seen: map[string]int{}}
		n.sets = append(n.sets, set)
	}
	key := strings.ToLower(rdataString(rr))
	if i, ok := set.seen[key]; ok {
		set.rrs[i] = rr // a later source (managed) replaces the TTL
		set.sources[i] = s.source
		set.weights[i] += max(s.weight, 1)
		return nil
	}
	set.seen[key] = len(set.rrs)
	set.rrs = append(set.rrs, rr)
	set.sources = append(set.sources, s.source)
	set.weights = append(set.weights, max(s.weight, 1))
	return nil
}

// rdataString is the record's data in master-file syntax.
func rdataString(rr dns.RR) string {
	s := rr.String()
	hdr := rr.Header().String()
	return strings.TrimPrefix(s, hdr)
}

// node returns name's node, creating it and its empty ancestors up to the
// zone apex.
func (b *authorityBuilder) node(name string, z *zone) *node {
	if n := b.nodes[name]; n != nil {
		return n
	}
	n := &node{name: name, zone: z}
	b.nodes[name] = n
	for cur := name; cur != z.origin; {
		i, end := dns.NextLabel(cur, 0)
		if end {
			break
		}
		cur = cur[i:]
		if _, ok := b.nodes[cur]; ok {
			break
		}
		b.nodes[cur] = &node{name: cur, zone: z}
	}
	return n
}

// build precomputes every answer and returns the snapshot.
func (b *authorityBuilder) build() (*authority, error) {
	a := &authority{nodes: b.nodes}
	for _, z := range b.zones {
		a.zones = append(a.zones, z)
		// The apex exists and holds the SOA.
		apex := b.node(z.origin, z)
		if apex.set(dns.TypeSOA) == nil {
			apex.sets = append(apex.sets, &rrset{rtype: dns.TypeSOA, rrs: []dns.RR{z.soa}, weights: []uint32{1}, sources: []string{z.source}})
		}
	}
	slices.SortFunc(a.zones, func(x, y *zone) int { return len(y.origin) - len(x.origin) })
	for _, n := range a.nodes {
		slices.SortFunc(n.sets, func(x, y *rrset) int { return int(x.rtype) - int(y.rtype) })
		if err := a.precompute(n); err != nil {
			return nil, err
		}
	}
	return a, nil
}

func (a *authority) precompute(n *node) error {
	for _, set := range n.sets {
		m := a.newAnswer(n.name, set.rtype)
		m.Answer = append(m.Answer, set.rrs...)
		m.Extra = a.additional(set.rrs)
		p, err := prepare(m, true)
		if err != nil {
			return err
		}
		if (set.rtype == dns.TypeA || set.rtype == dns.TypeAAAA) && p.rrN == len(set.rrs) && !allEqual(set.weights) {
			cum := make([]uint32, len(set.weights))
			var sum uint32
			for i, w := range set.weights {
				sum += w
				cum[i] = sum
			}
			p.cumWeights = cum
		}
		n.answers = append(n.answers, typedAnswer{qtype: set.rtype, p: p})
		if n.anyAns == nil {
			n.anyAns = p
		}
	}
	if n.cname != nil {
		m := a.newAnswer(n.name, dns.TypeCNAME)
		m.Answer = append(m.Answer, n.cname)
		p, err := prepare(m, true)
		if err != nil {
			return err
		}
		n.answers = append(n.answers, typedAnswer{qtype: dns.TypeCNAME, p: p})
		n.anyAns = p
		return nil
	}
	m := a.newAnswer(n.name, dns.TypeA)
	m.Ns = []dns.RR{n.zone.negativeSOA()}
	p, err := prepare(m, true)
	if err != nil {
		return err
	}
	n.nodata = p
	if n.anyAns == nil {
		n.anyAns = p
	}
	return nil
}

func allEqual(w []uint32) bool {
	for _, x := range w {
		if x != w[0] {
			return false
		}
	}
	return true
}

// newAnswer starts an authoritative response to (name, qtype).
func (a *authority) newAnswer(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.Response = true
	m.Authoritative = true
	m.Question = []dns.Question{{Name: name, Qtype: qtype, Qclass: dns.ClassINET}}
	return m
}

// additional returns the addresses, from our zones, of the targets of SRV,
// MX and NS records.
func (a *authority) additional(rrs []dns.RR) []dns.RR {
	var out []dns.RR
	seen := map[string]bool{}
	for _, rr := range rrs {
		var target string
		switch r := rr.(type) {
		case *dns.SRV:
			target = r.Target
		case *dns.MX:
			target = r.Mx
		case *dns.NS:
			target = r.Ns
		default:
			continue
		}
		target = lowerASCII(target)
		if seen[target] {
			continue
		}
		seen[target] = true
		if t := a.nodes[target]; t != nil {
			for _, typ := range []uint16{dns.TypeA, dns.TypeAAAA} {
				if s := t.set(typ); s != nil {
					out = append(out, s.rrs...)
				}
			}
		}
	}
	return out
}

// maxChase bounds CNAME chains inside our zones.
const maxChase = 8

// resolve answers (name, qtype) from our zones the slow way: NXDOMAIN,
// and CNAME chains followed within our zones.
func (a *authority) resolve(name string, qtype uint16) *dns.Msg {
	m := a.newAnswer(name, qtype)
	cur := name
	for range maxChase {
		n, z := a.find(cur)
		if z == nil {
			return m // the chain leaves our zones: the client follows it
		}
		if n == nil {
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{z.negativeSOA()}
			return m
		}
		if n.cname != nil && qtype != dns.TypeCNAME {
			c := dns.Copy(n.cname)
			m.Answer = append(m.Answer, c)
			cur = lowerASCII(n.cname.Target)
			continue
		}
		if qtype == dns.TypeANY && len(n.sets) > 0 {
			m.Answer = append(m.Answer, n.sets[0].rrs...)
			return m
		}
		if s := n.set(qtype); s != nil {
			m.Answer = append(m.Answer, s.rrs...)
			m.Extra = a.additional(s.rrs)
			return m
		}
		if qtype == dns.TypeCNAME && n.cname != nil {
			m.Answer = append(m.Answer, n.cname)
			return m
		}
		m.Ns = []dns.RR{z.negativeSOA()}
		return m
	}
	m.Rcode = dns.RcodeServerFailure // a loop, or a chain too long
	return m
}
