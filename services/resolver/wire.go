package resolver

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/miekg/dns"
)

// Header byte offsets and flag bits of a DNS message (RFC 1035 4.1.1).
const (
	hdrLen     = 12
	flagQR     = 0x80 // byte 2
	flagAA     = 0x04 // byte 2
	flagTC     = 0x02 // byte 2
	flagRD     = 0x01 // byte 2
	flagRA     = 0x80 // byte 3
	optRRLen   = 11   // root name, type, class, ttl, rdlength
	minUDPSize = 512
)

// prepared is a whole response packed once (ID 0, question in lower case,
// no OPT) and patched per query: ID, RD/RA bits, the question's case and
// type, the rotation of its answer records, TTLs counted down, truncation
// and the OPT record. Patching never allocates when dst has room.
type prepared struct {
	wire []byte
	qEnd int // offset just after the question section
	// Rotation of equal-sized answer records (A/AAAA of one owner): rrN
	// records of rrLen bytes from rrStart. rrN < 2 means no rotation.
	rrStart, rrLen, rrN int
	// cumWeights, when set, holds the running sum of each record's weight:
	// the first record is then picked in proportion to its weight.
	cumWeights []uint32
	next       atomic.Uint32
	// ttlOffs are the offsets of every TTL field outside OPT, for cache
	// entries whose TTLs count down.
	ttlOffs []int
	// arCuts are where the message may end within the additional
	// section: before each of its RRsets, with the records kept. When
	// only additional records do not fit, the whole RRsets that do are
	// kept and the rest left out, without TC (RFC 2181 §9) — unless
	// glueRequired: a referral's glue (RFC 9471).
	arCuts       []arCut
	glueRequired bool
}

// arCut is a place to end a response inside its additional section.
type arCut struct {
	off   int    // the message ends here
	count uint16 // with this many additional records
}

// reply describes the query a prepared response is patched for.
type reply struct {
	id      uint16
	rd, ra  bool
	qname   string // as the client wrote it
	qwire   []byte // or the query's question name in wire form, when set
	qtype   uint16
	qclass  uint16 // echoed as asked (0: left as prepared)
	edns    bool
	do      bool
	maxSize int // largest response the transport takes
	elapsed uint32
}

// errBadName is returned when the query name cannot be written over the
// prepared question (it differs in more than case).
var errBadName = errors.New("query name does not match the prepared question")

// prepare packs m (whose OPT, if any, is dropped) for patching.
func prepare(m *dns.Msg, authoritative bool) (*prepared, error) {
	c := m.Copy()
	c.Id = 0
	c.Response = true
	c.Authoritative = authoritative
	c.AuthenticatedData = false
	c.RecursionAvailable = false
	c.Compress = true
	extra := c.Extra[:0]
	for _, rr := range c.Extra {
		if rr.Header().Rrtype != dns.TypeOPT {
			extra = append(extra, rr)
		}
	}
	c.Extra = extra
	if len(c.Question) == 1 {
		c.Question[0].Name = lowerASCII(c.Question[0].Name)
	}
	wire, err := c.Pack()
	if err != nil {
		return nil, fmt.Errorf("pack response for %v: %w", c.Question, err)
	}
	p := &prepared{wire: wire}
	extraOffs, err := p.index()
	if err != nil {
		return nil, err
	}
	for i, rr := range c.Extra {
		if i == 0 || !sameRRset(rr, c.Extra[i-1]) {
			p.arCuts = append(p.arCuts, arCut{off: extraOffs[i], count: uint16(i)})
		}
	}
	for _, rr := range c.Ns {
		if rr.Header().Rrtype == dns.TypeNS && len(c.Extra) > 0 {
			p.glueRequired = true
		}
	}
	return p, nil
}

// sameRRset reports whether two records have the same owner and type.
func sameRRset(a, b dns.RR) bool {
	return a.Header().Rrtype == b.Header().Rrtype && strings.EqualFold(a.Header().Name, b.Header().Name)
}

// index finds the end of the question, every TTL, and whether the answer
// section is a rotatable run of equal-sized A or AAAA records owned by
// the question name (compressed to a pointer at the question). It returns where each
// additional record starts.
func (p *prepared) index() (extraOffs []int, err error) {
	w := p.wire
	if len(w) < hdrLen {
		return nil, errors.New("short message")
	}
	qd := int(binary.BigEndian.Uint16(w[4:]))
	an := int(binary.BigEndian.Uint16(w[6:]))
	ns := int(binary.BigEndian.Uint16(w[8:]))
	ar := int(binary.BigEndian.Uint16(w[10:]))
	off := hdrLen
	for range qd {
		n, err := skipName(w, off)
		if err != nil {
			return nil, err
		}
		off = n + 4
	}
	if off > len(w) {
		return nil, errors.New("truncated question")
	}
	p.qEnd = off
	p.rrStart = off
	sameLen := an > 1
	for i := range an + ns + ar {
		start := off
		n, err := skipName(w, off)
		if err != nil {
			return nil, err
		}
		if n+10 > len(w) {
			return nil, errors.New("truncated record")
		}
		if i >= an+ns {
			extraOffs = append(extraOffs, start)
		}
		p.ttlOffs = append(p.ttlOffs, n+4)
		rdlen := int(binary.BigEndian.Uint16(w[n+8:]))
		off = n + 10 + rdlen
		if off > len(w) {
			return nil, errors.New("truncated rdata")
		}
		if i < an {
			ownedByQ := n-start == 2 && w[start] == 0xC0 && w[start+1] == hdrLen
			// Only addresses move: records whose data holds names (SRV,
			// MX, NS...) may be the targets of later compression
			// pointers, which a rotation would point at the wrong name.
			t := binary.BigEndian.Uint16(w[n:])
			if !ownedByQ || (t != dns.TypeA && t != dns.TypeAAAA) || (i > 0 && off-start != p.rrLen) {
				sameLen = false
			}
			if i == 0 {
				p.rrLen = off - start
			}
		}
	}
	if sameLen {
		p.rrN = an
	} else {
		p.rrN, p.rrLen = 0, 0
	}
	return extraOffs, nil
}

// skipName returns the offset just after the (possibly compressed) name at off.
func skipName(w []byte, off int) (int, error) {
	for {
		if off >= len(w) {
			return 0, errors.New("name past end of message")
		}
		c := int(w[off])
		switch c & 0xC0 {
		case 0x00:
			if c == 0 {
				return off + 1, nil
			}
			off += c + 1
		case 0xC0:
			return off + 2, nil
		default:
			return 0, errors.New("bad label type")
		}
	}
}

// rotate picks how far to rotate the answer records for this response.
func (p *prepared) rotation() int {
	n := p.next.Add(1) - 1
	if p.cumWeights == nil {
		return int(n % uint32(p.rrN))
	}
	total := p.cumWeights[len(p.cumWeights)-1]
	x := n % total
	for i, c := range p.cumWeights {
		if x < c {
			return i
		}
	}
	return 0
}

// appendTo writes the response for r into dst[:0] and returns it.
func (p *prepared) appendTo(dst []byte, r *reply) ([]byte, error) {
	dst = append(dst[:0], p.wire...)
	binary.BigEndian.PutUint16(dst[0:], r.id)
	dst[2] &^= flagRD | flagTC
	if r.rd {
		dst[2] |= flagRD
	}
	dst[3] &^= flagRA
	if r.ra {
		dst[3] |= flagRA
	}
	if p.qEnd > hdrLen {
		if r.qwire != nil {
			if hdrLen+len(r.qwire) != p.qEnd-4 {
				return dst, errBadName
			}
			copy(dst[hdrLen:], r.qwire)
		} else {
			end, err := dns.PackDomainName(r.qname, dst, hdrLen, nil, false)
			if err != nil || end != p.qEnd-4 {
				return dst, errBadName
			}
		}
		binary.BigEndian.PutUint16(dst[p.qEnd-4:], r.qtype)
		if r.qclass != 0 {
			binary.BigEndian.PutUint16(dst[p.qEnd-2:], r.qclass)
		}
	}
	if p.rrN > 1 {
		if k := p.rotation(); k != 0 {
			for i := range p.rrN {
				src := p.rrStart + ((i+k)%p.rrN)*p.rrLen
				copy(dst[p.rrStart+i*p.rrLen:], p.wire[src:src+p.rrLen])
			}
		}
	}
	if r.elapsed > 0 {
		for _, o := range p.ttlOffs {
			t := binary.BigEndian.Uint32(dst[o:])
			if t > r.elapsed {
				t -= r.elapsed
			} else {
				t = 0
			}
			binary.BigEndian.PutUint32(dst[o:], t)
		}
	}
	size := len(dst)
	if r.edns {
		size += optRRLen
	}
	if size > r.maxSize {
		cut := -1
		if !p.glueRequired {
			for i := len(p.arCuts) - 1; i >= 0 && cut < 0; i-- {
				if p.arCuts[i].off+size-len(dst) <= r.maxSize {
					cut = i
				}
			}
		}
		if cut >= 0 {
			// Only additional records do not fit: they are extra
			// information, and the RRsets that fit are kept, without TC
			// (RFC 2181 §9).
			dst = dst[:p.arCuts[cut].off]
			binary.BigEndian.PutUint16(dst[10:], p.arCuts[cut].count)
		} else {
			// Too big for this transport: header and question only, with
			// TC, so the client retries over TCP.
			dst = dst[:p.qEnd]
			dst[2] |= flagTC
			clear(dst[6:12])
		}
	}
	if r.edns {
		ar := binary.BigEndian.Uint16(dst[10:])
		binary.BigEndian.PutUint16(dst[10:], ar+1)
		var do byte
		if r.do {
			do = 0x80
		}
		// Root owner, type OPT, class = our buffer size, TTL = extended
		// rcode 0, version 0, flags (DO echoed), empty rdata.
		dst = append(dst, 0, 0, byte(dns.TypeOPT), byte(advertisedUDPSize>>8), byte(advertisedUDPSize&0xFF),
			0, 0, do, 0, 0, 0)
	}
	return dst, nil
}

// advertisedUDPSize is the EDNS buffer size in our OPT records and the
// largest UDP response we send (the DNS flag day 2020 figure).
const advertisedUDPSize = 1232

// lowerASCII lower-cases ASCII letters, returning s itself when it has none.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; 'A' <= c && c <= 'Z' {
					b[j] = c + 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}
