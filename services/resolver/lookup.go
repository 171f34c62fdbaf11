package resolver

import (
	"slices"

	"github.com/miekg/dns"
)

// maxCNAMEs bounds the CNAME records one answer carries, as Knot DNS does
// (CNAME_CHAIN_MAX): past it the answer ends with the last CNAME and the
// client follows on from its target.
const maxCNAMEs = 5

// match is where a name leads inside one zone: RFC 1034 §4.3.2 steps
// 3a–3c.
type match struct {
	// node holds the data that answers: the name's own node, or the
	// wildcard that covers it (wild). nil with cut nil: no such name.
	node *node
	wild bool
	// cut is the delegation the name is at or below: a referral.
	cut *node
}

// find descends from the apex of z (which holds name) towards name, label
// by label: the first zone cut on the way ends the search (step 3b), the
// name itself is an exact match (3a), and otherwise the wildcard child of
// the closest encloser, if it has one, covers the name (3c, RFC 4592
// §3.3.1). An empty non-terminal is a node, so it encloses names below it
// and blocks wildcards above it. find does not allocate.
func (a *authority) find(z *zone, name string) match {
	// offs[i] is where the i-th suffix of name below the apex starts; the
	// last one is the label just below the apex.
	var offs [128]int
	k := 0
	for off := 0; len(name)-off > len(z.origin) && k < len(offs); k++ {
		offs[k] = off
		off, _ = dns.NextLabel(name, off)
	}
	encloser := a.nodes[z.origin]
	for j := k - 1; j >= 0; j-- {
		n := a.nodes[name[offs[j]:]]
		if n == nil || n.zone != z {
			break
		}
		if n.isCut() {
			return match{node: n, cut: n}
		}
		if j == 0 {
			return match{node: n}
		}
		encloser = n
	}
	if k == 0 {
		return match{node: encloser} // the apex
	}
	if encloser != nil && encloser.wild != nil {
		return match{node: encloser.wild, wild: true}
	}
	return match{}
}

// lookup answers (qname, qtype) from our zones, following RFC 1034 §4.3.2
// step 3; qname is lower case and in one of our zones. It is the one
// lookup for every zone (zone files, managed records, the service zone)
// and every answer, precomputed or not:
//
//  1. The zone is the deepest of ours holding the name.
//  2. A zone cut at or above the name (NS below the apex) gives a
//     referral: AA clear, the cut's NS set in the authority section and
//     the addresses of its name servers (glue) in the additional one.
//     DS at the cut itself is the parent's data and answered from it
//     (RFC 4035 §3.1.4.1).
//  3. An exact match answers with its RRset; a CNAME (unless CNAME or
//     ANY was asked) goes into the answer and the search restarts at its
//     target, in any of our zones. Each CNAME is added once, so a loop
//     ends when it comes back to a name already followed (NOERROR, each
//     CNAME once, as Knot DNS answers), and at most maxCNAMEs are
//     followed. A target outside our zones ends the answer there.
//  4. Otherwise the wildcard child of the closest encloser, if any,
//     answers as if it were the name (RFC 4592): the owner is the name.
//  5. No data of the type at an existing name (or wildcard) is NODATA;
//     no name is NXDOMAIN (RFC 6604: the rcode is that of the last name
//     in a chain). Both carry the zone's SOA in the authority section
//     with the negative TTL (RFC 2308).
//
// ANY is answered minimally (RFC 8482): the node's first RRset by type.
// NS, MX and SRV answers carry the A/AAAA records of their targets that
// our zones hold (also glue below a cut, and wildcard-synthesized ones).
// AA is set unless the name itself leads to a referral.
func (a *authority) lookup(qname string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.Response = true
	m.Authoritative = true
	m.Question = []dns.Question{{Name: qname, Qtype: qtype, Qclass: dns.ClassINET}}
	name := qname
	var followed []string // owners whose CNAME is in the answer
	for {
		z := a.zoneOf(name)
		if z == nil {
			return m // the chain leaves our zones: the client follows it
		}
		mt := a.find(z, name)
		if mt.cut != nil && (qtype != dns.TypeDS || mt.cut.name != name) {
			if len(followed) == 0 {
				m.Authoritative = false
			}
			ns := mt.cut.set(dns.TypeNS).rrs
			m.Ns = append(m.Ns, ns...)
			m.Extra = a.additional(ns)
			return m
		}
		n := mt.node
		if n == nil {
			m.Rcode = dns.RcodeNameError
			m.Ns = append(m.Ns, z.negSOA)
			return m
		}
		if n.cname != nil && qtype != dns.TypeCNAME && qtype != dns.TypeANY {
			if len(followed) == maxCNAMEs || slices.Contains(followed, name) {
				return m
			}
			followed = append(followed, name)
			m.Answer = appendOwned(m.Answer, n.set(dns.TypeCNAME).rrs, name, mt.wild)
			name = lowerASCII(n.cname.Target)
			continue
		}
		var set *rrset
		if qtype == dns.TypeANY {
			if len(n.sets) > 0 {
				set = n.sets[0]
			}
		} else {
			set = n.set(qtype)
		}
		if set == nil {
			m.Ns = append(m.Ns, z.negSOA)
			return m
		}
		m.Answer = appendOwned(m.Answer, set.rrs, name, mt.wild)
		m.Extra = a.additional(set.rrs)
		return m
	}
}

// appendOwned appends rrs, renamed to owner when they come from a wildcard.
func appendOwned(dst, rrs []dns.RR, owner string, synthesized bool) []dns.RR {
	if !synthesized {
		return append(dst, rrs...)
	}
	for _, rr := range rrs {
		c := dns.Copy(rr)
		c.Header().Name = owner
		dst = append(dst, c)
	}
	return dst
}

// additional returns the addresses our zones hold for the targets of NS,
// MX and SRV records (RFC 1034 §3.7, RFC 2782): A then AAAA per target,
// each target once.
func (a *authority) additional(rrs []dns.RR) []dns.RR {
	var out []dns.RR
	var seen []string
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
		if slices.Contains(seen, target) {
			continue
		}
		seen = append(seen, target)
		out = a.appendAddresses(out, target)
	}
	return out
}

// appendAddresses appends the A and AAAA records of name: its own node's
// (authoritative data or glue below a cut), or those a wildcard
// synthesizes for it.
func (a *authority) appendAddresses(dst []dns.RR, name string) []dns.RR {
	n := a.nodes[name]
	wild := false
	if n == nil {
		z := a.zoneOf(name)
		if z == nil {
			return dst
		}
		mt := a.find(z, name)
		if mt.cut != nil || !mt.wild {
			return dst
		}
		n, wild = mt.node, true
	}
	for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
		if s := n.set(t); s != nil {
			dst = appendOwned(dst, s.rrs, name, wild)
		}
	}
	return dst
}
