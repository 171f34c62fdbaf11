package resolver

import (
	"slices"
	"sync"

	"github.com/miekg/dns"
)

// Zone versions and their serials, and the journal of changes that IXFR
// (RFC 1995) answers from.
//
// Every rebuild of the authority snapshot hands each zone's content to
// the journal before the answers are packed (plan), so the SOA the zone
// serves carries the serial of that content:
//
//   - a zone seen for the first time takes the serial of its source: the
//     zone file's SOA, or for the service zone the registry's index;
//   - a zone whose content (every record, and the SOA but its serial)
//     did not change keeps its serial;
//   - a changed zone takes its source's serial when that is newer (RFC
//     1982) than the one served, and the served serial plus one
//     otherwise (a managed record in a zone file's zone, a registry
//     change that reached the zone without moving the index).
//
// Once the snapshot is in service the journal records the change (commit):
// the records deleted and added, bounded per zone by count and bytes, the
// oldest dropped first.
//
// The journal is kept only when transfers are on (--transfer-allow or
// --notify); without it each zone serves its source's serial.

// zoneVersion is one zone's content at one serial; immutable.
type zoneVersion struct {
	soa *dns.SOA // with the version's serial
	rrs []dns.RR // every record but the SOA, grouped by owner and type
}

// zoneChange is one journal entry: the difference between two versions.
type zoneChange struct {
	from, to *dns.SOA
	del, add []dns.RR
	size     int // wire size estimate of the records, for the bound
}

// zoneHistory is the current version of one zone and the changes that led
// to it, oldest first (changes[len-1].to is cur.soa).
type zoneHistory struct {
	cur     *zoneVersion
	content map[string]dns.RR // cur's records by contentKey
	changes []zoneChange
	size    int // sum of changes' sizes
}

// journal holds every zone's history. Its methods are safe for concurrent
// use; plan and commit are called in turn by one rebuild at a time.
type journal struct {
	maxChanges int // per zone; 0 keeps no changes (IXFR answers in full)
	maxBytes   int // per zone

	mu    sync.RWMutex
	zones map[string]*zoneHistory // by origin
}

// defaultJournalBytes bounds each zone's journal unless configured.
const defaultJournalBytes = 4 << 20

func newJournal(maxChanges, maxBytes int) *journal {
	return &journal{maxChanges: maxChanges, maxBytes: maxBytes, zones: map[string]*zoneHistory{}}
}

// plannedZone is one zone's next version, not yet in service.
type plannedZone struct {
	origin  string
	version *zoneVersion
	content map[string]dns.RR
	changed bool // the serial moves (a new zone, or new content)
}

// journalPlan is every zone's next version.
type journalPlan struct {
	zones []plannedZone
}

// contentKey identifies a record in a zone's content: its uncompressed
// wire form, TTL included (a TTL change is a change a secondary must
// see); buf is scratch space. The wire form is several times cheaper to
// make than the text.
func contentKey(rr dns.RR, buf []byte) (string, []byte) {
	for {
		off, err := dns.PackRR(rr, buf, 0, nil, false)
		if err == nil {
			return string(buf[:off]), buf
		}
		if len(buf) >= dns.MaxMsgSize {
			return rr.String(), buf // cannot happen: a record fits a message
		}
		buf = make([]byte, 2*len(buf)+512)
	}
}

// plan reads each zone's content from the builder, decides its serial and
// writes it into the zone's SOA (positive and negative), before the
// builder packs answers. skip, when set, is a zone not ready to be
// versioned (the service zone before the registry's first snapshot): it
// keeps its source serial and is not journaled.
func (j *journal) plan(b *authorityBuilder, skip *zone) *journalPlan {
	if j == nil {
		return nil // transfers off: zones serve their sources' serials
	}
	content := make(map[*zone]map[string]dns.RR, len(b.zones))
	rrs := make(map[*zone][]dns.RR, len(b.zones))
	buf := make([]byte, 512)
	var key string
	for _, z := range b.zones {
		content[z] = map[string]dns.RR{}
	}
	for _, n := range b.nodes {
		c := content[n.zone]
		for _, set := range n.sets {
			if set.rtype == dns.TypeSOA {
				continue
			}
			for _, rr := range set.rrs {
				key, buf = contentKey(rr, buf)
				c[key] = rr
				rrs[n.zone] = append(rrs[n.zone], rr)
			}
		}
	}
	j.mu.RLock()
	defer j.mu.RUnlock()
	p := &journalPlan{}
	for _, z := range b.zones {
		if z == skip {
			continue
		}
		c := content[z]
		serial := z.soa.Serial
		changed := true
		if h := j.zones[z.origin]; h != nil {
			switch {
			case sameContent(h, z.soa, c):
				serial, changed = h.cur.soa.Serial, false
			case !serialNewer(serial, h.cur.soa.Serial):
				serial = h.cur.soa.Serial + 1
			}
		}
		z.soa.Serial, z.negSOA.Serial = serial, serial
		soa := dns.Copy(z.soa).(*dns.SOA)
		p.zones = append(p.zones, plannedZone{
			origin:  z.origin,
			version: &zoneVersion{soa: soa, rrs: rrs[z]},
			content: c,
			changed: changed,
		})
	}
	return p
}

// sameContent reports whether h's current version holds the records c and
// an SOA equal to soa but for the serial.
func sameContent(h *zoneHistory, soa *dns.SOA, c map[string]dns.RR) bool {
	a, b := *h.cur.soa, *soa
	a.Serial, b.Serial = 0, 0
	if a.String() != b.String() || len(c) != len(h.content) {
		return false
	}
	for k := range c {
		if _, ok := h.content[k]; !ok {
			return false
		}
	}
	return true
}

// committed is a zone whose serial moved, for NOTIFY.
type committed struct {
	origin string
	soa    *dns.SOA
}

// commit makes the plan's versions current, journals the changes and
// forgets zones no longer served. It returns the zones that changed.
func (j *journal) commit(p *journalPlan) []committed {
	if j == nil {
		return nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []committed
	seen := make(map[string]bool, len(p.zones))
	for _, pz := range p.zones {
		seen[pz.origin] = true
		h := j.zones[pz.origin]
		if h == nil {
			j.zones[pz.origin] = &zoneHistory{cur: pz.version, content: pz.content}
			out = append(out, committed{pz.origin, pz.version.soa})
			continue
		}
		if !pz.changed {
			continue
		}
		if j.maxChanges > 0 {
			ch := zoneChange{from: h.cur.soa, to: pz.version.soa}
			for k, rr := range h.content {
				if _, ok := pz.content[k]; !ok {
					ch.del = append(ch.del, rr)
					ch.size += dns.Len(rr)
				}
			}
			for k, rr := range pz.content {
				if _, ok := h.content[k]; !ok {
					ch.add = append(ch.add, rr)
					ch.size += dns.Len(rr)
				}
			}
			h.changes = append(h.changes, ch)
			h.size += ch.size
			drop := 0
			for len(h.changes)-drop > j.maxChanges || (h.size > j.maxBytes && drop < len(h.changes)) {
				h.size -= h.changes[drop].size
				drop++
			}
			if drop > 0 {
				h.changes = slices.Clone(h.changes[drop:])
			}
		}
		h.cur, h.content = pz.version, pz.content
		out = append(out, committed{pz.origin, pz.version.soa})
	}
	for origin := range j.zones {
		if !seen[origin] {
			delete(j.zones, origin)
		}
	}
	return out
}

// current returns the zone's current version, or nil for a zone not
// served.
func (j *journal) current(origin string) *zoneVersion {
	if j == nil {
		return nil
	}
	j.mu.RLock()
	defer j.mu.RUnlock()
	if h := j.zones[origin]; h != nil {
		return h.cur
	}
	return nil
}

// since returns the zone's current version and the changes from serial
// to it, oldest first; ok is false when the journal does not reach back
// to serial (or the zone is not served), and an empty list when serial is
// current.
func (j *journal) since(origin string, serial uint32) (cur *zoneVersion, changes []zoneChange, ok bool) {
	if j == nil {
		return nil, nil, false
	}
	j.mu.RLock()
	defer j.mu.RUnlock()
	h := j.zones[origin]
	if h == nil {
		return nil, nil, false
	}
	if serial == h.cur.soa.Serial {
		return h.cur, nil, true
	}
	for i, ch := range h.changes {
		if ch.from.Serial == serial {
			return h.cur, slices.Clone(h.changes[i:]), true
		}
	}
	return h.cur, nil, false
}
