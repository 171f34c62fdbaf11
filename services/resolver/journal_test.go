package resolver

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// zoneBuild is a builder holding one zone "j.test." of the given SOA
// serial and refresh, with an A record per address.
func zoneBuild(t *testing.T, serial, refresh uint32, addrs ...string) (*authorityBuilder, *zone) {
	t.Helper()
	b := newAuthorityBuilder()
	z := b.addZone(mustRR(fmt.Sprintf("j.test. 60 IN SOA ns.j.test. h.j.test. %d %d 600 86400 60", serial, refresh)).(*dns.SOA), "test")
	for _, rr := range append([]string{"j.test. 60 IN NS ns.j.test."}, addrs...) {
		if !strings.Contains(rr, " IN ") {
			rr = "www.j.test. 60 IN A " + rr
		}
		if err := b.add(sourced{rr: mustRR(rr), source: "test"}, z); err != nil {
			t.Fatal(err)
		}
	}
	return b, z
}

// TestJournalSerials: a new zone takes its source's serial; unchanged
// content keeps the serial even when the source's moves; changed content
// takes the source's serial when newer (RFC 1982) and the served one plus
// one otherwise; an SOA field is content.
func TestJournalSerials(t *testing.T) {
	j := newJournal(10, defaultJournalBytes)
	steps := []struct {
		why     string
		source  uint32
		refresh uint32
		addrs   []string
		want    uint32
		changed bool
	}{
		{"new zone: the source's serial", 10, 3600, []string{"192.0.2.1"}, 10, true},
		{"same content", 10, 3600, []string{"192.0.2.1"}, 10, false},
		{"same content, the source moved (registry index)", 20, 3600, []string{"192.0.2.1"}, 10, false},
		{"changed, source newer", 20, 3600, []string{"192.0.2.2"}, 20, true},
		{"changed, source older (a managed record)", 5, 3600, []string{"192.0.2.2", "192.0.2.3"}, 21, true},
		{"changed, source equal", 21, 3600, []string{"192.0.2.3"}, 22, true},
		{"an SOA field changed", 22, 7200, []string{"192.0.2.3"}, 23, true},
		{"a TTL changed", 23, 7200, []string{"www.j.test. 30 IN A 192.0.2.3"}, 24, true},
		{"records in another order: same content", 24, 7200, []string{"www.j.test. 30 IN A 192.0.2.3"}, 24, false},
	}
	for _, st := range steps {
		b, z := zoneBuild(t, st.source, st.refresh, st.addrs...)
		p := j.plan(b, nil)
		if z.soa.Serial != st.want || z.negSOA.Serial != st.want {
			t.Fatalf("%s: serial %d (negative %d), want %d", st.why, z.soa.Serial, z.negSOA.Serial, st.want)
		}
		got := j.commit(p)
		if (len(got) == 1) != st.changed || st.changed && got[0].soa.Serial != st.want {
			t.Fatalf("%s: committed %v, want changed=%v", st.why, got, st.changed)
		}
	}
	t.Run("wrapping", func(t *testing.T) {
		j := newJournal(10, defaultJournalBytes)
		for _, st := range []struct{ source, want uint32 }{{0xFFFFFFFF, 0xFFFFFFFF}, {0xFFFFFFFF, 0}, {0xFFFFFFFF, 1}, {5, 5}} {
			b, z := zoneBuild(t, st.source, 3600, fmt.Sprintf("192.0.2.%d", st.want%250+1))
			j.commit(j.plan(b, nil))
			if z.soa.Serial != st.want {
				t.Fatalf("source %d: serial %d, want %d", st.source, z.soa.Serial, st.want)
			}
		}
	})
	t.Run("a skipped zone keeps its source serial and is not journaled", func(t *testing.T) {
		j := newJournal(10, defaultJournalBytes)
		b, z := zoneBuild(t, 0, 3600, "192.0.2.1")
		j.commit(j.plan(b, z))
		if z.soa.Serial != 0 || j.current("j.test.") != nil {
			t.Fatalf("serial %d, journaled %v", z.soa.Serial, j.current("j.test."))
		}
	})
}

// TestJournalChanges: since gives the changes from a journaled serial in
// order, none at the current serial, and nothing past the bounds (count
// and bytes); a zone no longer served is forgotten.
func TestJournalChanges(t *testing.T) {
	j := newJournal(3, defaultJournalBytes)
	for i := range 6 { // serials 1..6; www's address is 192.0.2.<serial>
		b, _ := zoneBuild(t, uint32(i+1), 3600, fmt.Sprintf("192.0.2.%d", i+1))
		j.commit(j.plan(b, nil))
	}
	cur, chs, ok := j.since("j.test.", 6)
	if !ok || len(chs) != 0 || cur.soa.Serial != 6 {
		t.Fatalf("since the current serial: %v %v %v", cur, chs, ok)
	}
	if len(cur.rrs) != 2 {
		t.Fatalf("current records %v, want NS and A", cur.rrs)
	}
	for _, from := range []uint32{1, 2} {
		if _, _, ok := j.since("j.test.", from); ok {
			t.Errorf("since %d: the journal keeps 3 changes, want it not to reach back", from)
		}
	}
	_, chs, ok = j.since("j.test.", 3)
	if !ok || len(chs) != 3 {
		t.Fatalf("since 3: %d changes, ok %v; want 3", len(chs), ok)
	}
	for i, ch := range chs {
		from := uint32(3 + i)
		if ch.from.Serial != from || ch.to.Serial != from+1 || len(ch.del) != 1 || len(ch.add) != 1 ||
			ch.del[0].(*dns.A).A.String() != fmt.Sprintf("192.0.2.%d", from) || ch.add[0].(*dns.A).A.String() != fmt.Sprintf("192.0.2.%d", from+1) {
			t.Fatalf("change %d: %v -> %v del %v add %v", i, ch.from.Serial, ch.to.Serial, ch.del, ch.add)
		}
	}

	t.Run("byte bound", func(t *testing.T) {
		one := dns.Len(mustRR("www.j.test. 60 IN A 192.0.2.1"))
		j := newJournal(100, 5*one) // two changes of one delete and one add
		for i := range 5 {
			b, _ := zoneBuild(t, uint32(i+1), 3600, fmt.Sprintf("192.0.2.%d", i+1))
			j.commit(j.plan(b, nil))
		}
		var reach []uint32
		for s := uint32(1); s <= 5; s++ {
			if _, _, ok := j.since("j.test.", s); ok {
				reach = append(reach, s)
			}
		}
		if !slices.Equal(reach, []uint32{3, 4, 5}) {
			t.Fatalf("serials IXFR reaches back to: %v, want [3 4 5]", reach)
		}
	})
	t.Run("no journal", func(t *testing.T) {
		j := newJournal(0, defaultJournalBytes)
		for i := range 3 {
			b, _ := zoneBuild(t, uint32(i+1), 3600, fmt.Sprintf("192.0.2.%d", i+1))
			j.commit(j.plan(b, nil))
		}
		if _, _, ok := j.since("j.test.", 2); ok {
			t.Fatal("with --transfer-journal=0 an old serial must get the whole zone")
		}
	})
	t.Run("zone removed", func(t *testing.T) {
		j.commit(j.plan(newAuthorityBuilder(), nil))
		if j.current("j.test.") != nil {
			t.Fatal("a zone no longer served is still journaled")
		}
	})
}

// BenchmarkRebuildWithJournal measures a rebuild of a service zone of 10k
// instances (one instance changing each time), and the part of it the
// journal takes (plan and commit: every record's text, the diff).
func BenchmarkRebuildWithJournal(b *testing.B) {
	s := newTestServer()
	s.journal = newJournal(100, defaultJournalBytes)
	var ins []*registryv1.Instance
	for i := range 10000 {
		ins = append(ins, &registryv1.Instance{Service: fmt.Sprintf("svc%d", i%500), Id: fmt.Sprintf("i-%d", i),
			Address: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), Port: 8080,
			Health: registryv1.HealthStatus_HEALTH_STATUS_PASSING})
	}
	s.setInstances(1, ins)
	b.Run("rebuild", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			ins[0].Port = uint32(8000 + i%2)
			s.setInstances(uint64(i+2), ins)
		}
	})
	b.Run("plan+commit", func(b *testing.B) {
		s.mu.Lock()
		defer s.mu.Unlock()
		for i := 0; b.Loop(); i++ {
			b.StopTimer()
			ins[0].Port = uint32(8000 + i%2)
			bld := newAuthorityBuilder()
			svc := bld.addZone(serviceSOA(s.origin, s.nsName, uint32(i), s.serviceTTL), "service")
			for _, rr := range serviceRecords(s.origin, s.serviceTTL, ins) {
				_ = bld.add(rr, nil)
			}
			_ = svc
			b.StartTimer()
			s.journal.commit(s.journal.plan(bld, nil))
		}
	})
}
