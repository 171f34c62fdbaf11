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
	negSOA *dns.SOA // the SOA for negative answers: TTL = negative TTL
	source string   // where the SOA comes from
}

// newZone makes a zone of soa; the negative TTL is min(SOA TTL, SOA
// MINIMUM) (RFC 2308 §5).
func newZone(soa *dns.SOA, source string) *zone {
	s := dns.Copy(soa).(*dns.SOA)
	s.Hdr.Name = lowerASCII(dns.Fqdn(s.Hdr.Name))
	s.Hdr.Class = dns.ClassINET
	neg := dns.Copy(s).(*dns.SOA)
	neg.Hdr.Ttl = min(s.Hdr.Ttl, s.Minttl)
	return &zone{origin: s.Hdr.Name, soa: s, negSOA: neg, source: source}
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
	name  string
	zone  *zone
	sets  []*rrset   // sorted by type; a CNAME is alone in its node
	cname *dns.CNAME // the node's CNAME, if it has one
	// wild is the wildcard child "*.<name>" (RFC 4592), if there is one.
	wild *node
	// cut is the delegation (a node with NS below the apex, RFC 1034 §4.2.1)
	// at or above this node; nil for authoritative data.
	cut *node

	// Precomputed responses: for the node's own types, and other for every
	// type it lacks (NODATA, or the referral at and below a cut; patched
	// with the query's type). other is nil at a CNAME, whose answer depends
	// on the type: those go the slow way.
	answers []typedAnswer
	other   *prepared
}

func (n *node) set(t uint16) *rrset {
	for _, s := range n.sets {
		if s.rtype == t {
			return s
		}
	}
	return nil
}

// isCut reports whether the node is a zone cut: NS below the zone apex.
func (n *node) isCut() bool {
	return n.name != n.zone.origin && n.set(dns.TypeNS) != nil
}

// answer returns the precomputed response for qtype, or nil when the
// query needs the slow path (lookup).
func (n *node) answer(qtype uint16) *prepared {
	for i := range n.answers {
		if n.answers[i].qtype == qtype {
			return n.answers[i].p
		}
	}
	return n.other
}

// authority is an immutable snapshot of every zone we serve, with answers
// precomputed; it is replaced whole when zone data changes.
type authority struct {
	zones []*zone // longest origin first
	nodes map[string]*node
	synth *synthCache // answers built for names without a precomputed one
}

// zoneOf returns the zone that name (lower case) falls in, or nil.
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
// It returns the zone of that origin.
func (b *authorityBuilder) addZone(soa *dns.SOA, source string) *zone {
	origin := lowerASCII(dns.Fqdn(soa.Hdr.Name))
	if z, ok := b.zones[origin]; ok {
		return z
	}
	z := newZone(soa, source)
	b.zones[origin] = z
	return z
}

// zoneOf returns the deepest zone holding name.
func (b *authorityBuilder) zoneOf(name string) *zone {
	var best *zone
	for origin, z := range b.zones {
		if inZone(origin, name) && (best == nil || len(origin) > len(best.origin)) {
			best = z
		}
	}
	return best
}

// errOccluded is returned for a record of a zone file that lies in a
// deeper zone we also serve: that zone answers for the name.
var errOccluded = fmt.Errorf("the name lies in a deeper zone that is also served")

// add puts a record into the zone that holds its owner. in, when set, is
// the zone the record must belong to (a zone file's own zone): a record
// that falls in a deeper zone we serve is left out (errOccluded).
func (b *authorityBuilder) add(s sourced, in *zone) error {
	rr := dns.Copy(s.rr)
	h := rr.Header()
	h.Name = lowerASCII(dns.Fqdn(h.Name))
	h.Class = dns.ClassINET
	if in != nil && !inZone(in.origin, h.Name) {
		return fmt.Errorf("%s is outside the zone %s", h.Name, in.origin)
	}
	z := b.zoneOf(h.Name)
	if z == nil {
		return fmt.Errorf("%s is outside every served zone", h.Name)
	}
	if in != nil && z != in {
		// The deeper zone answers for the name; its ancestors that are
		// still in this zone exist here all the same (empty
		// non-terminals above the child's apex).
		for cur := h.Name; ; {
			i, end := dns.NextLabel(cur, 0)
			if end {
				break
			}
			if cur = cur[i:]; b.zoneOf(cur) == in {
				b.node(cur, in)
				break
			}
		}
		return errOccluded
	}
	switch h.Rrtype {
	case dns.TypeSOA:
		if h.Name != z.origin {
			return fmt.Errorf("SOA of %s is not at a zone apex", h.Name)
		}
		return nil // the zone's SOA is held by the zone
	case dns.TypeDNAME:
		return fmt.Errorf("%s: DNAME is not supported (RFC 6672 redirection is not implemented)", h.Name)
	case dns.TypeNS:
		if isWildcard(h.Name) {
			return fmt.Errorf("%s: NS at a wildcard is not supported (RFC 4592 §4.2)", h.Name)
		}
	case dns.TypeRRSIG, dns.TypeNSEC, dns.TypeNSEC3, dns.TypeNSEC3PARAM, dns.TypeDNSKEY:
		return fmt.Errorf("%s: %s: DNSSEC is not supported (zones are served unsigned)", h.Name, dns.TypeToString[h.Rrtype])
	}
	n := b.node(h.Name, z)
	if h.Rrtype == dns.TypeCNAME {
		if len(n.sets) > 0 {
			return fmt.Errorf("CNAME at %s cannot sit beside other data (RFC 1034 §3.6.2)", h.Name)
		}
		n.cname = rr.(*dns.CNAME)
		n.sets = append(n.sets, &rrset{rtype: dns.TypeCNAME, rrs: []dns.RR{rr}, weights: []uint32{1}, sources: []string{s.source}})
		return nil
	}
	if n.cname != nil {
		return fmt.Errorf("%s has a CNAME and cannot hold %s (RFC 1034 §3.6.2)", h.Name, dns.TypeToString[h.Rrtype])
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

// isWildcard reports whether name's first label is "*" (RFC 4592 §2.1.1).
func isWildcard(name string) bool {
	return len(name) >= 2 && name[0] == '*' && name[1] == '.'
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

// hasNS reports whether the apex of z already holds an NS set.
func (b *authorityBuilder) hasNS(z *zone) bool {
	n := b.nodes[z.origin]
	return n != nil && n.set(dns.TypeNS) != nil
}

// build links the tree (wildcards, zone cuts), precomputes every answer
// and returns the snapshot.
func (b *authorityBuilder) build() (*authority, error) {
	a := &authority{nodes: b.nodes, synth: newSynthCache()}
	for _, z := range b.zones {
		a.zones = append(a.zones, z)
		// The apex exists and holds the SOA.
		apex := b.node(z.origin, z)
		if apex.set(dns.TypeSOA) == nil {
			if apex.cname != nil {
				return nil, fmt.Errorf("CNAME at the zone apex %s cannot sit beside the SOA", z.origin)
			}
			apex.sets = append(apex.sets, &rrset{rtype: dns.TypeSOA, rrs: []dns.RR{z.soa}, weights: []uint32{1}, sources: []string{z.source}})
		}
	}
	slices.SortFunc(a.zones, func(x, y *zone) int { return len(y.origin) - len(x.origin) })
	for _, n := range a.nodes {
		slices.SortFunc(n.sets, func(x, y *rrset) int { return int(x.rtype) - int(y.rtype) })
	}
	for _, n := range a.nodes {
		if isWildcard(n.name) {
			if parent := a.nodes[n.name[2:]]; parent != nil && parent.zone == n.zone {
				parent.wild = n
			}
		}
		// The highest cut at or above n, up to the apex.
		for cur := n.name; ; {
			if c := a.nodes[cur]; c != nil && c.zone == n.zone && c.isCut() {
				n.cut = c
			}
			if cur == n.zone.origin {
				break
			}
			i, end := dns.NextLabel(cur, 0)
			if end {
				break
			}
			cur = cur[i:]
		}
	}
	for _, n := range a.nodes {
		if err := a.precompute(n); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// precomputedCNAMETypes are the types whose answer is precomputed at a
// CNAME (the chain followed), besides CNAME and ANY.
var precomputedCNAMETypes = []uint16{dns.TypeA, dns.TypeAAAA}

// precompute packs the node's answers with lookup, so the fast path gives
// exactly what the slow path would.
func (a *authority) precompute(n *node) error {
	add := func(qtype uint16) (*prepared, error) {
		p, err := a.prepareLookup(n.name, qtype)
		if err != nil {
			return nil, err
		}
		n.answers = append(n.answers, typedAnswer{qtype: qtype, p: p})
		return p, nil
	}
	if n.cname == nil {
		// Type 0 is never held: NODATA here, or the referral.
		p, err := a.prepareLookup(n.name, 0)
		if err != nil {
			return err
		}
		n.other = p
	}
	if n.cut != nil {
		// Every type at and below a cut is the referral, except DS at the
		// cut, which the parent answers (RFC 4035 §3.1.4.1).
		if n.cut == n {
			_, err := add(dns.TypeDS)
			return err
		}
		return nil
	}
	for _, set := range n.sets {
		p, err := add(set.rtype)
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
	}
	if _, err := add(dns.TypeANY); err != nil {
		return err
	}
	if n.cname != nil {
		for _, t := range precomputedCNAMETypes {
			if _, err := add(t); err != nil {
				return err
			}
		}
	}
	return nil
}

// prepareLookup packs the answer lookup gives.
func (a *authority) prepareLookup(name string, qtype uint16) (*prepared, error) {
	m := a.lookup(name, qtype)
	return prepare(m, m.Authoritative)
}

func allEqual(w []uint32) bool {
	for _, x := range w {
		if x != w[0] {
			return false
		}
	}
	return true
}
