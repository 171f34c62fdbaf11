package resolver

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// TestInstanceLabel: ids that are plain labels stay as they are; every
// other id gets an encoded label; ids that mapped to one label before
// (web-1, web-1-1 through the old "-k" suffix, web.1, Web-1, web_1) map
// to different labels, the same every time.
func TestInstanceLabel(t *testing.T) {
	ids := []string{"web-1", "web-1-1", "web.1", "Web-1", "web_1", "web--1", "-web-1", "web-1-", "",
		"...", strings.Repeat("a", 63), strings.Repeat("a", 64), strings.Repeat("a", 200), "ünïcode", "web-1--0123456789abcdef"}
	plain := map[string]bool{"web-1": true, "web-1-1": true, strings.Repeat("a", 63): true}
	seen := map[string]string{}
	for _, id := range ids {
		l := instanceLabel(id)
		if l != instanceLabel(id) {
			t.Errorf("%q: label not stable", id)
		}
		if plain[id] != (l == id) {
			t.Errorf("%q → %q: plain ids (and only they) keep their id", id, l)
		}
		if !plain[id] && !strings.Contains(l, "--") {
			t.Errorf("%q → %q: an encoded label holds --", id, l)
		}
		if len(l) > 63 || !isLabel(l) || strings.HasPrefix(l, "-") || strings.HasSuffix(l, "-") {
			t.Errorf("%q → %q: not a host-name label", id, l)
		}
		if other, ok := seen[l]; ok {
			t.Errorf("%q and %q both map to %q", id, other, l)
		}
		seen[l] = id
	}
}

// TestServiceZoneNameServer: the service zone has NS at its apex and an
// address for its name server (the SOA's MNAME), by default the DNS
// listener's host, or as --ns-name and --advertise-addr say.
func TestServiceZoneNameServer(t *testing.T) {
	t.Run("default", func(t *testing.T) {
		e := startEnv(t)
		out := e.dig(t, "switchboard.", "NS", "+norec")
		if ans := section(out, "ANSWER"); len(ans) != 1 || ans[0] != "switchboard. 5 IN NS ns.switchboard." || !hasFlag(out, "aa") {
			t.Fatalf("NS answer %q flags %q:\n%s", ans, flags(out), out)
		}
		if add := section(out, "ADDITIONAL"); !contains(add, "ns.switchboard. 5 IN A 127.0.0.1") {
			t.Errorf("additional %q lacks the name server's address", add)
		}
		r := e.query(t, "udp", q("ns.switchboard.", dns.TypeA))
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "127.0.0.1" {
			t.Errorf("ns.switchboard. A: %v", r)
		}
		r = e.query(t, "udp", q("switchboard.", dns.TypeSOA))
		if len(r.Answer) != 1 || r.Answer[0].(*dns.SOA).Ns != "ns.switchboard." {
			t.Errorf("SOA %v, want MNAME ns.switchboard.", r.Answer)
		}
	})
	t.Run("flags", func(t *testing.T) {
		e := startEnv(t, "--ns-name=dns1.switchboard", "--advertise-addr=192.0.2.53,2001:db8::53")
		r := e.query(t, "udp", q("switchboard.", dns.TypeNS))
		if len(r.Answer) != 1 || r.Answer[0].(*dns.NS).Ns != "dns1.switchboard." || len(r.Extra) != 2 {
			t.Fatalf("NS: %v", r)
		}
		r = e.query(t, "udp", q("dns1.switchboard.", dns.TypeAAAA))
		if len(r.Answer) != 1 || r.Answer[0].(*dns.AAAA).AAAA.String() != "2001:db8::53" {
			t.Errorf("dns1.switchboard. AAAA: %v", r)
		}
	})
	t.Run("outside the zone", func(t *testing.T) {
		e := startEnv(t, "--ns-name=ns1.example.test.")
		r := e.query(t, "udp", q("switchboard.", dns.TypeNS))
		if len(r.Answer) != 1 || r.Answer[0].(*dns.NS).Ns != "ns1.example.test." {
			t.Fatalf("NS: %v", r)
		}
		// The address comes from the example zone, which holds the name.
		if len(r.Extra) != 1 || r.Extra[0].(*dns.A).A.String() != "192.0.2.53" {
			t.Errorf("additional %v, want ns1.example.test.'s address from its zone", r.Extra)
		}
	})
}

// TestInstanceTargetsDoNotCollide registers instances whose ids used to
// share one SRV target and checks each has its own, with its own address.
func TestInstanceTargetsDoNotCollide(t *testing.T) {
	e := startEnv(t)
	ids := []string{"web-1", "web-1-1", "web.1", "Web-1", "web_1"}
	for i, id := range ids {
		register(e, "web", id, fmt.Sprintf("10.9.0.%d", i+1), 8080)
	}
	r := e.waitAnswers(t, "_web._tcp.service.switchboard.", dns.TypeSRV, len(ids))
	targets := map[string]bool{}
	for _, rr := range r.Answer {
		targets[rr.(*dns.SRV).Target] = true
	}
	if len(targets) != len(ids) {
		t.Fatalf("%d instances have %d SRV targets: %v", len(ids), len(targets), r.Answer)
	}
	for i, id := range ids {
		name := instanceLabel(id) + ".web.instance.switchboard."
		if !targets[name] {
			t.Errorf("%q: no SRV target %s", id, name)
		}
		a := e.query(t, "udp", q(name, dns.TypeA))
		if want := fmt.Sprintf("10.9.0.%d", i+1); len(a.Answer) != 1 || a.Answer[0].(*dns.A).A.String() != want {
			t.Errorf("%s A: %v, want %s", name, a.Answer, want)
		}
	}
	// Stable: another registration does not move anyone's label.
	e.reg.put(&registryv1.Instance{Service: "web", Id: "web-0", Address: "10.9.0.9", Port: 8080,
		Health: registryv1.HealthStatus_HEALTH_STATUS_PASSING})
	e.waitAnswers(t, "_web._tcp.service.switchboard.", dns.TypeSRV, len(ids)+1)
	for i, id := range ids {
		a := e.query(t, "udp", q(instanceLabel(id)+".web.instance.switchboard.", dns.TypeA))
		if want := fmt.Sprintf("10.9.0.%d", i+1); len(a.Answer) != 1 || a.Answer[0].(*dns.A).A.String() != want {
			t.Errorf("after another registration, %q: %v, want %s", id, a.Answer, want)
		}
	}
}

// TestSRVAdditionalKeepsItsOwners: answers are rotated only when they are
// addresses. Rotating equal-sized SRV (or MX) records once moved the
// names that the additional records' owners are compressed to, so from
// the second query on each address came back under another target.
func TestSRVAdditionalKeepsItsOwners(t *testing.T) {
	s := newTestServer()
	for i := range 8 {
		for _, tt := range []struct {
			name  string
			qtype uint16
		}{{"_web._tcp.service.switchboard.", dns.TypeSRV}, {"web.service.switchboard.", dns.TypeSRV}} {
			r := new(dns.Msg)
			r.SetQuestion(tt.name, tt.qtype)
			out, _, err := s.respond(nil, r, netip.MustParseAddr("192.0.2.1"), false, false)
			if err != nil {
				t.Fatal(err)
			}
			m := new(dns.Msg)
			if err := m.Unpack(out); err != nil {
				t.Fatal(err)
			}
			if len(m.Answer) != 4 || len(m.Extra) != 4 {
				t.Fatalf("query %d: %v", i, m)
			}
			for _, rr := range m.Extra {
				// web-N.web.instance.switchboard. has 10.0.3.(N+1).
				a := rr.(*dns.A)
				want := fmt.Sprintf("10.0.3.%d", a.Hdr.Name[4]-'0'+1)
				if a.A.String() != want {
					t.Fatalf("query %d of %s: %s, want address %s", i, tt.name, a, want)
				}
			}
		}
	}
}
