package resolver

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// testTSIG is the key of the TSIG tests (32 random bytes, base64).
const (
	testTSIGName   = "xfr-key."
	testTSIGSecret = "yYQxaSAYxwdsZDLfTBdG2PgH4PQtwVoOJhahLWMgNrU="
	testTSIG       = "xfr-key:hmac-sha256:" + testTSIGSecret
)

// xdig runs kdig against the resolver and returns its output whatever
// its exit status (a refused transfer is a failure to kdig).
func (e *testEnv) xdig(t *testing.T, args ...string) string {
	t.Helper()
	kdig := servicetest.Tool(t, "kdig")
	all := append([]string{"-p", e.port, "@" + e.host, "+time=3", "+retry=0"}, args...)
	out, _ := exec.Command(kdig, all...).CombinedOutput()
	return string(out)
}

// records returns kdig's record lines (not comments), fields joined by
// one space, TTLs kept.
func records(out string) []string {
	var rrs []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, ";") || strings.Contains(l, "\tTSIG\t") {
			continue
		}
		rrs = append(rrs, strings.Join(strings.Fields(l), " "))
	}
	return rrs
}

// soaSerial asks the resolver for a zone's SOA serial over UDP.
func (e *testEnv) soaSerial(t *testing.T, zone string) uint32 {
	t.Helper()
	r := e.query(t, "udp", q(zone, dns.TypeSOA))
	if len(r.Answer) != 1 {
		t.Fatalf("%s SOA: %v", zone, r)
	}
	return r.Answer[0].(*dns.SOA).Serial
}

// zoneRecords is the example zone as kdig prints an AXFR of it.
var exampleZoneAXFR = []string{
	"example.test. 300 IN SOA ns1.example.test. hostmaster.example.test. 2026112501 3600 600 86400 60",
	"example.test. 300 IN NS ns1.example.test.",
	"example.test. 300 IN MX 10 mail.example.test.",
	"example.test. 300 IN TXT \"v=spf1 -all\"",
	"ns1.example.test. 300 IN A 192.0.2.53",
	"www.example.test. 300 IN A 192.0.2.10",
	"www.example.test. 300 IN AAAA 2001:db8::10",
	"alias.example.test. 300 IN CNAME www.example.test.",
	"ext.example.test. 300 IN CNAME www.example.org.",
	"mail.example.test. 300 IN A 192.0.2.25",
	"_http._tcp.example.test. 300 IN SRV 10 5 80 www.example.test.",
	"ptr.example.test. 300 IN PTR www.example.test.",
	"example.test. 300 IN SOA ns1.example.test. hostmaster.example.test. 2026112501 3600 600 86400 60",
}

// sameRecords reports whether got holds want's records, the first and last
// in place and the rest in any order.
func sameRecords(got, want []string) bool {
	if len(got) != len(want) || len(got) < 2 || got[0] != want[0] || got[len(got)-1] != want[len(want)-1] {
		return false
	}
	a, b := slices.Clone(got[1:len(got)-1]), slices.Clone(want[1:len(want)-1])
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestTransferAllow: transfers are refused (REFUSED) to everyone by
// default and to clients outside --transfer-allow, and served whole to
// clients inside it; AXFR over UDP is NOTIMP.
func TestTransferAllow(t *testing.T) {
	t.Run("default: refused", func(t *testing.T) {
		e := startEnv(t)
		out := e.xdig(t, "AXFR", "example.test.")
		if !strings.Contains(out, "REFUSED") || len(records(out)) != 0 {
			t.Fatalf("AXFR without --transfer-allow:\n%s", out)
		}
		r := e.query(t, "tcp", q("example.test.", dns.TypeIXFR))
		if r.Rcode != dns.RcodeRefused {
			t.Fatalf("IXFR without --transfer-allow: %s, want REFUSED", dns.RcodeToString[r.Rcode])
		}
		// No key configured: a signed query cannot verify (RFC 8945 §5.2.1).
		out = e.xdig(t, "-y", "hmac-sha256:xfr-key:"+testTSIGSecret, "www.example.test.", "A")
		if !strings.Contains(out, "BADKEY") || len(records(out)) != 0 {
			t.Fatalf("signed query without a configured key: want BADKEY:\n%s", out)
		}
	})
	e := startEnv(t, "--transfer-allow=127.0.0.2/32,10.0.0.0/8")
	tests := []struct {
		source string
		args   []string
		want   []string // records; nil: refused
		rcode  string
	}{
		{source: "127.0.0.1", args: []string{"AXFR", "example.test."}, rcode: "REFUSED"},
		{source: "127.0.0.1", args: []string{"IXFR=1", "example.test."}, rcode: "REFUSED"},
		{source: "127.0.0.1", args: []string{"AXFR", "switchboard."}, rcode: "REFUSED"},
		{source: "127.0.0.2", args: []string{"AXFR", "example.test."}, want: exampleZoneAXFR},
		{source: "127.0.0.2", args: []string{"+notcp", "AXFR", "example.test."}, rcode: "NOTIMPL"},
		{source: "127.0.0.2", args: []string{"AXFR", "other.test."}, rcode: "NOTAUTH"},
		{source: "127.0.0.2", args: []string{"AXFR", "www.example.test."}, rcode: "NOTAUTH"},
	}
	for _, tc := range tests {
		t.Run(tc.source+" "+strings.Join(tc.args, " "), func(t *testing.T) {
			out := e.xdig(t, append([]string{"-b", tc.source}, tc.args...)...)
			got := records(out)
			if tc.want == nil {
				if len(got) != 0 || !strings.Contains(out, "'"+tc.rcode+"'") {
					t.Fatalf("want %s and no records:\n%s", tc.rcode, out)
				}
				return
			}
			if !sameRecords(got, tc.want) {
				t.Fatalf("AXFR records:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
	t.Run("transfers counted", func(t *testing.T) {
		// So far: 3 refused from 127.0.0.1 (2 AXFR, 1 IXFR); from
		// 127.0.0.2 one AXFR sent and three refused (over UDP, two zones
		// not served).
		for name, want := range map[string]float64{
			`switchboard_resolver_transfers_total{result="ok",type="axfr"}`:      1,
			`switchboard_resolver_transfers_total{result="refused",type="axfr"}`: 5,
			`switchboard_resolver_transfers_total{result="refused",type="ixfr"}`: 1,
		} {
			if got := metricValue(t, e.inst, name); got != want {
				t.Errorf("%s = %v, want %v", name, got, want)
			}
		}
	})
	t.Run("dig AXFR of the service zone", func(t *testing.T) {
		register(e, "web", "web-1", "10.0.0.1", 8080)
		e.waitAnswers(t, "web.service.switchboard.", dns.TypeA, 1)
		out := e.dig(t, "-b", "127.0.0.2", "AXFR", "switchboard.")
		got := records(out)
		if !strings.Contains(out, "XFR size: 8 records") {
			t.Fatalf("dig AXFR switchboard.: want SOA, NS, ns A, web A and SRV, _web._tcp SRV, the instance's A, SOA:\n%s", out)
		}
		for _, want := range []string{"web.service.switchboard. 5 IN A 10.0.0.1", "_web._tcp.service.switchboard. 5 IN SRV 1 1 8080 web-1.web.instance.switchboard."} {
			if !contains(got, want) {
				t.Errorf("dig AXFR lacks %q:\n%s", want, out)
			}
		}
	})
}

// TestIXFR: IXFR with the current serial is one SOA; from a serial in the
// journal, the changes in RFC 1995 §4's form; from one older than the
// journal, the whole zone in AXFR form; over UDP, the changes when they
// fit and one SOA when they do not.
func TestIXFR(t *testing.T) {
	e := startEnv(t, "--transfer-allow=127.0.0.0/8")
	// A zone larger than the changes below, which would otherwise be
	// sent whole (as BIND's max-ixfr-ratio does).
	for i := range 5 {
		register(e, "db", "db-"+strconv.Itoa(i), "10.2.0."+strconv.Itoa(i+1), 5432)
	}
	register(e, "web", "web-1", "10.0.0.1", 8080)
	e.waitAnswers(t, "web.service.switchboard.", dns.TypeA, 1)
	s1 := e.soaSerial(t, "switchboard.")
	soa := func(serial uint32) string {
		return "switchboard. 5 IN SOA ns.switchboard. hostmaster.switchboard. " + strconv.FormatUint(uint64(serial), 10) + " 3600 600 86400 5"
	}

	t.Run("current serial: one SOA", func(t *testing.T) {
		for _, proto := range []string{"+tcp", "+notcp"} {
			out := e.xdig(t, proto, "IXFR="+strconv.Itoa(int(s1)), "switchboard.")
			if got := records(out); !slices.Equal(got, []string{soa(s1)}) {
				t.Fatalf("%s IXFR=%d: %q, want one SOA\n%s", proto, s1, got, out)
			}
		}
	})

	register(e, "web", "web-2", "10.0.0.2", 8081)
	e.waitAnswers(t, "web.service.switchboard.", dns.TypeA, 2)
	s2 := e.soaSerial(t, "switchboard.")
	if !serialNewer(s2, s1) {
		t.Fatalf("serial %d after a registration, was %d: want newer", s2, s1)
	}
	e.reg.remove("web", "web-1")
	e.waitAnswers(t, "web.service.switchboard.", dns.TypeA, 1)
	s3 := e.soaSerial(t, "switchboard.")
	if !serialNewer(s3, s2) {
		t.Fatalf("serial %d after a deregistration, was %d: want newer", s3, s2)
	}
	added2 := []string{
		"web.service.switchboard. 5 IN A 10.0.0.2",
		"web.service.switchboard. 5 IN SRV 1 1 8081 web-2.web.instance.switchboard.",
		"_web._tcp.service.switchboard. 5 IN SRV 1 1 8081 web-2.web.instance.switchboard.",
		"web-2.web.instance.switchboard. 5 IN A 10.0.0.2",
	}
	deleted1 := []string{
		"web.service.switchboard. 5 IN A 10.0.0.1",
		"web.service.switchboard. 5 IN SRV 1 1 8080 web-1.web.instance.switchboard.",
		"_web._tcp.service.switchboard. 5 IN SRV 1 1 8080 web-1.web.instance.switchboard.",
		"web-1.web.instance.switchboard. 5 IN A 10.0.0.1",
	}
	// The changes in order, each delete part and add part sorted (their
	// order within a part is free).
	var want []string
	want = append(want, soa(s3), soa(s1))
	want = append(want, soa(s2))
	want = append(want, sorted(added2)...)
	want = append(want, soa(s2))
	want = append(want, sorted(deleted1)...)
	want = append(want, soa(s3), soa(s3))

	t.Run("from a journaled serial: the changes", func(t *testing.T) {
		out := e.xdig(t, "+tcp", "IXFR="+strconv.Itoa(int(s1)), "switchboard.")
		if got := sortParts(records(out)); !slices.Equal(got, want) {
			t.Fatalf("IXFR=%d:\n%s\nwant:\n%s", s1, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		// dig reads it as an incremental transfer too.
		dout := e.dig(t, "IXFR="+strconv.Itoa(int(s1)), "switchboard.")
		if !strings.Contains(dout, "XFR size: 14 records") {
			t.Fatalf("dig IXFR=%d:\n%s", s1, dout)
		}
	})
	t.Run("over UDP, changes that fit", func(t *testing.T) {
		out := e.xdig(t, "+notcp", "+bufsize=1232", "IXFR="+strconv.Itoa(int(s1)), "switchboard.")
		if got := sortParts(records(out)); !slices.Equal(got, want) {
			t.Fatalf("UDP IXFR=%d:\n%s\nwant:\n%s", s1, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})
	t.Run("over UDP, changes that do not fit: one SOA", func(t *testing.T) {
		for i := range 20 {
			register(e, "api", "api-"+strconv.Itoa(i), "10.1.0."+strconv.Itoa(i+1), 9000)
		}
		e.waitAnswers(t, "_api._tcp.service.switchboard.", dns.TypeSRV, 20)
		out := e.xdig(t, "+notcp", "+bufsize=1232", "IXFR="+strconv.Itoa(int(s1)), "switchboard.")
		got := records(out)
		if len(got) != 1 || !strings.HasPrefix(got[0], "switchboard. 5 IN SOA") || got[0] == soa(s1) {
			t.Fatalf("UDP IXFR=%d of large changes: %q, want the current SOA alone", s1, got)
		}
	})
	t.Run("from a serial older than the journal: the whole zone", func(t *testing.T) {
		out := e.xdig(t, "+tcp", "IXFR="+strconv.Itoa(int(s1-1000)), "switchboard.")
		got := records(out)
		cur := e.soaSerial(t, "switchboard.")
		if len(got) < 3 || got[0] != soa(cur) || got[len(got)-1] != soa(cur) || got[1] == soa(cur) {
			t.Fatalf("IXFR from an unknown serial: want AXFR form (SOA, records, SOA):\n%s", out)
		}
		ax := records(e.xdig(t, "AXFR", "switchboard."))
		if !sameRecords(got, ax) {
			t.Fatalf("IXFR in AXFR form differs from AXFR:\n%s\n---\n%s", strings.Join(got, "\n"), strings.Join(ax, "\n"))
		}
	})
	t.Run("IXFR without the client's SOA: FORMERR", func(t *testing.T) {
		r := e.query(t, "tcp", q("switchboard.", dns.TypeIXFR))
		if r.Rcode != dns.RcodeFormatError {
			t.Fatalf("IXFR without an SOA in authority: %s, want FORMERR", dns.RcodeToString[r.Rcode])
		}
	})
}

// sorted returns a sorted copy.
func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// sortParts sorts the records between consecutive SOAs of an IXFR.
func sortParts(rrs []string) []string {
	out := slices.Clone(rrs)
	start := 0
	for i := range out {
		if strings.Contains(out[i], " IN SOA ") {
			slices.Sort(out[start:i])
			start = i + 1
		}
	}
	return out
}

// TestTransferTSIG: with a key, signed transfers are served (and the
// reply verifies: kdig checks it), unsigned ones and ones signed with a
// wrong secret, another key or another algorithm get NOTAUTH; signed SOA
// queries (as secondaries send them) get signed answers over UDP and TCP.
func TestTransferTSIG(t *testing.T) {
	keyFile := t.TempDir() + "/xfr.key"
	if err := os.WriteFile(keyFile, []byte("# transfer key\n"+testTSIG+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := startEnv(t, "--transfer-allow=127.0.0.1/32", "--transfer-tsig-file="+keyFile)
	const wrongSecret = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	tests := []struct {
		name  string
		args  []string
		rcode string // "" for success
		tsig  string // kdig's TSIG error, if any
	}{
		{name: "signed AXFR", args: []string{"-y", "hmac-sha256:xfr-key:" + testTSIGSecret, "AXFR", "example.test."}},
		{name: "signed IXFR", args: []string{"-y", "hmac-sha256:xfr-key:" + testTSIGSecret, "IXFR=1", "example.test."}},
		{name: "signed IXFR over UDP", args: []string{"+notcp", "+bufsize=1232", "-y", "hmac-sha256:xfr-key:" + testTSIGSecret, "IXFR=1", "example.test."}},
		{name: "unsigned AXFR", args: []string{"AXFR", "example.test."}, rcode: "NOTAUTH"},
		{name: "wrong secret", args: []string{"-y", "hmac-sha256:xfr-key:" + wrongSecret, "AXFR", "example.test."}, rcode: "NOTAUTH", tsig: "BADSIG"},
		{name: "unknown key", args: []string{"-y", "hmac-sha256:other-key:" + testTSIGSecret, "AXFR", "example.test."}, rcode: "NOTAUTH", tsig: "BADKEY"},
		{name: "other algorithm", args: []string{"-y", "hmac-sha512:xfr-key:" + testTSIGSecret, "AXFR", "example.test."}, rcode: "NOTAUTH", tsig: "BADKEY"},
		{name: "wrong secret on a query", args: []string{"-y", "hmac-sha256:xfr-key:" + wrongSecret, "www.example.test.", "A"}, rcode: "NOTAUTH", tsig: "BADSIG"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := e.xdig(t, tc.args...)
			got := records(out)
			if tc.rcode == "" {
				if !sameRecords(got, exampleZoneAXFR) || strings.Contains(out, ";; WARNING") || strings.Contains(out, ";; ERROR") {
					t.Fatalf("want the zone, signed:\n%s\ngot records %q", out, got)
				}
				return
			}
			// kdig shows the TSIG error in place of NOTAUTH.
			if len(got) != 0 || (tc.tsig == "" && !strings.Contains(out, tc.rcode)) || (tc.tsig != "" && !strings.Contains(out, tc.tsig)) {
				t.Fatalf("want %s %s and no records:\n%s", tc.rcode, tc.tsig, out)
			}
		})
	}
	t.Run("signed AXFR of many messages", func(t *testing.T) {
		for i := range 300 {
			register(e, "big", fmt.Sprintf("big-%d", i), fmt.Sprintf("10.3.%d.%d", i/250, i%250+1), 9000)
		}
		e.waitAnswers(t, "_big._tcp.service.switchboard.", dns.TypeSRV, 300)
		out := e.xdig(t, "-y", "hmac-sha256:xfr-key:"+testTSIGSecret, "AXFR", "switchboard.")
		m := regexp.MustCompile(`\((\d+) messages, (\d+) records\)`).FindStringSubmatch(out)
		// kdig takes it without a warning (it does not check every
		// message's MAC: below, miekg/dns does).
		if m == nil || m[1] == "1" || strings.Contains(out, ";; WARNING") || strings.Contains(out, ";; ERROR") {
			t.Fatalf("want a verified transfer of several messages:\n%s", out[max(0, len(out)-600):])
		}
		if n, _ := strconv.Atoi(m[2]); n < 1200 {
			t.Fatalf("%s records, want over 1200", m[2])
		}
		// miekg/dns checks every message's MAC, each after the first over
		// the previous MAC and the timers (RFC 8945 §5.3.1).
		tr := &dns.Transfer{TsigSecret: map[string]string{testTSIGName: testTSIGSecret}}
		req := q("switchboard.", dns.TypeAXFR)
		req.SetTsig(testTSIGName, dns.HmacSHA256, 300, time.Now().Unix())
		ch, err := tr.In(req, e.dns)
		if err != nil {
			t.Fatal(err)
		}
		envelopes := 0
		for env := range ch {
			if env.Error != nil {
				t.Fatalf("message %d: %v", envelopes+1, env.Error)
			}
			envelopes++
		}
		if envelopes < 2 {
			t.Fatalf("%d messages, want several", envelopes)
		}
	})
	for _, network := range []string{"udp", "tcp"} {
		t.Run("NOTAUTH for a wrong secret over "+network, func(t *testing.T) {
			m := q("example.test.", dns.TypeAXFR)
			if network == "udp" {
				m = q("example.test.", dns.TypeSOA)
			}
			m.SetTsig(testTSIGName, dns.HmacSHA256, 300, time.Now().Unix())
			c := &dns.Client{Net: network, Timeout: 3 * time.Second, TsigSecret: map[string]string{testTSIGName: wrongSecret}}
			r, _, _ := c.Exchange(m, e.dns) // the reply carries no MAC: it does not verify
			if r == nil || r.Rcode != dns.RcodeNotAuth || r.IsTsig() == nil || r.IsTsig().Error != dns.RcodeBadSig || r.IsTsig().MACSize != 0 {
				t.Fatalf("%s signed with a wrong secret: %v, want NOTAUTH with an unsigned TSIG BADSIG (RFC 8945 §5.2.2)", network, r)
			}
		})
		t.Run("signed SOA query over "+network, func(t *testing.T) {
			m := q("example.test.", dns.TypeSOA)
			m.SetTsig(testTSIGName, dns.HmacSHA256, 300, time.Now().Unix())
			c := &dns.Client{Net: network, Timeout: 3 * time.Second, TsigSecret: map[string]string{testTSIGName: testTSIGSecret}}
			r, _, err := c.Exchange(m, e.dns) // verifies the reply's TSIG
			if err != nil {
				t.Fatal(err)
			}
			if r.IsTsig() == nil || len(r.Answer) != 1 || r.Answer[0].(*dns.SOA).Serial != 2026112501 {
				t.Fatalf("signed SOA query: %v", r)
			}
		})
	}
}

// TestTSIGFailureReplyUnpacks: the NOTAUTH reply to a TSIG with an empty
// algorithm (a malformed request) is a record that unpacks.
func TestTSIGFailureReplyUnpacks(t *testing.T) {
	key, err := parseTSIGKey(testTSIG)
	if err != nil {
		t.Fatal(err)
	}
	for _, alg := range []string{"", ".", dns.HmacSHA256} {
		r := q("nope.", dns.TypeA)
		r.Extra = []dns.RR{&dns.TSIG{Hdr: dns.RR_Header{Name: testTSIGName, Rrtype: dns.TypeTSIG, Class: dns.ClassANY}, Algorithm: alg, Fudge: 300}}
		b, err := tsigFailure(r, key, dns.ErrSecret)
		if err != nil {
			t.Fatalf("algorithm %q: %v", alg, err)
		}
		m := new(dns.Msg)
		if err := m.Unpack(b); err != nil || m.Rcode != dns.RcodeNotAuth || m.IsTsig() == nil || m.IsTsig().Error != dns.RcodeBadKey {
			t.Fatalf("algorithm %q: reply %v: %v", alg, m, err)
		}
	}
}

// TestTransferFlags: bad transfer flags stop the resolver with a message
// naming the flag.
func TestTransferFlags(t *testing.T) {
	tests := []struct {
		cfg  TransferConfig
		want string
	}{
		{TransferConfig{Allow: listFlag{"10.0.0.0/33"}}, "--transfer-allow"},
		{TransferConfig{TSIG: "k:hmac-md5:" + testTSIGSecret}, "--transfer-tsig: algorithm"},
		{TransferConfig{TSIG: testTSIG, TSIGFile: "x"}, "give one"},
		{TransferConfig{TSIGFile: "/nonexistent/key"}, "--transfer-tsig-file"},
		{TransferConfig{Notify: listFlag{"127.0.0.1"}}, "--notify"},
		{TransferConfig{Notify: listFlag{":53"}}, "--notify"},
		{TransferConfig{Journal: -1}, "--transfer-journal"},
	}
	for _, tc := range tests {
		_, err := tc.cfg.validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error naming %q", tc.cfg, err, tc.want)
		}
	}
}

func TestParseTSIGKey(t *testing.T) {
	tests := []struct {
		in      string
		name    string
		alg     string
		wantErr string
	}{
		{in: testTSIG, name: "xfr-key.", alg: dns.HmacSHA256},
		{in: "Xfr.Example.:HMAC-SHA512:" + testTSIGSecret, name: "xfr.example.", alg: dns.HmacSHA512},
		{in: "k:hmac-sha1.:" + testTSIGSecret, name: "k.", alg: dns.HmacSHA1},
		{in: `a"b:hmac-sha256:` + testTSIGSecret, name: `a\"b.`, alg: dns.HmacSHA256},
		{in: "k:hmac-sha256", wantErr: "name:algorithm:secret"},
		{in: ":hmac-sha256:" + testTSIGSecret, wantErr: "empty key name"},
		{in: "a..b:hmac-sha256:" + testTSIGSecret, wantErr: "not a domain name"},
		{in: "k:hmac-md5:" + testTSIGSecret, wantErr: "algorithm"},
		{in: "k:hmac-sha256:not base64!", wantErr: "base64"},
		{in: "k:hmac-sha256:c2hvcnQ=", wantErr: "at least 16"},
	}
	for _, tc := range tests {
		k, err := parseTSIGKey(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: %v, want an error with %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || k.name != tc.name || k.alg != tc.alg {
			t.Errorf("%q: %+v %v, want %s %s", tc.in, k, err, tc.name, tc.alg)
		}
	}
}

// FuzzParseTSIGKey: any flag value parses or fails cleanly, and a parsed
// key signs and verifies a message.
func FuzzParseTSIGKey(f *testing.F) {
	f.Add(testTSIG)
	f.Add("k:hmac-sha1:" + testTSIGSecret)
	f.Add("a:b:c:d")
	f.Add("::")
	f.Add(`":hmAC-shA256:000000000000000000000000`) // a name that needs escapes on the wire
	f.Fuzz(func(t *testing.T, v string) {
		k, err := parseTSIGKey(v)
		if err != nil {
			return
		}
		m := q("example.", dns.TypeSOA)
		m.SetTsig(k.name, k.alg, 300, time.Now().Unix())
		b, _, err := dns.TsigGenerateWithProvider(m, k, "", false)
		if err != nil {
			t.Fatalf("%q: signing: %v", v, err)
		}
		if err := dns.TsigVerifyWithProvider(b, k, "", false); err != nil {
			t.Fatalf("%q: verifying its own signature: %v", v, err)
		}
	})
}

// TestZoneSerials: the service zone's serial is the registry's index, so
// a restarted resolver does not go back (a secondary would otherwise keep
// its copy); a managed record moves the serial of the zone it lands in,
// the service zone's or a zone file's.
func TestZoneSerials(t *testing.T) {
	reg, regAddr := startFakeRegistry(t)
	startResolver := func() *testEnv {
		inst := servicetest.Start(t, Spec(), "--dns-addr=127.0.0.1:0", "--registry-addr="+regAddr, "--zone-file=testdata/example.zone",
			"--transfer-allow=127.0.0.1/32")
		return &testEnv{reg: reg, inst: inst, dns: inst.Addrs["dns"]}
	}
	e := startResolver()
	register(e, "web", "web-1", "10.0.0.1", 8080)
	e.waitAnswers(t, "web.service.switchboard.", dns.TypeA, 1)
	s1 := e.soaSerial(t, "switchboard.")
	e.reg.mu.Lock()
	index := e.reg.index
	e.reg.mu.Unlock()
	if uint64(s1) != index {
		t.Fatalf("service zone serial %d, want the registry index %d", s1, index)
	}
	if _, err := e.reg.PutRecord(t.Context(), &registryv1.PutRecordRequest{Record: &registryv1.Record{Name: "txt.switchboard.", Type: "TXT", Ttl: 60, Data: `"hello"`}}); err != nil {
		t.Fatal(err)
	}
	e.waitAnswers(t, "txt.switchboard.", dns.TypeTXT, 1)
	s2 := e.soaSerial(t, "switchboard.")
	if !serialNewer(s2, s1) {
		t.Fatalf("serial %d after a managed record, was %d: want newer", s2, s1)
	}
	f1 := e.soaSerial(t, "example.test.")
	if _, err := e.reg.PutRecord(t.Context(), &registryv1.PutRecordRequest{Record: &registryv1.Record{Name: "new.example.test.", Type: "A", Ttl: 60, Data: "192.0.2.99"}}); err != nil {
		t.Fatal(err)
	}
	e.waitAnswers(t, "new.example.test.", dns.TypeA, 1)
	if f2 := e.soaSerial(t, "example.test."); f2 != f1+1 {
		t.Fatalf("zone file zone serial %d after a managed record in it, was %d: want one more", f2, f1)
	}

	// The resolver restarts: the service zone's serial does not go back.
	if err := e.inst.Stop(); err != nil {
		t.Fatal(err)
	}
	e = startResolver()
	e.waitAnswers(t, "txt.switchboard.", dns.TypeTXT, 1)
	if s3 := e.soaSerial(t, "switchboard."); serialNewer(s2, s3) {
		t.Fatalf("serial %d after a restart, was %d: a secondary would keep its copy", s3, s2)
	}
}

// FuzzTransfer: any packet from a client allowed to transfer, to a server
// with a key and a journal, through the UDP path and the TCP transfer
// builder, never panics; every reply parses with the query's ID, and a
// transfer over TCP starts and ends with the zone's SOA when it succeeds.
func FuzzTransfer(f *testing.F) {
	s := fuzzServer(f)
	key, err := parseTSIGKey(testTSIG)
	if err != nil {
		f.Fatal(err)
	}
	s.xfrAllow = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	s.xfrKey = key
	s.journal = newJournal(5, defaultJournalBytes)
	s.mu.Lock()
	if err := s.rebuildLocked(); err != nil {
		f.Fatal(err)
	}
	s.mu.Unlock()
	s.setInstances(2, nil) // a change: IXFR from serial 1 has something to send
	for _, zone := range []string{"switchboard.", "example.test.", "example.", "nope."} {
		for _, qt := range []uint16{dns.TypeAXFR, dns.TypeIXFR} {
			for _, signed := range []bool{false, true} {
				m := q(zone, qt)
				if qt == dns.TypeIXFR {
					m.Ns = []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET}, Serial: 1}}
				}
				var pkt []byte
				if signed {
					m.SetTsig(testTSIGName, dns.HmacSHA256, 300, time.Now().Unix())
					pkt, _, _ = dns.TsigGenerateWithProvider(m, key, "", false)
				} else {
					pkt, _ = m.Pack()
				}
				f.Add(pkt)
			}
		}
	}
	// Once a reply whose TSIG did not unpack (an empty algorithm echoed).
	f.Add([]byte("\x00\x00\x01\x00\x00\x01\x00\x00\x00\x01\x00\x00\x04nope\x00\x00\xfb\x00\x01\x04nope\x00\x00\xe8\x00\x01\x00\x00\x00\x00\x00\x14\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\axfr-key\x00\x00\xff\x00\x00\xf8\xf8\x00\x00\x00k\x0fʼ\x01,\x00\x00\x00\x00ha256\x00\x00\x00k\x0fʛ\x01,\x00 \xbb1\xb9\x01L~\x12?\xb4@\x049\x15\x14]\xa6Cٻ\xd7x\x8f\x8a\xfb\x8e\x0ft$\xd6l\xc3\bg@\x00\x00\x00\x00"))
	client := netip.AddrFrom4([4]byte{127, 0, 0, 1})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		if len(pkt) < hdrLen {
			return
		}
		id := uint16(pkt[0])<<8 | uint16(pkt[1])
		if out := s.serveWire(pkt, client, true, false); out != nil {
			r := new(dns.Msg)
			if err := r.Unpack(out); err != nil || r.Id != id || !r.Response {
				t.Fatalf("UDP reply %v (id %d, want %d): %v\nquery %q\nreply %q", r, r.Id, id, err, pkt, out)
			}
		}
		m := new(dns.Msg)
		if m.Unpack(pkt) != nil || !isTransfer(m) {
			return
		}
		msgs := s.transfer(m, client, false)
		if len(msgs) == 0 {
			t.Fatal("no reply to a transfer")
		}
		for _, r := range msgs {
			if _, err := r.Pack(); err != nil || r.Id != m.Id {
				t.Fatalf("TCP transfer reply does not pack (%v) or has id %d, want %d", err, r.Id, m.Id)
			}
		}
		if msgs[0].Rcode == dns.RcodeSuccess {
			first, last := msgs[0].Answer, msgs[len(msgs)-1].Answer
			if len(first) == 0 || first[0].Header().Rrtype != dns.TypeSOA || last[len(last)-1].Header().Rrtype != dns.TypeSOA {
				t.Fatalf("transfer does not start and end with the SOA: %v", msgs)
			}
		}
	})
}

// TestTransferBeforeRegistrySnapshot: until the registry's first snapshot
// the service zone has no serial to give: its transfer is SERVFAIL, while
// zone files' zones transfer.
func TestTransferBeforeRegistrySnapshot(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0") // a registry that never answers
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	inst := servicetest.Start(t, Spec(), "--dns-addr=127.0.0.1:0", "--registry-addr="+ln.Addr().String(),
		"--zone-file=testdata/example.zone", "--transfer-allow=127.0.0.1/32")
	e := &testEnv{inst: inst, dns: inst.Addrs["dns"]}
	e.host, e.port, _ = net.SplitHostPort(e.dns)
	if out := e.xdig(t, "AXFR", "switchboard."); !strings.Contains(out, "SERVFAIL") || len(records(out)) != 0 {
		t.Fatalf("AXFR of the service zone before the registry's snapshot: want SERVFAIL:\n%s", out)
	}
	if got := records(e.xdig(t, "AXFR", "example.test.")); !sameRecords(got, exampleZoneAXFR) {
		t.Fatalf("AXFR of a zone file's zone: %q", got)
	}
}
